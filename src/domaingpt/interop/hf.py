"""``domaingpt export``: a model as a Hugging Face ``GPT2LMHeadModel`` folder.

One folder per checkpoint::

    OUT/
      config.json              GPT2Config: exact GELU, n_positions = block_size, tied
                               head; our model config and checkpoint record under
                               "domaingpt" (what `domaingpt import-hf` reads back; no
                               local path, nothing twice)
      model.safetensors        the weights (zero biases where the model has none)
      generation_config.json   max_length = block_size; sampling as `domaingpt sample`
      tokenizer.json           a tokenizers WordLevel model over single characters:
      tokenizer_config.json    id 0 is <unk>, id i+1 the i-th character, as ours;
      special_tokens_map.json  <unk> pads; padding and truncation on the left
      README.md                a model card: YAML metadata, the run's numbers, usage

Every file is 0644, ready to share.

``--all`` writes the checkpoint history the way Pythia publishes its steps: one such
folder per iteration, ``OUT/step0``, ``OUT/step500``, ...

``transformers`` loads it without remote code (``AutoModelForCausalLM``,
``AutoTokenizer``, ``pipeline("text-generation")``); lm-evaluation-harness runs it as
an ``hf`` model. The model has no BOS/EOS token (a character model has none), so
lm-eval's rolling log-likelihood needs ``prefix_token_id``: the character the first
one is predicted from (see ``README.md``, "Interoperability").
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from domaingpt.core.io import atomic_write_text, write_json
from domaingpt.core.progress import Log, stderr_log
from domaingpt.core.rundir import read_run_json
from domaingpt.data.vocab import UNK, Vocab
from domaingpt.errors import DomainGPTError
from domaingpt.interop import require
from domaingpt.interop.mapping import (
    LOCAL_PATH_KEYS,
    META_FORMAT,
    META_KEY,
    RUN_FROM_RECORD,
    generation_config,
    gpt2_config,
    to_gpt2,
)
from domaingpt.model.checkpoint import (
    CheckpointInfo,
    find_checkpoint,
    list_checkpoints,
    load_checkpoint,
)
from domaingpt.model.gpt import GPT

#: Checkpoint record keys that describe the file, not the model (rewritten on import).
FILE_KEYS = frozenset(
    {
        "format",
        "kind",
        "iteration",
        "model_config",
        "vocab",
        "tensor_file",
        "tensor_sha256",
        "tensor_bytes",
    }
)
#: The class ``tokenizer_config.json`` names: ``transformers`` 4 and 5 both load it.
TOKENIZER_CLASS = "PreTrainedTokenizerFast"
#: Every character is its own token: ``[\s\S]`` matches any one, newlines included.
CHAR_PATTERN = r"[\s\S]"


def step_name(iteration: int) -> str:
    """``step1000``: Pythia's name for the checkpoint of one iteration."""
    return f"step{iteration}"


# --- the tokenizer --------------------------------------------------------------------


def write_tokenizer(vocab: Vocab, block_size: int, out: Path) -> None:
    """A character tokenizer with our ids, as ``AutoTokenizer.from_pretrained`` reads it.

    A ``tokenizers`` WordLevel model over single characters (a Split pre-tokenizer
    isolates each one, a Fuse decoder joins them back without spaces). ``<unk>`` is a
    special token only for ``skip_special_tokens``: ``split_special_tokens`` makes the
    text ``"<unk>"`` read as its five characters, as our vocabulary reads it.
    """
    tk = require("tokenizers", "exporting a tokenizer")
    ids = {token: i for i, token in enumerate(vocab.tokens())}
    tokenizer = tk.Tokenizer(tk.models.WordLevel(vocab=ids, unk_token=UNK))
    tokenizer.pre_tokenizer = tk.pre_tokenizers.Split(tk.Regex(CHAR_PATTERN), behavior="isolated")
    tokenizer.decoder = tk.decoders.Fuse()
    tokenizer.add_special_tokens([tk.AddedToken(UNK, special=True, normalized=False)])
    atomic_write_text(out / "tokenizer.json", tokenizer.to_str(pretty=True))
    write_json(
        out / "tokenizer_config.json",
        {
            "tokenizer_class": TOKENIZER_CLASS,
            "unk_token": UNK,
            # <unk> pads, on the left: a batch's prompts end where generation starts.
            "pad_token": UNK,
            "padding_side": "left",
            # truncation=True keeps a prompt's last block_size characters, the context
            # domaingpt sample predicts from.
            "truncation_side": "left",
            "model_max_length": block_size,
            "clean_up_tokenization_spaces": False,  # it would eat spaces before ".,!?"
            "split_special_tokens": True,
            "model_input_names": ["input_ids", "attention_mask"],
        },
    )
    write_json(out / "special_tokens_map.json", {"unk_token": UNK, "pad_token": UNK})


