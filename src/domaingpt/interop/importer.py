"""``domaingpt import-hf``: a GPT-2 model into a run's ``models/`` folder.

Reads ``config.json``, ``model.safetensors`` (or its shards) and ``tokenizer.json``
directly (``transformers`` is not needed, and nothing pickled is ever loaded). A folder
that ``domaingpt export`` wrote comes back exactly: the same tensors (so the same
checkpoint file, byte for byte), its record and ``run.json``. Any other GPT-2 model is
accepted when it computes what a domaingpt model computes (GELU exact or tanh, 4x MLP,
LayerNorm eps 1e-5, tied head). Its tokenizer decides the vocabulary:

* single characters with an unknown token (a WordLevel model): a character vocabulary,
  the token embedding rows reordered to our ids (``<unk>`` 0, then the characters by
  code point);
* anything else (GPT-2's byte-level BPE, a BPE or WordPiece trained with
  ``tokenizers``): a subword vocabulary (:mod:`domaingpt.data.subword`), ids unchanged;
  it must give back every character of the corpora it is used on.

An export of a whole history (``step*`` folders) imports as the model's history
checkpoints, one per step.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch

from domaingpt.context.rundir import RunDir
from domaingpt.core.config import ModelSpec
from domaingpt.core.io import read_user_text, write_json
from domaingpt.core.limits import MAX_TOKEN_ID, MODEL_LIMITS, bounded_float, bounded_int
from domaingpt.core.owned import check_owned, is_vacant, publish, scratch_beside
from domaingpt.core.progress import Log, stderr_log
from domaingpt.data.subword import SubwordVocab
from domaingpt.data.tokenizer import AnyVocab
from domaingpt.data.vocab import UNK, Vocab
from domaingpt.errors import DomainGPTError
from domaingpt.interop.mapping import (
    HF_GELU,
    LAYER_NORM_EPS,
    META_KEY,
    RUN_FROM_RECORD,
    bias_names,
    from_gpt2,
)
from domaingpt.model.checkpoint import (
    CheckpointInfo,
    CheckpointMeta,
    list_checkpoints,
    save_checkpoint,
)
from domaingpt.model.gpt import GPT, GPTConfig
from domaingpt.training.modeldir import ModelRecord, is_model_dir, write_record

_STEP = re.compile(r"^step(\d+)$")


@dataclass(frozen=True)
class HFModel:
    """A GPT-2 model folder read back: its config, tensors and tokenizer.

    ``tokens`` and ``unk`` describe a character tokenizer (each token one character);
    ``subword`` is the folder's tokenizer when it is any other (BPE, WordPiece, ...).
    """

    folder: Path
    config: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    tokens: list[str]  # the tokenizer's token of each id
    unk: str
    subword: SubwordVocab | None = None

    @property
    def meta(self) -> dict[str, Any]:
        """What ``domaingpt export`` recorded (empty for a model from elsewhere)."""
        meta = self.config.get(META_KEY)
        return meta if isinstance(meta, dict) else {}


def _read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.exists() and not path.is_symlink():
        raise DomainGPTError(f"{path.parent} has no {path.name}: {what}")
    try:
        data = json.loads(read_user_text(path, "file"))
    except ValueError as e:
        raise DomainGPTError(f"{path} is unreadable ({e})") from None
    if not isinstance(data, dict):
        raise DomainGPTError(f"{path} is not a JSON object")
    return data


def _read_tensors(folder: Path) -> dict[str, torch.Tensor]:
    """``model.safetensors``, or the shards its index names."""
    single, index = folder / "model.safetensors", folder / "model.safetensors.index.json"
    if single.is_file():
        files = [single]
    elif index.is_file():
        shards = _read_json(index, "").get("weight_map", {})
        files = [folder / name for name in sorted(set(shards.values()))]
    else:
        bins = sorted(p.name for p in folder.glob("*.bin"))
        hint = f" (found {', '.join(bins)}: pickled weights are never loaded)" if bins else ""
        raise DomainGPTError(
            f"{folder} has no model.safetensors{hint}; save the model with "
            "save_pretrained(..., safe_serialization=True)"
        )
    tensors: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            tensors.update(safetensors.torch.load_file(f))
        except (OSError, safetensors.SafetensorError, ValueError, RuntimeError) as e:
            raise DomainGPTError(f"{f} is not a valid safetensors file ({e})") from None
    return tensors


def is_char_tokenizer(data: dict[str, Any]) -> bool:
    """A ``tokenizer.json`` whose tokens are single characters (``domaingpt export``'s, or
    any WordLevel model over characters): read as a character vocabulary."""
    model = data.get("model") or {}
    vocab = model.get("vocab")
    if model.get("type") != "WordLevel" or not isinstance(vocab, dict):
        return False
    unk = model.get("unk_token") or UNK
    return all(isinstance(t, str) and (len(t) == 1 or t == unk) for t in vocab)


def read_vocab(folder: str | Path) -> AnyVocab:
    """The vocabulary of a Hugging Face model folder's ``tokenizer.json``: a character
    vocabulary (ids in our order) or the subword tokenizer itself (ids unchanged)."""
    folder = Path(folder)
    tokens, unk, subword = _read_tokenizer(folder)
    return subword if subword is not None else _char_vocab(folder, tokens, unk)[0]


def _read_tokenizer(folder: Path) -> tuple[list[str], str, SubwordVocab | None]:
    """``tokenizer.json``: a character tokenizer's token of each id and unknown token,
    or (``[]``, ``""``) and the subword tokenizer."""
    data = _read_json(folder / "tokenizer.json", "a tokenizer is needed")
    if is_char_tokenizer(data):
        return *_read_tokens(folder, data), None
    return [], "", SubwordVocab(read_user_text(folder / "tokenizer.json", "file"), str(folder))


def _read_tokens(folder: Path, data: dict[str, Any]) -> tuple[list[str], str]:
    """The token of each id, and the unknown token, from ``tokenizer.json``."""
    model = data.get("model") or {}
    vocab = model.get("vocab")
    if not isinstance(vocab, dict) or not vocab:
        raise DomainGPTError(
            f"{folder / 'tokenizer.json'} has no token vocabulary (a {model.get('type')} "
            "model); a character model's tokenizer maps characters to ids"
        )
    where = folder / "tokenizer.json"
    added = data.get("added_tokens") or []
    if not isinstance(added, list) or not all(
        isinstance(a, dict) and "id" in a and isinstance(a.get("content"), str) for a in added
    ):
        raise DomainGPTError(f"{where}: added_tokens must be a list of {{id, content}} objects")
    # Ids are dense (0 .. n-1), so none can be n or more: checked before the id list is
    # made, so a tampered id (2e9) allocates nothing.
    most = min(len(vocab) + len(added), MAX_TOKEN_ID + 1) - 1
    ids = {
        token: bounded_int(f"{where}: the id of token {token!r}", i, 0, most)
        for token, i in vocab.items()
    }
    extra = [
        (
            bounded_int(f"{where}: the id of added token {a['content']!r}", a["id"], 0, most),
            a["content"],
        )
        for a in added
    ]
    tokens: list[str | None] = [None] * (max(ids.values()) + 1)
    for token, i in ids.items():
        tokens[i] = token
    for i, content in extra:
        if i < len(tokens) and tokens[i] is None:
            tokens[i] = content
    if None in tokens:
        raise DomainGPTError(f"{where}: id {tokens.index(None)} has no token")
    unk = model.get("unk_token") or UNK
    return [str(t) for t in tokens], str(unk)


def read_hf(folder: str | Path) -> HFModel:
    """A GPT-2 model folder, read without ``transformers``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DomainGPTError(f"{folder} is not a folder; give a Hugging Face model folder")
    config = _read_json(folder / "config.json", "is it a Hugging Face model folder?")
    tokens, unk, subword = _read_tokenizer(folder)
    return HFModel(folder, config, _read_tensors(folder), tokens, unk, subword)


