"""``domaingpt import-nanogpt``: nanoGPT's ``ckpt.pt`` files as a domaingpt model.

nanoGPT (``model.py``) and domaingpt (:mod:`domaingpt.model.gpt`) are the same
computation: learned token and position embeddings, pre-LayerNorm blocks (LayerNorm eps
1e-5, with or without biases as ``model_args['bias']`` says), causal attention whose
``c_attn`` packs q, k, v one after the other with the heads contiguous in each (our
``qkv`` exactly), a 4x MLP with exact GELU (``nn.GELU()``), a final LayerNorm and an
``lm_head`` tied to ``wte``. Both use ``nn.Linear``, so every weight is copied as it is,
nothing transposed or permuted; only the names differ.

The vocabulary is the one thing that differs. nanoGPT's character ids are the
positions of the corpus's sorted characters (``meta.pkl``: ``stoi``/``itos``); ours put
``<unk>`` at id 0 and the characters after it by code point. So the token embedding
rows are reordered to our ids and ``<unk>`` gets a row of zeros. Every character's
logit is then nanoGPT's logit, bit for bit; ``<unk>``'s logit is exactly 0 at every
position (the head is tied and has no bias, so no row can make it lower for every
input), which takes ``exp(-logsumexp(logits))`` of the probability mass: for a trained
model, whose likely characters have logits of several units, a small fraction of a
percent. The import records that in ``run.json``.

Nothing here runs code from a file: ``ckpt.pt`` is read with ``torch.load(...,
weights_only=True)`` (tensors and plain containers only) and ``meta.pkl`` with
:func:`read_meta`, which checks every opcode of the pickle before building it from
dicts, lists, tuples, strings and integers alone.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import pickle
import pickletools
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from domaingpt.context.rundir import RunDir
from domaingpt.core.config import ModelSpec, RunConfig, from_dict
from domaingpt.core.io import write_json
from domaingpt.core.owned import check_owned, is_vacant, publish, scratch_beside
from domaingpt.core.progress import Log, stderr_log
from domaingpt.core.version import __version__
from domaingpt.data.corpus import REGISTRY, Corpus, resolve_corpus, sha256_file
from domaingpt.data.tokenizer import AnyVocab
from domaingpt.data.vocab import Vocab
from domaingpt.errors import ConfigError, DomainGPTError
from domaingpt.interop.importer import adopts_vocab
from domaingpt.model.checkpoint import (
    CheckpointInfo,
    CheckpointMeta,
    list_checkpoints,
    save_checkpoint,
)
from domaingpt.model.gpt import GPT, GPTConfig
from domaingpt.training.modeldir import ModelRecord, is_model_dir, write_record

CKPT_NAME = "ckpt.pt"  # what nanoGPT's train.py writes in its out_dir
META_NAME = "meta.pkl"  # what nanoGPT's data/*/prepare.py writes beside the data
COMPILED_PREFIX = "_orig_mod."  # torch.compile's wrapper, kept in a compiled model's keys
MODEL_ARGS = ("n_layer", "n_head", "n_embd", "block_size", "bias", "vocab_size")
MAX_META_BYTES = 64 << 20

# Opcodes of a pickle of dicts, lists, tuples, strings and integers (any protocol), and
# the memo that lets a pickle refer to an object twice. Everything that imports a name
# (GLOBAL, STACK_GLOBAL, INST, OBJ), calls one (REDUCE, NEWOBJ, BUILD) or reaches outside
# (PERSID, EXT*) is absent, so no such pickle is ever built.
_PLAIN_OPCODES = frozenset(
    {
        "PROTO", "FRAME", "STOP", "MARK", "POP", "POP_MARK", "DUP",
        "EMPTY_DICT", "DICT", "SETITEM", "SETITEMS",
        "EMPTY_LIST", "LIST", "APPEND", "APPENDS",
        "EMPTY_TUPLE", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3",
        "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4",
        "UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8",
        "PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE", "GET", "BINGET", "LONG_BINGET",
    }
)  # fmt: skip


class _NoClasses(pickle.Unpickler):
    """Second guard behind the opcode check: any name a pickle asks for is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refused to import {module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refused a persistent id")


def read_plain_pickle(path: Path) -> Any:
    """A pickle of dicts, lists, tuples, strings and integers, read without running any
    of it; anything else is a one-line error naming the first opcode that is not plain."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DomainGPTError(f"cannot read {path} ({e.strerror or e})") from None
    if len(data) > MAX_META_BYTES:
        raise DomainGPTError(f"{path} is {len(data)} bytes: too large for a vocabulary pickle")
    try:
        for op, _, pos in pickletools.genops(io.BytesIO(data)):
            if op.name not in _PLAIN_OPCODES:
                raise DomainGPTError(
                    f"{path} is not a plain vocabulary pickle: it holds a {op.name} opcode "
                    f"(at byte {pos}), which would import or call code; it was not loaded. "
                    "Write the vocabulary with nanoGPT's prepare.py, or pass --corpus"
                )
        return _NoClasses(io.BytesIO(data)).load()
    except DomainGPTError:
        raise
    except Exception as e:  # any malformed stream: nothing was run, say what broke
        raise DomainGPTError(f"{path} is not a readable pickle ({e})") from None


@dataclass(frozen=True)
class NanoVocab:
    """nanoGPT's character vocabulary: ``itos[i]`` is the character of id ``i``."""

    itos: tuple[str, ...]
    source: str  # where it came from, for messages and provenance

    @property
    def vocab(self) -> AnyVocab:
        return Vocab(tuple(sorted(self.itos)))

    def order(self) -> list[int]:
        """For each of our ids after ``<unk>``, nanoGPT's id of the same character."""
        position = {ch: i for i, ch in enumerate(self.itos)}
        return [position[ch] for ch in self.vocab.chars]


def read_meta(path: str | Path) -> NanoVocab:
    """nanoGPT's ``meta.pkl`` (``{'vocab_size', 'itos', 'stoi'}``), checked to be one
    bijection between ids ``0..vocab_size-1`` and single characters."""
    path = Path(path)
    meta = read_plain_pickle(path)
    itos = meta.get("itos") if isinstance(meta, dict) else None
    if not isinstance(itos, dict):
        raise DomainGPTError(
            f"{path} has no 'itos' table (id -> character): is it nanoGPT's meta.pkl?"
        )
    n = len(itos)
    if sorted(k for k in itos if isinstance(k, int)) != list(range(n)):
        raise DomainGPTError(f"{path}: 'itos' ids are not 0..{n - 1}")
    chars = tuple(itos[i] for i in range(n))
    bad = [c for c in chars if not (isinstance(c, str) and len(c) == 1)]
    if bad:
        raise DomainGPTError(
            f"{path} is not a character vocabulary: {bad[0]!r} is not one character "
            "(subword nanoGPT models, e.g. GPT-2's BPE, are not character models)"
        )
    if len(set(chars)) != n:
        raise DomainGPTError(f"{path}: 'itos' gives one character to several ids")
    stoi = meta.get("stoi")
    if stoi is not None and stoi != {c: i for i, c in enumerate(chars)}:
        raise DomainGPTError(f"{path}: 'stoi' is not the inverse of 'itos'")
    if meta.get("vocab_size", n) != n:
        raise DomainGPTError(f"{path}: vocab_size {meta.get('vocab_size')} but {n} characters")
    return NanoVocab(chars, str(path))


def corpus_vocab(corpus: Corpus) -> NanoVocab:
    """The vocabulary nanoGPT's ``shakespeare_char/prepare.py`` makes of a corpus: its
    characters sorted by code point."""
    return NanoVocab(Vocab.from_texts(corpus.iter_text()).chars, f"corpus {corpus.name}")


# -- checkpoints -----------------------------------------------------------------------
@dataclass(frozen=True)
class NanoCheckpoint:
    """One ``ckpt.pt``: its weights (names without a compile prefix) and what it records."""

    path: Path
    sha256: str
    state: dict[str, torch.Tensor]
    model_args: dict[str, Any]
    iter_num: int
    best_val_loss: float | None
    config: dict[str, Any]


def _checkpoint_file(source: Path) -> Path:
    if source.is_dir():
        if (source / CKPT_NAME).is_file():
            return source / CKPT_NAME
        raise DomainGPTError(f"{source} has no {CKPT_NAME}; give a nanoGPT out_dir or checkpoint")
    if not source.is_file():
        raise DomainGPTError(f"{source} does not exist; give a nanoGPT ckpt.pt or its out_dir")
    return source


def _scalar(value: Any) -> float | None:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def read_checkpoint(source: str | Path) -> NanoCheckpoint:
    """A nanoGPT checkpoint (``ckpt.pt`` or the out_dir holding it), read with
    ``torch.load(weights_only=True)``: a pickle that would build anything but tensors
    and plain containers is refused by torch before it runs."""
    path = _checkpoint_file(Path(source))
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=False)
    except Exception as e:  # torch raises many types; none of them ran the file's code
        why = " ".join(str(e).split())[:200]
        raise DomainGPTError(
            f"{path} is not a plain nanoGPT checkpoint: torch.load(weights_only=True) "
            f"refused it ({why}); only tensors and plain values are ever loaded"
        ) from None
    missing = [
        k
        for k in ("model", "model_args", "iter_num")
        if not isinstance(ckpt, dict) or k not in ckpt
    ]
    if missing:
        raise DomainGPTError(
            f"{path} is not a nanoGPT checkpoint: no {', '.join(map(repr, missing))} "
            "(train.py saves model, optimizer, model_args, iter_num, best_val_loss, config)"
        )
    state, args = ckpt["model"], ckpt["model_args"]
    if not isinstance(state, dict) or not isinstance(args, dict):
        raise DomainGPTError(f"{path}: 'model' and 'model_args' must be dictionaries")
    clean = {}
    for key, tensor in state.items():
        name = str(key)
        while name.startswith(COMPILED_PREFIX):  # torch.compile's wrapper, nothing else
            name = name[len(COMPILED_PREFIX) :]
        if not isinstance(tensor, torch.Tensor):
            raise DomainGPTError(f"{path}: model entry {key!r} is not a tensor")
        clean[name] = tensor
    lacking = [k for k in MODEL_ARGS if k not in args]
    if lacking:
        raise DomainGPTError(f"{path}: model_args has no {', '.join(lacking)}")
    config = ckpt.get("config")
    return NanoCheckpoint(
        path=path,
        sha256=sha256_file(path),
        state=clean,
        model_args=dict(args),
        iter_num=int(ckpt["iter_num"]),
        best_val_loss=_scalar(ckpt.get("best_val_loss")),
        config=dict(config) if isinstance(config, dict) else {},
    )