# --- the model ------------------------------------------------------------------------


@contextmanager
def _quiet_transformers() -> Iterator[Any]:
    """``transformers`` without its progress bars, restored afterwards."""
    transformers = require("transformers", "domaingpt export")
    hf_logging = transformers.utils.logging
    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield transformers
    finally:
        if was:
            hf_logging.enable_progress_bar()


def hf_model(model: GPT, meta: dict[str, Any] | None = None) -> Any:
    """Our model as a ``transformers.GPT2LMHeadModel`` in eval mode (same weights)."""
    with _quiet_transformers() as transformers:
        config = transformers.GPT2Config(**gpt2_config(model.config, meta))
        hf = transformers.GPT2LMHeadModel(config)
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        missing, unexpected = hf.load_state_dict(to_gpt2(state, model.config), strict=False)
    if set(missing) - {"lm_head.weight"} or unexpected:
        raise DomainGPTError(
            f"the installed transformers ({transformers.__version__}) lays out GPT-2 "
            f"differently: missing {sorted(missing)}, unexpected {sorted(unexpected)}"
        )
    hf.tie_weights()
    return hf.eval()


def checkpoint_meta(info: CheckpointInfo, model_dir: Path | None) -> dict[str, Any]:
    """What :mod:`domaingpt.interop.importer` needs to rebuild the checkpoint exactly:
    its iteration, its record (corpus, val loss, training config) and the model's
    ``run.json``, less what would identify the user's machine (:data:`LOCAL_PATH_KEYS`)
    and less what the record already says (:data:`RUN_FROM_RECORD`, put back on import).
    """
    record = {k: v for k, v in info.meta.items() if k not in FILE_KEYS and k not in LOCAL_PATH_KEYS}
    fingerprint = Vocab.from_json(info.meta["vocab"]).fingerprint
    meta: dict[str, Any] = {
        "iteration": info.iteration,
        "vocab_fingerprint": fingerprint,
        "record": record,
    }
    run = read_run_json(model_dir) if model_dir is not None else {}
    if run:
        meta["run"] = {
            k: v
            for k, v in run.items()
            if k not in LOCAL_PATH_KEYS
            and not (k in RUN_FROM_RECORD and k in record and record[k] == v)
            and not (k == "vocab_fingerprint" and v == fingerprint)
        }
    return meta


def _yaml(value: Any) -> str:
    """``value`` as a YAML flow scalar or list: JSON is YAML, so json.dumps quotes it."""
    return json.dumps(value, ensure_ascii=False)


