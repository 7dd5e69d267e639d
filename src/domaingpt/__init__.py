"""domaingpt: how the training domain shapes small character-level language models.

The package's public API, importable from its root::

    import domaingpt

    study = domaingpt.Study.load("runs/cpu")          # a run read back, nothing re-run
    study["evaluate"]["zero_shot"]                    # a stage's tables, as DataFrames
    loaded = domaingpt.load_model("runs/cpu/models/shakespeare")
    domaingpt.generate_text(loaded.model, loaded.vocab, "ROMEO:", 80)
    domaingpt.run_study(domaingpt.load_study(preset="smoke"), "runs/smoke")
    domaingpt.run_stage("evaluate", "runs/smoke", bootstrap=0)

Each name is imported on first use (module ``__getattr__``): ``import domaingpt`` itself
loads neither torch nor pandas and does nothing else.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: Public name -> the module that defines it.
_EXPORTS = {
    # a study: run it, read it back
    "Study": "domaingpt.study.load",
    "StudySpec": "domaingpt.study.spec",
    "load_study": "domaingpt.study.spec",
    "run_study": "domaingpt.study.runner",
    "run_stage": "domaingpt.api",
    # a model
    "load_model": "domaingpt.api",
    "find_checkpoint": "domaingpt.model.checkpoint",
    "list_checkpoints": "domaingpt.model.checkpoint",
    "load_checkpoint": "domaingpt.model.checkpoint",
    "GPT": "domaingpt.model.gpt",
    "GPTConfig": "domaingpt.model.gpt",
    "Vocab": "domaingpt.data.vocab",
    "SubwordVocab": "domaingpt.data.subword",
    "generate_text": "domaingpt.model.generate",
    # Hugging Face (the interop extra)
    "export": "domaingpt.interop.hf",
    "import_hf": "domaingpt.interop.importer",
    # errors
    "DomainGPTError": "domaingpt.errors",
    "__version__": "domaingpt.core.version",
}

__all__ = [
    "GPT",
    "DomainGPTError",
    "GPTConfig",
    "Study",
    "StudySpec",
    "SubwordVocab",
    "Vocab",
    "__version__",
    "export",
    "find_checkpoint",
    "generate_text",
    "import_hf",
    "list_checkpoints",
    "load_checkpoint",
    "load_model",
    "load_study",
    "run_stage",
    "run_study",
]  # the names of _EXPORTS, and the version

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time, __getattr__ below
    from domaingpt.api import load_model, run_stage
    from domaingpt.data.subword import SubwordVocab
    from domaingpt.data.vocab import Vocab
    from domaingpt.errors import DomainGPTError
    from domaingpt.interop.hf import export
    from domaingpt.interop.importer import import_hf
    from domaingpt.model.checkpoint import find_checkpoint, list_checkpoints, load_checkpoint
    from domaingpt.model.generate import generate_text
    from domaingpt.model.gpt import GPT, GPTConfig
    from domaingpt.study.load import Study
    from domaingpt.study.runner import run_study
    from domaingpt.study.spec import StudySpec, load_study


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'domaingpt' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # imported once: later uses are plain attribute lookups
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