def expected_shapes(args: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Every tensor of nanoGPT's ``GPT`` of these ``model_args``, and its shape."""
    V, C, T = int(args["vocab_size"]), int(args["n_embd"]), int(args["block_size"])
    bias = bool(args["bias"])
    shapes: dict[str, tuple[int, ...]] = {
        "transformer.wte.weight": (V, C),
        "transformer.wpe.weight": (T, C),
        "lm_head.weight": (V, C),
    }

    def linear(name: str, n_out: int, n_in: int) -> None:
        shapes[f"{name}.weight"] = (n_out, n_in)
        if bias:
            shapes[f"{name}.bias"] = (n_out,)

    def norm(name: str) -> None:
        shapes[f"{name}.weight"] = (C,)
        if bias:
            shapes[f"{name}.bias"] = (C,)

    for i in range(int(args["n_layer"])):
        h = f"transformer.h.{i}"
        norm(f"{h}.ln_1")
        linear(f"{h}.attn.c_attn", 3 * C, C)
        linear(f"{h}.attn.c_proj", C, C)
        norm(f"{h}.ln_2")
        linear(f"{h}.mlp.c_fc", 4 * C, C)
        linear(f"{h}.mlp.c_proj", C, 4 * C)
    norm("transformer.ln_f")
    return shapes


def _is_mask_buffer(name: str) -> bool:
    """The causal mask old PyTorch versions (no flash attention) save as ``attn.bias``:
    a constant, not a weight."""
    parts = name.split(".")
    return len(parts) == 5 and parts[:2] == ["transformer", "h"] and parts[3:] == ["attn", "bias"]


def check_shapes(ck: NanoCheckpoint) -> None:
    """The checkpoint's tensors are exactly those its ``model_args`` describe."""
    want = expected_shapes(ck.model_args)
    have = {k: tuple(v.shape) for k, v in ck.state.items() if not _is_mask_buffer(k)}
    args = ", ".join(f"{k}={ck.model_args[k]}" for k in MODEL_ARGS)
    for name, shape in want.items():
        if name not in have:
            raise DomainGPTError(f"{ck.path}: no tensor {name}, which model_args ({args}) need")
        if have[name] != shape:
            raise DomainGPTError(
                f"{ck.path}: {name} has shape {list(have[name])} but model_args ({args}) "
                f"make it {list(shape)}; the checkpoint does not match its model_args"
            )
    extra = sorted(set(have) - set(want))
    if extra:
        raise DomainGPTError(
            f"{ck.path}: tensors {extra[:3]} are not part of a nanoGPT GPT with model_args ({args})"
        )
    if not torch.equal(ck.state["lm_head.weight"], ck.state["transformer.wte.weight"]):
        raise DomainGPTError(
            f"{ck.path}: lm_head.weight differs from transformer.wte.weight; nanoGPT ties "
            "them, and so does domaingpt: an untied head cannot be imported"
        )


def model_config(ck: NanoCheckpoint, vocab: AnyVocab) -> GPTConfig:
    a = ck.model_args
    try:
        return GPTConfig(
            n_layer=int(a["n_layer"]),
            n_head=int(a["n_head"]),
            n_embd=int(a["n_embd"]),
            block_size=int(a["block_size"]),
            dropout=float(a.get("dropout", 0.0)),
            bias=bool(a["bias"]),
            vocab_size=vocab.size,
        )
    except ConfigError as e:
        raise DomainGPTError(f"{ck.path}: model_args describe no valid model ({e})") from None


def to_domaingpt(ck: NanoCheckpoint, nano: NanoVocab) -> GPT:
    """The checkpoint as our model (eval mode), its token rows in our vocabulary's order
    and a zero row for ``<unk>``."""
    check_shapes(ck)
    n_vocab = int(ck.model_args["vocab_size"])
    if n_vocab != len(nano.itos):
        raise DomainGPTError(
            f"{ck.path}: the model has {n_vocab} token ids, the vocabulary ({nano.source}) "
            f"{len(nano.itos)} characters; give the meta.pkl the model was trained with"
        )
    vocab = nano.vocab
    cfg = model_config(ck, vocab)
    t = {k.removeprefix("transformer."): v.detach().to(torch.float32) for k, v in ck.state.items()}
    wte = t["wte.weight"]
    state = {
        "tok_emb.weight": torch.cat([torch.zeros(1, cfg.n_embd), wte[nano.order()]]),
        "pos_emb.weight": t["wpe.weight"],
    }
    names = {"ln_1": "ln_1", "ln_2": "ln_2", "attn.qkv": "attn.c_attn"}
    names |= {"attn.proj": "attn.c_proj", "mlp.fc": "mlp.c_fc", "mlp.proj": "mlp.c_proj"}
    params = ("weight", "bias") if cfg.bias else ("weight",)
    for i in range(cfg.n_layer):
        for ours, theirs in names.items():
            for p in params:
                state[f"blocks.{i}.{ours}.{p}"] = t[f"h.{i}.{theirs}.{p}"]
    for p in params:
        state[f"ln_f.{p}"] = t[f"ln_f.{p}"]
    model = GPT(cfg)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if set(missing) != {"head.weight"} or unexpected:  # a mapping bug, not bad input
        raise RuntimeError(f"nanoGPT mapping incomplete: {missing} {unexpected}")
    model.head.weight = model.tok_emb.weight
    return model.eval()


# -- a run of several checkpoints --------------------------------------------------------
def read_history(sources: list[str | Path]) -> list[NanoCheckpoint]:
    """The checkpoints of one run, ordered by ``iter_num``: each a ``ckpt.pt`` or an
    out_dir holding one; they must share ``model_args`` and differ in ``iter_num``."""
    if not sources:
        raise DomainGPTError("give at least one nanoGPT checkpoint (ckpt.pt or its out_dir)")
    cks = sorted((read_checkpoint(s) for s in sources), key=lambda c: c.iter_num)
    first = cks[0]
    shape = {k: first.model_args[k] for k in MODEL_ARGS}
    for ck in cks[1:]:
        if {k: ck.model_args[k] for k in MODEL_ARGS} != shape:
            raise DomainGPTError(
                f"{ck.path} and {first.path} are not checkpoints of one model: their "
                "model_args differ; import them under different --name"
            )
    for a, b in itertools.pairwise(cks):
        if a.iter_num == b.iter_num:
            raise DomainGPTError(
                f"{a.path} and {b.path} are both at iter_num {a.iter_num}; give each iteration once"
            )
    return cks


def _check_covers(nano: NanoVocab, corpus: Corpus) -> None:
    missing = sorted(set(Vocab.from_texts(corpus.iter_text()).chars) - set(nano.itos))
    if missing:
        shown = ", ".join(repr(c) for c in missing[:5])
        raise DomainGPTError(
            f"the vocabulary ({nano.source}) has no id for {len(missing)} character(s) of "
            f"corpus {corpus.name} ({shown}); the model cannot read that corpus: give the "
            "meta.pkl of the data it was trained on, or the corpus it was trained on"
        )


def _run_config(ck: NanoCheckpoint, iterations: list[int]) -> RunConfig:
    """Our configuration of the model: its shape, the split nanoGPT's prepare.py makes
    (the last 10% is validation, as ours) and what of its training config has a name
    here (kept only when it is a valid domaingpt training config)."""
    a = ck.model_args
    model = {f: a[f] for f in ModelSpec.__dataclass_fields__ if f in a}
    base = from_dict({"model": model, "data": {"val_fraction": 0.1}})
    c = ck.config
    names = {
        "batch_size": "batch_size",
        "grad_accum": "gradient_accumulation_steps",
        "max_iters": "max_iters",
        "lr": "learning_rate",
        "min_lr": "min_lr",
        "warmup_iters": "warmup_iters",
        "lr_decay_iters": "lr_decay_iters",
        "weight_decay": "weight_decay",
        "beta1": "beta1",
        "beta2": "beta2",
        "grad_clip": "grad_clip",
        "eval_interval": "eval_interval",
    }
    train: dict[str, Any] = {ours: c[theirs] for ours, theirs in names.items() if theirs in c}
    train["checkpoints"] = iterations
    try:
        cfg = from_dict({"train": train}, base).validate()
    except ConfigError:
        cfg = base
    return dataclasses.replace(cfg, preset="nanogpt")


def _run_record(
    cks: list[NanoCheckpoint],
    nano: NanoVocab,
    meta_path: Path | None,
    found: Corpus,
    cfg: RunConfig,
) -> ModelRecord:
    """The imported model's ``run.json``: what it was trained on, in our configuration,
    and where it came from (each checkpoint file and the vocabulary, with their hashes)."""
    vocab = nano.vocab
    provenance = {
        "format": "nanogpt",
        "checkpoints": [
            {
                "path": str(c.path.resolve()),
                "sha256": c.sha256,
                "iter_num": c.iter_num,
                "best_val_loss": c.best_val_loss,
            }
            for c in cks
        ],
        "vocabulary": {
            "source": nano.source,
            "sha256": sha256_file(meta_path) if meta_path is not None else None,
            "nanogpt_itos": "".join(nano.itos),
        },
        "model_args": cks[-1].model_args,
        "nanogpt_config": cks[-1].config,
        "unk": "a zero embedding row: its logit is 0 at every position, every "
        "character's logit is nanoGPT's",
    }
    return ModelRecord(
        corpus=found.name,
        corpus_sha256=found.sha256,
        vocab_fingerprint=vocab.fingerprint,
        config=cfg.to_dict(),
        domaingpt_version=__version__,
        torch_version=torch.__version__,
        corpus_path=None if found.builtin else str(found.path),
        imported_from=provenance,
    )


# -- writing the model directory ----------------------------------------------------------
def import_nanogpt(
    sources: list[str | Path],
    run_dir: str | Path,
    *,
    name: str,
    corpus: str | Path | Corpus | None = None,
    meta: str | Path | None = None,
    overwrite: bool = False,
    data_dir: str | Path | None = None,
    download: bool = True,
    log: Log = stderr_log,
) -> list[CheckpointInfo]:
    """Import nanoGPT checkpoints of one run as ``run_dir/models/NAME``, one history
    checkpoint per ``iter_num``. Everything is read and checked before anything is
    written; the model directory is assembled aside and moved into place whole."""
    run = RunDir(Path(run_dir))
    model_dir = run.model(name)  # refuses a name that is not one safe path component
    run.check_writable()
    refusal = (
        f"{model_dir} holds files domaingpt did not write there; --overwrite replaces "
        "only a model directory: move it away or use another --name"
    )
    if not is_vacant(model_dir) and not overwrite:
        raise DomainGPTError(
            f"{model_dir} already exists; pass --overwrite to replace it or --name to "
            "import under another name"
        )
    check_owned(model_dir, is_model_dir, refusal)
    cks = read_history(list(sources))
    if corpus is None and name in REGISTRY:
        corpus = name
    if corpus is None:
        raise DomainGPTError(
            f"which corpus was {name!r} trained on? pass --corpus NAME_OR_PATH (the "
            "analyses score every model on its own domain)"
        )
    if isinstance(corpus, Corpus):
        found = corpus
    else:
        found = resolve_corpus(str(corpus), data_dir, download=download)
    meta_path = Path(meta) if meta is not None else None
    if meta_path is None:
        beside = [c.path.parent / META_NAME for c in cks if (c.path.parent / META_NAME).is_file()]
        meta_path = beside[0] if beside else None
    nano = read_meta(meta_path) if meta_path is not None else corpus_vocab(found)
    _check_covers(nano, found)
    models = [to_domaingpt(ck, nano) for ck in cks]
    vocab = nano.vocab
    new_vocab = adopts_vocab(run, vocab, cks[-1].path, log)
    run.refuse_links()

    cfg = _run_config(cks[-1], [c.iter_num for c in cks])
    record = _run_record(cks, nano, meta_path, found, cfg)

    run.models.mkdir(parents=True, exist_ok=True)
    staged = scratch_beside(model_dir, "import")
    try:
        for ck, model in zip(cks, models, strict=True):
            meta_rec = CheckpointMeta(
                corpus=found.name,
                corpus_sha256=found.sha256,
                val_loss=ck.best_val_loss,
                config=cfg.to_dict(),
                imported_from={"path": str(ck.path.resolve()), "sha256": ck.sha256},
            )
            save_checkpoint(staged / "checkpoints", "iter", ck.iter_num, model, vocab, meta_rec)
            log(f"imported {ck.path} (iter_num {ck.iter_num})")
        write_record(staged, record)
        if new_vocab:
            write_json(run.vocab_path, {**vocab.to_json(), "corpora": {}})
        publish(staged, model_dir, is_model_dir, refusal)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return list_checkpoints(model_dir / "checkpoints", "iter")
