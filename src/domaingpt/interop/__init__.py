"""domaingpt models in the tools their users already know.

A domaingpt model is a GPT-2 architecture with exact GELU and a character vocabulary,
so it maps one to one onto Hugging Face's ``GPT2LMHeadModel``:

* :mod:`domaingpt.interop.mapping` — the tensor names and layouts of both, and the
  ``config.json`` of an exported model (pure torch, no optional dependency);
* :mod:`domaingpt.interop.hf` — ``domaingpt export``: a model folder that
  ``transformers`` loads (``from_pretrained``, ``pipeline("text-generation")``),
  lm-evaluation-harness runs (``HFLM``), with a character tokenizer;
* :mod:`domaingpt.interop.importer` — ``domaingpt import-hf``: a GPT-2 character model
  back into a run's ``models/`` folder, so the analyses run on it (reads safetensors and
  JSON only: no optional dependency);
* ``domaingpt/interop/lm_eval_tasks/`` — an lm-evaluation-harness task per corpus: the
  validation split scored in nats per character, as ``domaingpt evaluate`` scores it.

The export needs the ``interop`` extra (``transformers``, ``tokenizers``, ``lm-eval``);
without it the command fails with one line naming the install.
"""

from __future__ import annotations

from domaingpt.core.extras import INSTALL_HINT, require

__all__ = ["INSTALL_HINT", "require"]