def _check_architecture(hf: HFModel) -> None:
    """Refuse a model that would not compute what a domaingpt model computes."""
    c = hf.config
    n_embd = bounded_int(
        f"{hf.folder / 'config.json'}: n_embd", c.get("n_embd"), 1, MODEL_LIMITS["n_embd"]
    )
    epsilon = bounded_float(
        f"{hf.folder / 'config.json'}: layer_norm_epsilon",
        c.get("layer_norm_epsilon", LAYER_NORM_EPS),
    )
    checks = [
        (c.get("model_type") == "gpt2", f"model_type {c.get('model_type')!r}, not 'gpt2'"),
        (
            c.get("activation_function") in HF_GELU,
            f"activation {c.get('activation_function')!r}: ours is GELU, exact or tanh "
            f"({', '.join(map(repr, HF_GELU))})",
        ),
        (c.get("n_inner") in (None, 4 * n_embd), f"MLP width {c.get('n_inner')}, not 4 × n_embd"),
        (
            epsilon == LAYER_NORM_EPS,
            f"LayerNorm eps {c.get('layer_norm_epsilon')}, ours is {LAYER_NORM_EPS}",
        ),
        (c.get("scale_attn_weights", True), "unscaled attention"),
        (not c.get("scale_attn_by_inverse_layer_idx"), "attention scaled by layer index"),
        (c.get("tie_word_embeddings", True), "an untied output head"),
    ]
    wrong = [why for ok, why in checks if not ok]
    head = hf.tensors.get("lm_head.weight")
    wte = hf.tensors.get("transformer.wte.weight", hf.tensors.get("wte.weight"))
    if head is not None and wte is not None and not torch.equal(head, wte):
        wrong.append("an output head that differs from the token embedding")
    if wrong:
        raise DomainGPTError(
            f"{hf.folder} is not a model domaingpt can run unchanged: {'; '.join(wrong)}"
        )