def _model_card(info: CheckpointInfo, vocab: Vocab, model: GPT) -> str:
    """``README.md``: a Hugging Face model card, its YAML header first (library,
    pipeline tag, tags, the corpus, the run's validation loss), then the run's numbers
    and how to use the model with transformers and lm-evaluation-harness."""
    record = info.meta
    cfg = model.config
    corpus = str(record.get("corpus", "unknown"))
    val = record.get("val_loss")
    newline = vocab.id_of("\n")
    train = (record.get("config") or {}).get("train") or {}
    header = [
        "---",
        "library_name: transformers",
        "pipeline_tag: text-generation",
        f"tags: {_yaml(['domaingpt', 'character-level', 'gpt2', 'nanogpt', corpus])}",
        f"datasets: {_yaml([corpus])}",
    ]
    if isinstance(val, int | float):
        bpc = val / math.log(2)
        header += [
            "model-index:",
            f"- name: {_yaml(f'domaingpt-{corpus}')}",
            "  results:",
            "  - task:",
            "      type: text-generation",
            "    dataset:",
            f"      name: {_yaml(corpus)}",
            f"      type: {_yaml(corpus)}",
            "      split: validation",
            "    metrics:",
            "    - type: loss",
            f"      value: {val:.6f}",
            "      name: validation loss (nats per character)",
            "    - type: bpc",
            f"      value: {bpc:.6f}",
            "      name: bits per character",
        ]
    header.append("---")
    facts = [
        f"- corpus: `{corpus}`, SHA-256 `{record.get('corpus_sha256') or 'not recorded'}`",
        f"- checkpoint: iteration {info.iteration}"
        + (f", {record['tokens_seen']:,} characters seen" if record.get("tokens_seen") else ""),
    ]
    if isinstance(val, int | float):
        facts.append(
            f"- validation loss {val:.4f} nats per character ({val / math.log(2):.4f} bits "
            "per character), as recorded at this checkpoint"
        )
    facts += [
        f"- model: {cfg.n_layer} layers, {cfg.n_head} heads, {cfg.n_embd} embedding, "
        f"{model.num_params(non_embedding=False):,} parameters, "
        f"{'with' if cfg.bias else 'without (zero in this export)'} biases",
        f"- context: {cfg.block_size} characters (`n_positions`)",
        f"- vocabulary: {vocab.size} ids, one per character; id 0 `<unk>` (also the "
        "padding token, on the left)",
    ]
    if train:
        keys = ("max_iters", "batch_size", "lr", "min_lr", "warmup_iters", "weight_decay", "seed")
        facts.append("- training: " + ", ".join(f"{k} {train[k]}" for k in keys if k in train))
    lines = [
        *header,
        "",
        f"# domaingpt character model: {corpus}, iteration {info.iteration}",
        "",
        "A character-level GPT (nanoGPT architecture) exported by `domaingpt export` as a "
        "`GPT2LMHeadModel` with exact GELU; one token per character.",
        "",
        *facts,
        "",
        "```python",
        "from transformers import pipeline",
        'generate = pipeline("text-generation", model="PATH")',
        'generate("ROMEO:")  # samples (temperature 1, no top-k) up to the context length',
        'generate("ROMEO:", max_new_tokens=20, do_sample=False)  # greedy',
        "# a prompt longer than the context: keep its end, leaving room for the new ones",
        'generate(long_text, max_new_tokens=20, handle_long_generation="hole")',
        "```",
        "",
        f"GPT-2 does not slide its context as `domaingpt sample` does: prompt + new "
        f"characters must fit in {cfg.block_size}. `generation_config.json` sets "
        f"`max_length` = {cfg.block_size}, so `generate` stops there by default; an explicit "
        "`max_new_tokens` overrides it. The tokenizer truncates on the left "
        "(`tokenizer(text, truncation=True)` keeps the last characters) and pads on the "
        "left, so batches of prompts generate. The model has no BOS/EOS token: it was "
        "trained on raw text, with no document boundaries.",
        "",
        "lm-evaluation-harness (the rolling log-likelihood needs a prefix token, e.g. the "
        f"newline, id {newline}):",
        "",
        "```bash",
        f"lm_eval --model hf --model_args pretrained=PATH,prefix_token_id={newline} "
        "--batch_size 64 "
        "--include_path $(python -m domaingpt.interop.lm_eval_tasks) "
        "--tasks domaingpt_corpora",
        "```",
    ]
    return "\n".join(lines) + "\n"


