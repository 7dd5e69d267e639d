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
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from domaingpt.context.rundir import read_run_json
from domaingpt.core.io import atomic_write_text, write_json
from domaingpt.core.owned import check_owned, claim, is_vacant, publish, scratch_beside
from domaingpt.core.progress import Log, stderr_log
from domaingpt.data.subword import SubwordVocab
from domaingpt.data.tokenizer import AnyVocab, vocab_from_json
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
    history_checkpoints,
    load_checkpoint,
)
from domaingpt.model.gpt import GPT

#: The class ``tokenizer_config.json`` names: ``transformers`` 4 and 5 both load it.
TOKENIZER_CLASS = "PreTrainedTokenizerFast"
#: Every character is its own token: ``[\s\S]`` matches any one, newlines included.
CHAR_PATTERN = r"[\s\S]"


def step_name(iteration: int) -> str:
    """``step1000``: Pythia's name for the checkpoint of one iteration."""
    return f"step{iteration}"


# --- the tokenizer --------------------------------------------------------------------


def write_tokenizer(vocab: AnyVocab, block_size: int, out: Path) -> None:
    """The model's tokenizer files: a subword tokenizer as it came (its own
    ``tokenizer.json``), a character vocabulary as :func:`write_char_tokenizer` writes it."""
    if isinstance(vocab, SubwordVocab):
        atomic_write_text(out / "tokenizer.json", vocab.json)
        special = {"unk_token": vocab.token(vocab.unk_id)} if vocab.unk_id is not None else {}
        write_json(
            out / "tokenizer_config.json",
            {
                "tokenizer_class": TOKENIZER_CLASS,
                **special,
                "padding_side": "left",
                "truncation_side": "left",
                "model_max_length": block_size,
                "clean_up_tokenization_spaces": False,
                "model_input_names": ["input_ids", "attention_mask"],
            },
        )
        write_json(out / "special_tokens_map.json", special)
        return
    write_char_tokenizer(vocab, block_size, out)


def write_char_tokenizer(vocab: Vocab, block_size: int, out: Path) -> None:
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
    record = {k: v for k, v in info.meta.to_dict().items() if k not in LOCAL_PATH_KEYS}
    fingerprint = vocab_from_json(info.vocab).fingerprint
    meta: dict[str, Any] = {
        "iteration": info.iteration,
        "vocab_fingerprint": fingerprint,
        "record": record,
    }
    run = read_run_json(model_dir).to_dict() if model_dir is not None else {}
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