def _vocab_order(hf: HFModel) -> tuple[AnyVocab, list[int]]:
    """Our vocabulary of the model, and for each of our ids the model's id: a character
    tokenizer's ids are put in our order, a subword tokenizer's kept."""
    if hf.subword is not None:
        return hf.subword, list(range(hf.subword.size))
    return _char_vocab(hf.folder, hf.tokens, hf.unk)


def _char_vocab(folder: Path, tokens: list[str], unk: str) -> tuple[AnyVocab, list[int]]:
    chars = [t for t in tokens if t != unk]
    if unk not in tokens:
        raise DomainGPTError(
            f"{folder}'s tokenizer has no unknown token ({unk!r}); a domaingpt "
            "vocabulary reads unseen characters as <unk>"
        )
    vocab = Vocab(tuple(sorted(set(chars))))
    position = {t: i for i, t in enumerate(tokens)}
    order = [position[unk]] + [position[ch] for ch in vocab.chars]
    return vocab, order


def _model_config(hf: HFModel, vocab: AnyVocab) -> GPTConfig:
    where = f"{hf.folder / 'config.json'}"
    recorded = hf.meta.get("model_config")
    c = hf.config
    if isinstance(recorded, dict):
        cfg = GPTConfig.from_dict(recorded, where)
        said = HF_GELU[c.get("activation_function", "gelu")]
        if said != cfg.gelu:
            raise DomainGPTError(
                f"{where}: activation_function {c.get('activation_function')!r} is not the "
                f"{cfg.gelu} GELU of the model config domaingpt recorded there (the file "
                "was altered?); export the model again"
            )
        return cfg

    def size(key: str, ours: str) -> int:
        return bounded_int(f"{where}: {key}", c.get(key), 1, MODEL_LIMITS[ours])

    biases = [hf.tensors[k] for k in bias_names(hf.tensors)]
    return GPTConfig(
        n_layer=size("n_layer", "n_layer"),
        n_head=size("n_head", "n_head"),
        n_embd=size("n_embd", "n_embd"),
        block_size=size("n_positions", "block_size"),
        vocab_size=vocab.size,
        dropout=bounded_float(f"{where}: resid_pdrop", c.get("resid_pdrop", 0.0)),
        bias=any(bool(b.any()) for b in biases),  # all zero: the same model without them
        gelu=HF_GELU[c.get("activation_function", "gelu")],
    )


def to_domaingpt(hf: HFModel) -> tuple[GPT, AnyVocab]:
    """The folder's model as ours (eval mode) and its vocabulary."""
    _check_architecture(hf)
    vocab, order = _vocab_order(hf)
    recorded = hf.meta.get("vocab_fingerprint")
    if recorded and recorded != vocab.fingerprint:
        raise DomainGPTError(
            f"{hf.folder}: tokenizer.json does not hold the vocabulary the model was "
            "exported with (fingerprint differs); export it again"
        )
    cfg = _model_config(hf, vocab)
    if cfg.vocab_size != vocab.size:
        raise DomainGPTError(
            f"{hf.folder}: the model has {cfg.vocab_size} ids, its tokenizer {vocab.size}"
        )
    if not cfg.bias:
        nonzero = [k for k in bias_names(hf.tensors) if hf.tensors[k].any()]
        if nonzero:
            raise DomainGPTError(
                f"{hf.folder}: recorded without biases, but {nonzero[0]} is not zero"
            )
    try:
        state = from_gpt2(hf.tensors, cfg)
    except KeyError as e:
        raise DomainGPTError(f"{hf.folder}: the weights have no tensor {e}") from None
    if order != list(range(len(order))):
        state["tok_emb.weight"] = state["tok_emb.weight"][order].contiguous()
    cfg.check_state(state, str(hf.folder))  # before allocating the model
    model = GPT(cfg)
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise DomainGPTError(f"{hf.folder}: the weights do not fit its config ({e})") from None
    model.head.weight = model.tok_emb.weight
    return model.eval(), vocab


def model_spec(model_config: dict[str, Any] | None) -> dict[str, Any]:
    """The ``[model]`` table of a run config (a :class:`ModelSpec`'s keys) of a model's
    config, which also holds its vocabulary size and GELU."""
    keys = {f.name for f in fields(ModelSpec)}
    return {k: v for k, v in (model_config or {}).items() if k in keys}


