"""Optional dependencies: an import, or one line naming the extra that provides it."""

from __future__ import annotations

import importlib
from types import ModuleType

from domaingpt.errors import DomainGPTError

INSTALL_HINT = "pip install 'domaingpt[interop]'"


def require(module: str, what: str) -> ModuleType:
    """``import module``, or a one-line error naming the extra to install for ``what``."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise DomainGPTError(
            f"{what} needs the Python package {module.split('.')[0]!r}, which is not "
            f"installed ({e}); install the interop extra: {INSTALL_HINT}"
        ) from None