def _model_card(info: CheckpointInfo, vocab: AnyVocab, model: GPT) -> str:
    """``README.md``: a Hugging Face model card, its YAML header first (library,
    pipeline tag, tags, the corpus, the run's validation loss), then the run's numbers
    and how to use the model with transformers and lm-evaluation-harness."""
    record = info.meta
    cfg = model.config
    corpus = record.corpus or "unknown"
    val = record.val_loss
    newline = vocab.id_of("\n")
    train = (record.config or {}).get("train") or {}
    subword = isinstance(vocab, SubwordVocab)
    unit = "token" if subword else "character"
    header = [
        "---",
        "library_name: transformers",
        "pipeline_tag: text-generation",
        f"tags: {_yaml(['domaingpt', 'subword' if subword else 'character-level', 'gpt2', 'nanogpt', corpus])}",
        f"datasets: {_yaml([corpus])}",
    ]
    if isinstance(val, int | float):
        bpc = val / math.log(2)
        bits = [
            "    - type: bpc",
            f"      value: {bpc:.6f}",
            "      name: bits per character",
        ]
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
            f"      name: validation loss (nats per {unit})",
            *([] if subword else bits),
        ]
    header.append("---")
    facts = [
        f"- corpus: `{corpus}`, SHA-256 `{record.corpus_sha256 or 'not recorded'}`",
        f"- checkpoint: iteration {info.iteration}"
        + (f", {record.tokens_seen:,} {unit}s seen" if record.tokens_seen else ""),
    ]
    if isinstance(val, int | float):
        facts.append(
            f"- validation loss {val:.4f} nats per {unit}"
            + ("" if subword else f" ({val / math.log(2):.4f} bits per character)")
            + ", as recorded at this checkpoint"
        )
    facts += [
        f"- model: {cfg.n_layer} layers, {cfg.n_head} heads, {cfg.n_embd} embedding, "
        f"{model.num_params(non_embedding=False):,} parameters, "
        f"{'with' if cfg.bias else 'without (zero in this export)'} biases",
        f"- context: {cfg.block_size} {unit}s (`n_positions`)",
        (
            f"- vocabulary: the subword tokenizer of {vocab.size} ids the model was "
            "imported with (`tokenizer.json`, unchanged)"
            if subword
            else f"- vocabulary: {vocab.size} ids, one per character; id 0 `<unk>` (also "
            "the padding token, on the left)"
        ),
    ]
    if train:
        keys = ("max_iters", "batch_size", "lr", "min_lr", "warmup_iters", "weight_decay", "seed")
        facts.append("- training: " + ", ".join(f"{k} {train[k]}" for k in keys if k in train))
    lines = [
        *header,
        "",
        f"# domaingpt {'subword' if subword else 'character'} model: {corpus}, "
        f"iteration {info.iteration}",
        "",
        (
            "A GPT (nanoGPT architecture) with a subword tokenizer, exported by `domaingpt "
            f"export` as a `GPT2LMHeadModel` with {cfg.gelu} GELU."
            if subword
            else "A character-level GPT (nanoGPT architecture) exported by `domaingpt "
            "export` as a `GPT2LMHeadModel` with exact GELU; one token per character."
        ),
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
        f"{unit}s must fit in {cfg.block_size}. `generation_config.json` sets "
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

#: The files :func:`export_checkpoint` writes into a model's folder: all an export owns.
EXPORT_FILES = frozenset(
    {
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "README.md",
    }
)
_STEP_DIR = re.compile(r"^step\d+$")


def _exported_model(folder: Path) -> bool:
    """``folder`` holds one exported model (its ``config.json`` has our record)."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    meta = config.get(META_KEY) if isinstance(config, dict) else None
    return isinstance(meta, dict) and meta.get("format") == META_FORMAT


def is_export(path: Path) -> bool:
    """A folder holding a model written by :func:`export` (one, or ``step*`` folders),
    maybe among other files."""
    return any(_exported_model(f) for f in [path, *sorted(path.glob("step*"))])


def is_own_export(path: Path) -> bool:
    """A folder holding an export and nothing else: one model's :data:`EXPORT_FILES`,
    or only ``stepN`` folders each holding one; the only folder ``--overwrite`` replaces."""
    if path.is_symlink() or not path.is_dir():
        return False
    entries = list(path.iterdir())
    if not entries or any(e.is_symlink() for e in entries):
        return False
    if all(e.is_file() and e.name in EXPORT_FILES for e in entries):
        return _exported_model(path)
    return all(e.is_dir() and _STEP_DIR.match(e.name) and is_own_export(e) for e in entries)


def _foreign(path: Path) -> list[str]:
    """What in ``path`` (an export among other files) the export did not write."""
    found = []
    for e in sorted(path.iterdir()):
        if e.is_symlink() or not (
            (e.is_file() and e.name in EXPORT_FILES)
            or (e.is_dir() and _STEP_DIR.match(e.name) and is_own_export(e))
        ):
            found.append(e.name)
    return found


def _model_dir_of(target: Path) -> Path | None:
    """The model directory (with ``run.json``) a checkpoint target belongs to."""
    path = Path(target)
    for candidate in (path, path.parent, path.parent.parent):
        if (candidate / "run.json").is_file():
            return candidate
    return None


def _refusal(out: Path) -> str:
    """Why ``out`` may not be replaced: the one-line error."""
    if out.is_symlink():
        return (
            f"{out} is a symbolic link; domaingpt never writes through one: choose another folder"
        )
    if out.exists() and not out.is_dir():
        return f"{out} is a file; give a folder to export into"
    if is_export(out):
        other = _foreign(out)
        return (
            f"{out} holds files an export does not write ({', '.join(other[:3])}"
            f"{', ...' if len(other) > 3 else ''}); --overwrite replaces only an earlier "
            "export: move them out, or choose another folder"
        )
    return f"{out} exists and is not an earlier domaingpt export; choose another folder"


def _check_out(out: Path, overwrite: bool) -> None:
    """Refuse an ``out`` that is a file or link, or a folder holding anything but an
    earlier export (that one is replaced only with ``overwrite``)."""
    check_owned(out, is_own_export, _refusal(out))
    if not is_vacant(out) and not overwrite:
        raise DomainGPTError(f"{out} holds an earlier export; pass --overwrite to replace it")


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

    Written to a temporary folder beside ``out`` and swapped into place at the end
    (:func:`domaingpt.core.owned.publish`): an interrupted export leaves nothing
    half-written at ``out``, and ``--overwrite`` replaces only an earlier export there
    (:func:`is_own_export`). ``out`` is claimed meanwhile: a second export to it at the
    same time is refused.
    """
    require("transformers", "domaingpt export")
    require("tokenizers", "domaingpt export")
    target, out = Path(target), Path(out)
    if history:
        directory = target / "checkpoints" if (target / "checkpoints").is_dir() else target
        infos = history_checkpoints(directory)  # an unreadable record is named, not skipped
        if not infos:
            raise DomainGPTError(f"no checkpoints in {directory}; train a model there first")
    else:
        infos = [find_checkpoint(target, iteration)]
    _check_out(out, overwrite)
    model_dir = _model_dir_of(target)
    with claim(out, "folder"):
        _check_out(out, overwrite)  # again, now that no other export can change it
        tmp = scratch_beside(out, "tmp")
        try:
            for info in infos:
                folder = tmp / step_name(info.iteration) if history else tmp
                export_checkpoint(info, folder, model_dir=model_dir)
                log(f"exported iteration {info.iteration}")
            publish(tmp, out, is_own_export, _refusal(out))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return [out / step_name(i.iteration) for i in infos] if history else [out]
