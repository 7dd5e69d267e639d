"""lm-evaluation-harness tasks for the study's corpora: ``--include_path`` this folder.

One task per corpus (``domaingpt_shakespeare``, ``domaingpt_math``,
``domaingpt_wikipedia``; all three under the tag ``domaingpt_corpora``): the corpus's
validation split — the last ``val_fraction`` of its characters, as ``domaingpt train``
splits it — scored with ``loglikelihood_rolling``, reported in nats and bits per
character (``nats_per_char``, ``bits_per_char``), the units of ``domaingpt evaluate``.
The corpora are read from ``$DOMAINGPT_DATA`` (or the cache) and never downloaded; see
:mod:`.corpora`. ``python -m domaingpt.interop.lm_eval_tasks`` prints this folder.
"""

from __future__ import annotations

from pathlib import Path

TASKS_DIR = Path(__file__).resolve().parent
TAG = "domaingpt_corpora"