def export_checkpoint(info: CheckpointInfo, out: Path, *, model_dir: Path | None = None) -> Path:
    """Write one checkpoint as a ``GPT2LMHeadModel`` folder ``out`` (created)."""
    loaded = load_checkpoint(info, "cpu")
    meta = checkpoint_meta(info, model_dir)
    model = hf_model(loaded.model, meta)
    out.mkdir(parents=True, exist_ok=True)
    with _quiet_transformers() as transformers:
        model.generation_config = transformers.GenerationConfig(
            **generation_config(loaded.model.config)
        )
        model.save_pretrained(out)
    write_tokenizer(loaded.vocab, loaded.model.config.block_size, out)
    atomic_write_text(out / "README.md", _model_card(info, loaded.vocab, loaded.model))
    # Files to share: readable by all, as a hub serves them (transformers writes the
    # weights 0600, our atomic writes 0644 under the usual umask).
    for path in out.iterdir():
        if path.is_file():
            path.chmod(0o644)
    return out


# --- the command ----------------------------------------------------------------------


def is_export(path: Path) -> bool:
    """A folder written by :func:`export`: one model, or a history of ``step*`` folders."""
    folders = [path, *sorted(path.glob("step*"))]
    for folder in folders:
        try:
            config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(config, dict) and config.get(META_KEY, {}).get("format") == META_FORMAT:
            return True
    return False


def _model_dir_of(target: Path) -> Path | None:
    """The model directory (with ``run.json``) a checkpoint target belongs to."""
    path = Path(target)
    for candidate in (path, path.parent, path.parent.parent):
        if (candidate / "run.json").is_file():
            return candidate
    return None


def _check_out(out: Path, overwrite: bool) -> None:
    """Refuse an ``out`` that is a file, or a folder with anything in it but an earlier
    export (replaced only with ``overwrite``)."""
    if out.exists() and not out.is_dir():
        raise DomainGPTError(f"{out} is a file; give a folder to export into")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not is_export(out):
        raise DomainGPTError(
            f"{out} exists and is not an earlier domaingpt export; choose another folder"
        )
    if not overwrite:
        raise DomainGPTError(f"{out} holds an earlier export; pass --overwrite to replace it")


def _publish(tmp: Path, out: Path) -> None:
    """Move the finished export ``tmp`` to ``out`` (checked by :func:`_check_out`)."""
    if out.is_dir() and any(out.iterdir()):
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old)
        return
    if out.exists():
        out.rmdir()
    os.replace(tmp, out)


def export(
    target: str | Path,
    out: str | Path,
    *,
    iteration: int | str | None = "final",
    history: bool = False,
    overwrite: bool = False,
    log: Log = stderr_log,
) -> list[Path]:
    """Export one checkpoint (``iteration``), or every history checkpoint (``history``)
    as ``out/stepN``, of the model at ``target``; returns the folders written.

    Written to a temporary folder beside ``out`` and moved into place at the end: an
    interrupted export leaves nothing half-written at ``out``.
    """
    require("transformers", "domaingpt export")
    require("tokenizers", "domaingpt export")
    target, out = Path(target), Path(out)
    if history:
        directory = target / "checkpoints" if (target / "checkpoints").is_dir() else target
        infos = list_checkpoints(directory, "iter")
        if not infos:
            raise DomainGPTError(f"no checkpoints in {directory}; train a model there first")
    else:
        infos = [find_checkpoint(target, iteration)]
    _check_out(out, overwrite)
    model_dir = _model_dir_of(target)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for info in infos:
            folder = tmp / step_name(info.iteration) if history else tmp
            export_checkpoint(info, folder, model_dir=model_dir)
            log(f"exported iteration {info.iteration}")
        _publish(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return [out / step_name(i.iteration) for i in infos] if history else [out]