def model_folders(source: Path) -> list[tuple[int | None, Path]]:
    """``(iteration, folder)`` of one model, or of every ``stepN`` folder of a history."""
    steps = [(int(m[1]), p) for p in source.iterdir() if (m := _STEP.match(p.name))]
    if steps and not (source / "config.json").is_file():
        return sorted(steps)
    return [(None, source)]


def adopts_vocab(run: RunDir, vocab: AnyVocab, source: Path, log: Log) -> bool:
    """Whether the imported model's vocabulary becomes the run's ``vocab.json`` (the run
    has none yet). A run with another keeps it: the model reads its own vocabulary
    (every checkpoint records it) and the analyses cut their prompts for each
    vocabulary (:func:`domaingpt.context.prompts.build_prompt_groups`)."""
    if not run.vocab_path.exists():
        return True
    if run.vocab().fingerprint != vocab.fingerprint:
        log(
            f"note: {source} reads another vocabulary than the run's {run.vocab_path} "
            f"({vocab.size:,} ids); it keeps its own"
        )
    return False


def _run_json(meta: dict[str, Any]) -> dict[str, Any] | None:
    """The model's ``run.json`` as an export recorded it: its ``"run"``, with the keys it
    left out because the record (or the export's vocabulary fingerprint) holds them put
    back. ``None`` for a model from elsewhere."""
    run = meta.get("run")
    if not isinstance(run, dict):
        return None
    record = meta.get("record") or {}
    full = {k: record[k] for k in RUN_FROM_RECORD if k in record}
    if "vocab_fingerprint" in meta:
        full["vocab_fingerprint"] = meta["vocab_fingerprint"]
    return {**full, **run}


def import_hf(
    source: str | Path,
    run_dir: str | Path,
    *,
    name: str | None = None,
    overwrite: bool = False,
    log: Log = stderr_log,
) -> list[CheckpointInfo]:
    """Import ``source`` (one exported model, or a ``step*`` history) as
    ``run_dir/models/NAME``; returns the checkpoints written.

    Everything is checked before anything is written (every folder's config,
    vocabulary and weights, what is at ``models/NAME``); the model
    is written beside ``models/NAME`` and swapped in at the end, so a refused or failed
    import leaves the run as it was, and ``--overwrite`` replaces only a model directory
    domaingpt wrote (:func:`domaingpt.training.modeldir.is_model_dir`).
    """
    source, run = Path(source), RunDir(Path(run_dir))
    if not source.is_dir():
        raise DomainGPTError(f"{source} is not a folder; give a Hugging Face model folder")
    folders = model_folders(source)
    models = [(it, read_hf(f)) for it, f in folders]
    first = models[-1][1].meta
    record = first.get("record", {})
    name = name or str(record.get("corpus") or first.get("run", {}).get("corpus") or source.name)
    model_dir = run.model(name)
    run.check_writable()
    converted = [(it, hf, *to_domaingpt(hf)) for it, hf in models]  # refuses a bad one
    vocabs = {vocab.fingerprint for _, _, _, vocab in converted}
    if len(vocabs) > 1:
        raise DomainGPTError(f"the step folders of {source} do not share one vocabulary")
    new_vocab = adopts_vocab(run, converted[0][3], source, log)
    refusal = (
        f"{model_dir} exists and is not a domaingpt model directory (--overwrite replaces "
        "only model directories domaingpt wrote); import under another --name"
    )
    if not is_vacant(model_dir):
        if not overwrite:
            raise DomainGPTError(
                f"{model_dir} already exists; pass --overwrite to replace it or --name to "
                "import under another name"
            )
        check_owned(model_dir, is_model_dir, refusal)
    tmp = scratch_beside(model_dir, "import")
    try:
        written = []
        for iteration, hf, model, vocab in converted:
            it = iteration if iteration is not None else int(hf.meta.get("iteration", 0))
            record = hf.meta.get("record")
            meta = (
                CheckpointMeta.from_dict(record)
                if isinstance(record, dict) and record
                else CheckpointMeta(corpus=name, imported_from=str(source))
            )
            written.append(save_checkpoint(tmp / "checkpoints", "iter", it, model, vocab, meta))
            log(f"imported {hf.folder} as iteration {it}")
        exported = _run_json(models[-1][1].meta)
        run_json = (
            ModelRecord.from_dict(exported)
            if exported is not None
            else ModelRecord(
                corpus=name,
                vocab_fingerprint=written[-1].vocab_fingerprint,
                # The run's [model] table: the shape only (the vocabulary is the run's).
                config={"model": model_spec(written[-1].model_config)},
                imported_from=str(source),
            )
        )
        write_record(tmp, run_json)
        if new_vocab:
            write_json(run.vocab_path, {**converted[0][3].to_json(), "corpora": {}})
        publish(tmp, model_dir, is_model_dir, refusal)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return list_checkpoints(model_dir / "checkpoints", "iter")
