"""The one exception type a user is meant to see.

Anything raised as :class:`DomainGPTError` is a problem the user can act on (a bad
config value, a missing corpus, a corrupt checkpoint). The CLI prints its message as a
single line and exits non-zero; every other exception is a bug in domaingpt.
"""

from __future__ import annotations


class DomainGPTError(Exception):
    """A user-actionable error: the message names the thing and says what to do."""


class ConfigError(DomainGPTError):
    """A config file, preset or ``--set`` override is invalid."""


class CorpusError(DomainGPTError):
    """A corpus cannot be found, downloaded, decoded or verified."""


class CheckpointError(DomainGPTError):
    """A checkpoint is missing, corrupt, or does not fit the model asked for."""
