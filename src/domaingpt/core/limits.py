"""The limits on numbers and files that domaingpt reads from outside: one place.

A number read from a file anyone can edit (a checkpoint record, an exported model's
``config.json`` or ``tokenizer.json``, a model's ``run.json``) decides how much memory is
allocated next: a tampered ``n_embd = 32768`` is 13 GB per matrix, a token id of 2·10⁹ a
16 GB list. Each such number passes :func:`bounded_int` against the limits here before
anything is built from it, and a file a user names (a prompt file, a study file, a
preset) is read through :func:`domaingpt.core.io.read_user_text`, which refuses what is
not a regular file and stops at :data:`MAX_USER_FILE_BYTES`.

The limits are far above any model this project trains (the ``gpu`` preset: 6 layers,
384 dims, block 256) and any vocabulary of characters, so they refuse only damage.
"""

from __future__ import annotations

import math
import os
from typing import Any

from domaingpt.errors import ConfigError, DomainGPTError

#: A model's shape as read from a file: each key's largest accepted value.
MODEL_LIMITS: dict[str, int] = {
    "n_layer": 256,
    "n_head": 1024,
    "n_embd": 16384,
    "block_size": 1 << 20,
    # every Unicode code point, plus <unk>: a character vocabulary is never larger
    "vocab_size": 0x110000 + 1,
}
#: The largest token id a character tokenizer can hold.
MAX_TOKEN_ID = MODEL_LIMITS["vocab_size"] - 1
#: The largest file a user names that is read whole (prompt, study and preset files).
MAX_USER_FILE_BYTES = 64 << 20
#: Threads per CPU the machine has: more only adds contention (and thousands crash torch).
THREADS_PER_CPU = 4


def max_threads() -> int:
    """The most torch threads (or worker threads) a setting may ask for on this machine."""
    return THREADS_PER_CPU * (os.cpu_count() or 1)


def check_threads(key: str, value: int) -> int:
    """``value`` threads for ``key``: 0 (the default) up to :func:`max_threads`."""
    most = max_threads()
    if value > most:
        raise ConfigError(
            f"{key} = {value} is more threads than this machine can use: at most {most} "
            f"({THREADS_PER_CPU} per CPU, {os.cpu_count() or 1} CPUs); 0 uses torch's default"
        )
    return value


def check_processes(key: str, value: Any) -> int:
    """``value`` worker processes for ``key``: a whole number from 0 (automatic) up to
    :func:`max_threads` (each process runs at least one thread)."""
    most = max_threads()
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= most:
        raise ConfigError(
            f"{key} must be a whole number from 0 (automatic) to {most} "
            f"({THREADS_PER_CPU} per CPU), got {value!r}; 1 runs the jobs in this process"
        )
    return value


def bounded_int(what: str, value: Any, least: int, most: int) -> int:
    """``value`` as an integer in [``least``, ``most``]; a one-line error naming ``what``.

    Accepts an ``int`` or an integral ``float`` (JSON writes ``2e9`` as a float), never a
    bool or a string: a file that holds ``"abc"`` where a size belongs is damaged.
    """
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise DomainGPTError(f"{what} must be an integer, got {value!r}")
    if not least <= value <= most:
        raise DomainGPTError(f"{what} must be in [{least:,}, {most:,}], got {value:,}")
    return value


def bounded_float(what: str, value: Any) -> float:
    """``value`` as a finite float (an int is accepted); never a string or a bool."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DomainGPTError(f"{what} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise DomainGPTError(f"{what} must be finite, got {value!r}")
    return float(value)


def check_model_shape(what: str, config: dict[str, Any]) -> None:
    """Every size of a model config read from a file (``what`` names it) within
    :data:`MODEL_LIMITS`; keys it does not hold are left to the config's own checks."""
    for key, most in MODEL_LIMITS.items():
        if key in config:
            bounded_int(f"{what}: {key}", config[key], 1, most)
    if "dropout" in config:
        bounded_float(f"{what}: dropout", config["dropout"])
    if "bias" in config and not isinstance(config["bias"], bool):
        raise DomainGPTError(f"{what}: bias must be true or false, got {config['bias']!r}")
