"""Checkpoints: safetensors for tensors, JSON for everything else, nothing pickled.

A checkpoint ``iter-0000500`` is two files: ``iter-0000500.safetensors`` (weights, and
for resumable ones the AdamW moments and RNG states) and ``iter-0000500.json`` (model
config, vocabulary, iteration, metrics, and the SHA-256 of the tensor file). The tensor
file is written first and the JSON last, each to a temp name and renamed, so a checkpoint
whose JSON exists is complete; the checksum catches truncation or tampering afterwards.

Two kinds live side by side in ``models/<corpus>/checkpoints/``:
``iter-*`` history checkpoints (weights only; the analyses load them) and ``resume-*``
checkpoints (weights + optimizer + RNG; ``--resume`` continues from the newest valid one).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch

from domaingpt.core.faults import fault_point
from domaingpt.core.io import atomic_write_bytes, atomic_write_text, record_dict
from domaingpt.data.corpus import sha256_once
from domaingpt.data.tokenizer import AnyVocab, vocab_from_json
from domaingpt.errors import CheckpointError, DomainGPTError, disk_error
from domaingpt.model.gpt import GPT, GPTConfig

FORMAT = "domaingpt-checkpoint/1"
_NAME = re.compile(r"^(iter|resume)-(\d{7,})\.json$")
TIED = "head.weight"  # shares storage with tok_emb.weight; saved once


def _number(value: Any) -> float | None:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _dict(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


@dataclass(frozen=True)
class CheckpointMeta:
    """What the writer of a checkpoint says about it: training, adaptation or an import.

    Every field may be missing from a file (an older version's, an imported model's), so
    each defaults to ``None``; a value of the wrong type reads as missing. Keys this
    version does not know (an imported record's) are kept in ``extra`` and written back.
    """

    corpus: str | None = None  # the corpus the model was last trained on
    corpus_sha256: str | None = None
    val_loss: float | None = None  # on the validation split, at this iteration
    tokens_seen: int | None = None
    config: dict[str, Any] | None = None  # the training config (RunConfig.to_dict())
    source_model: str | None = None  # an adapted model's: what it was adapted from
    source_iteration: int | None = None  # ... the source checkpoint it started from
    target_corpus: str | None = None
    start: str | None = None  # final | early | scratch
    adapt: dict[str, Any] | None = None  # the adapt stage's result of this run
    imported_from: Any = None  # where a model trained elsewhere came from
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The record's keys (those set), as its JSON file holds them."""
        return record_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckpointMeta:
        known = {f.name for f in fields(cls)} - {"extra"}
        return cls(
            corpus=_str(data.get("corpus")),
            corpus_sha256=_str(data.get("corpus_sha256")),
            val_loss=_number(data.get("val_loss")),
            tokens_seen=_int(data.get("tokens_seen")),
            config=_dict(data.get("config")),
            source_model=_str(data.get("source_model")),
            source_iteration=_int(data.get("source_iteration")),
            target_corpus=_str(data.get("target_corpus")),
            start=_str(data.get("start")),
            adapt=_dict(data.get("adapt")),
            imported_from=data.get("imported_from"),
            extra={k: v for k, v in data.items() if k not in known and k not in FILE_KEYS},
        )


#: The keys of a checkpoint's record that describe its files (the rest is its meta).
FILE_KEYS = (
    "format",
    "kind",
    "iteration",
    "model_config",
    "vocab",
    "tensor_file",
    "tensor_sha256",
    "tensor_bytes",
)


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint's JSON says, without reading its tensors: read and written only
    by :meth:`from_dict` and :meth:`to_dict`."""

    json_path: Path
    kind: str  # "iter" (history) or "resume"
    iteration: int
    meta: CheckpointMeta = field(default_factory=CheckpointMeta)
    # GPTConfig.to_dict() and Vocab.to_json(), as the file holds them: checked when the
    # model is built (a damaged one is named with what is wrong with it)
    model_config: Any = None
    vocab: Any = None
    tensor_sha256: str | None = None
    tensor_bytes: int | None = None

    @property
    def tensor_path(self) -> Path:
        return self.json_path.with_suffix(".safetensors")

    @property
    def name(self) -> str:
        return self.json_path.stem

    @property
    def vocab_fingerprint(self) -> str | None:
        return _str(self.vocab.get("fingerprint")) if isinstance(self.vocab, dict) else None

    @property
    def block_size(self) -> int | None:
        config = self.model_config
        return _int(config.get("block_size")) if isinstance(config, dict) else None

    def to_dict(self) -> dict[str, Any]:
        """The checkpoint's JSON record."""
        return {
            "format": FORMAT,
            "kind": self.kind,
            "iteration": self.iteration,
            "model_config": self.model_config,
            "vocab": self.vocab,
            "tensor_file": self.tensor_path.name,
            "tensor_sha256": self.tensor_sha256,
            "tensor_bytes": self.tensor_bytes,
            **self.meta.to_dict(),
        }

    @classmethod
    def from_dict(cls, json_path: Path, data: Any) -> CheckpointInfo:
        """A parsed record; CheckpointError naming the file when it is not one."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise CheckpointError(
                f"{json_path} is not a domaingpt checkpoint (no {FORMAT!r} marker)"
            )
        try:
            kind, iteration = str(data["kind"]), int(data["iteration"])
        except (KeyError, ValueError, TypeError) as e:
            raise CheckpointError(f"checkpoint {json_path} has a malformed record ({e})") from None
        return cls(
            Path(json_path),
            kind,
            iteration,
            CheckpointMeta.from_dict(data),
            model_config=data.get("model_config"),
            vocab=data.get("vocab"),
            tensor_sha256=_str(data.get("tensor_sha256")),
            tensor_bytes=_int(data.get("tensor_bytes")),
        )


@dataclass
class Loaded:
    model: GPT
    vocab: AnyVocab
    info: CheckpointInfo
    tensors: dict[str, torch.Tensor]  # every tensor of the file (optimizer, RNG too)

    @property
    def iteration(self) -> int:
        return self.info.iteration

    @property
    def meta(self) -> CheckpointMeta:
        return self.info.meta


def checkpoint_stem(kind: str, iteration: int) -> str:
    return f"{kind}-{iteration:07d}"


def save_checkpoint(
    directory: Path,
    kind: str,
    iteration: int,
    model: GPT,
    vocab: AnyVocab,
    meta: CheckpointMeta,
    extra_tensors: dict[str, torch.Tensor] | None = None,
) -> CheckpointInfo:
    """Write tensors then JSON, each atomically; ``meta`` is what the writer says of it."""
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {
        f"model.{k}": v.detach().to("cpu").contiguous()
        for k, v in model.state_dict().items()
        if k != TIED
    }
    for k, v in (extra_tensors or {}).items():
        tensors[k] = v.detach().to("cpu").contiguous()
    blob = safetensors.torch.save(tensors)
    stem = checkpoint_stem(kind, iteration)
    tensor_path = directory / f"{stem}.safetensors"
    json_path = directory / f"{stem}.json"
    info = CheckpointInfo(
        json_path,
        kind,
        iteration,
        meta,
        model_config=model.config.to_dict(),
        vocab=vocab.to_json(),
        tensor_sha256=hashlib.sha256(blob).hexdigest(),
        tensor_bytes=len(blob),
    )
    try:
        # Tensors first, record last: a checkpoint without its record does not exist.
        json_path.unlink(missing_ok=True)
        atomic_write_bytes(tensor_path, blob)
        fault_point("checkpoint.tensors")
        atomic_write_text(json_path, json.dumps(info.to_dict(), indent=1, ensure_ascii=False))
        fault_point("checkpoint.record")
    except OSError as e:
        tensor_path.unlink(missing_ok=True)
        cause = disk_error(e) or f"{e.filename or tensor_path}: {e.strerror or e}"
        raise CheckpointError(
            f"cannot write checkpoint {tensor_path} ({cause}); earlier checkpoints are "
            "intact: once that is fixed, continue with --resume"
        ) from None
    return info


def read_info(json_path: Path) -> CheckpointInfo:
    """Parse a checkpoint's JSON; raises CheckpointError naming the file if it is not one."""
    try:
        data = json.loads(Path(json_path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {json_path} does not exist") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(
            f"checkpoint record {json_path} is not valid JSON ({e}): the file is corrupt; "
            "use another checkpoint (--iter) or retrain"
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise CheckpointError(f"checkpoint {json_path} is unreadable or corrupt ({e})") from None
    return CheckpointInfo.from_dict(Path(json_path), data)


def list_checkpoints(directory: Path, kind: str = "iter") -> list[CheckpointInfo]:
    """Checkpoints of one kind in ``directory`` by iteration; unreadable JSONs are skipped."""
    found = []
    if not directory.is_dir():
        return found
    for path in directory.iterdir():
        m = _NAME.match(path.name)
        if m and m.group(1) == kind:
            try:
                found.append(read_info(path))
            except CheckpointError:
                continue
    return sorted(found, key=lambda c: c.iteration)


def read_tensors(info: CheckpointInfo) -> dict[str, torch.Tensor]:
    """Load the tensor file after checking its size and SHA-256 against the JSON record."""
    path = info.tensor_path
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint tensor file {path} is missing") from None
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from None
    if len(blob) != info.tensor_bytes or hashlib.sha256(blob).hexdigest() != info.tensor_sha256:
        raise CheckpointError(
            f"checkpoint {path} is truncated or altered (checksum mismatch); "
            "use an earlier checkpoint or retrain"
        )
    try:
        return safetensors.torch.load(blob)
    except (safetensors.SafetensorError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path} is not a valid safetensors file ({e})") from None


def build_model(info: CheckpointInfo, tensors: dict[str, torch.Tensor]) -> GPT:
    try:
        if info.model_config is None:
            raise KeyError("model_config")
        config = GPTConfig.from_dict(info.model_config, f"checkpoint {info.json_path}")
    except (KeyError, TypeError, DomainGPTError) as e:
        raise CheckpointError(
            f"checkpoint {info.json_path} has no valid model config ({e})"
        ) from None
    state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        config.check_state(state, f"checkpoint {info.json_path}")  # before allocating the model
    except DomainGPTError as e:
        raise CheckpointError(str(e)) from None
    model = GPT(config)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[:2]
        raise CheckpointError(
            f"checkpoint {info.tensor_path} does not fit its model config: {' '.join(first)}"
        ) from None
    if set(missing) - {TIED} or unexpected:
        raise CheckpointError(
            f"checkpoint {info.tensor_path} does not fit the model: missing {sorted(set(missing) - {TIED})}, "
            f"unexpected {sorted(unexpected)}"
        )
    model.head.weight = model.tok_emb.weight  # re-tie after loading
    return model


def load_checkpoint(info: CheckpointInfo, device: torch.device | str = "cpu") -> Loaded:
    tensors = read_tensors(info)
    model = build_model(info, tensors).to(device)
    try:
        if info.vocab is None:
            raise KeyError("vocab")
        vocab = vocab_from_json(info.vocab)
    except (KeyError, DomainGPTError) as e:  # no record, or a malformed or altered one
        raise CheckpointError(
            f"checkpoint {info.json_path} has no valid vocabulary ({e})"
        ) from None
    if vocab.size != model.config.vocab_size:
        raise CheckpointError(
            f"checkpoint {info.json_path}: vocabulary of {vocab.size} ids does not match "
            f"model vocab_size {model.config.vocab_size}"
        )
    model.eval()
    return Loaded(model, vocab, info, tensors)


def newest_valid(
    directory: Path, kind: str = "resume", warn=None, before: int | None = None
) -> Loaded | None:
    """The newest checkpoint of ``kind`` whose checksum verifies (and, with ``before``,
    whose iteration is less); skips (and reports) bad ones."""
    for info in reversed(list_checkpoints(directory, kind)):
        if before is not None and info.iteration >= before:
            continue
        try:
            return load_checkpoint(info)
        except CheckpointError as e:
            if warn:
                warn(f"skipping {info.name}: {e}")
    return None


#: Suffixes of PyTorch's pickled checkpoints (nanoGPT writes ``out/ckpt.pt``).
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle")


def _looks_pickled(path: Path) -> bool:
    """A PyTorch pickle (``torch.save``: a zip archive, or a bare pickle stream)."""
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(2)
    except OSError:
        return False
    return head[:2] == b"PK" or (len(head) == 2 and head[0] == 0x80 and head[1] <= 5)


def _pickle_error(path: Path) -> CheckpointError:
    return CheckpointError(
        f"{path} is a PyTorch pickle checkpoint (like nanoGPT's ckpt.pt); domaingpt never "
        "unpickles files freely (loading one can run arbitrary code) and reads only its own "
        "checkpoints, a .safetensors file with its .json record: import a nanoGPT "
        "checkpoint with `domaingpt import-nanogpt CKPT --out RUN --name NAME` (it reads "
        "tensors only), or train a model with `domaingpt train CORPUS --out RUN`, and "
        "use RUN/models/NAME"
    )


def _iteration_of(path: Path) -> int:
    m = _NAME.match(path.name)
    return int(m.group(2)) if m else -1


def _unreadable(directory: Path, iteration: int | None = None) -> list[Path]:
    """History checkpoint records in ``directory`` that do not parse (all, or one)."""
    if not directory.is_dir():
        return []
    bad = []
    for path in sorted(directory.glob("iter-*.json")):
        if _NAME.match(path.name) is None or iteration not in (None, _iteration_of(path)):
            continue
        try:
            read_info(path)
        except CheckpointError:
            bad.append(path)
    return bad


def damaged_checkpoints(directory: Path, kind: str = "iter") -> list[tuple[int, str]]:
    """``(iteration, why)`` of each checkpoint of ``kind`` in ``directory`` that is not
    whole: a record that does not parse, or a tensor file missing or not of the size and
    SHA-256 its record holds. Each file is read once per process (unchanged since)."""
    found = []
    if not directory.is_dir():
        return found
    for path in sorted(directory.glob(f"{kind}-*.json")):
        if _NAME.match(path.name) is None:
            continue
        try:
            info = read_info(path)
        except CheckpointError as e:
            found.append((_iteration_of(path), str(e)))
            continue
        tensors = info.tensor_path
        if not tensors.is_file():
            found.append((info.iteration, f"checkpoint tensor file {tensors} is missing"))
        elif (
            tensors.stat().st_size != info.tensor_bytes
            or sha256_once(tensors) != info.tensor_sha256
        ):
            found.append(
                (
                    info.iteration,
                    f"checkpoint {tensors} is truncated or altered (checksum mismatch)",
                )
            )
    return found


def history_checkpoints(directory: Path) -> list[CheckpointInfo]:
    """Every history checkpoint in ``directory``; a record that does not parse is named
    (raised), never left out: "all" never silently means "all but one"."""
    bad = _unreadable(directory)
    if bad:
        read_info(bad[0])  # raises, naming it and what is wrong with it
    return list_checkpoints(directory, "iter")


def find_checkpoint(target: str | Path, iteration: int | str | None = "final") -> CheckpointInfo:
    """What a user passes on the command line -> one history checkpoint.

    ``target`` is a model directory (``runs/x/models/shakespeare``), its ``checkpoints``
    folder, or a checkpoint's ``.json``/``.safetensors`` file. ``iteration`` is an int,
    ``"final"`` (the newest history checkpoint) or ``None`` (same as final). A record
    that does not parse is named with its error, not skipped as if it were absent; a
    pickled checkpoint (nanoGPT's ``ckpt.pt``) is named as such.
    """
    path = Path(target)
    if path.suffix in (".json", ".safetensors"):
        json_path = path.with_suffix(".json")
        if not json_path.exists() and path.exists():
            raise CheckpointError(
                f"{path} has no {json_path.name} beside it; a domaingpt checkpoint is a "
                ".safetensors file with its .json record"
            )
        return read_info(json_path)
    if not path.exists():
        raise CheckpointError(f"model directory {path} does not exist; train a model first")
    if path.is_file():
        if _looks_pickled(path):
            raise _pickle_error(path)
        raise CheckpointError(
            f"{path} is not a domaingpt checkpoint: give a model directory "
            "(RUN/models/CORPUS) or a checkpoint's .json file"
        )
    directory = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    history = list_checkpoints(directory, "iter")
    wanted = None
    if iteration not in (None, "final"):
        try:
            wanted = int(iteration)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise CheckpointError(
                f"checkpoint iteration must be an integer or 'final', got {iteration!r}"
            ) from None
    bad = _unreadable(directory, wanted)
    if not history:
        if bad:
            read_info(bad[-1])  # raises: names the file and what is wrong with it
        pickles = [p for p in sorted(directory.iterdir()) if p.is_file() and _looks_pickled(p)]
        if pickles:
            raise _pickle_error(pickles[0])
        raise CheckpointError(f"no checkpoints in {directory}; train a model there first")
    if wanted is None:
        newer = [p for p in bad if _iteration_of(p) > history[-1].iteration]
        if newer:
            read_info(newer[-1])  # the final checkpoint is damaged: say so, never fall back
        return history[-1]
    for info in history:
        if info.iteration == wanted:
            return info
    if bad:
        read_info(bad[0])
    have = ", ".join(str(c.iteration) for c in history)
    raise CheckpointError(f"no checkpoint at iteration {wanted} in {directory}; available: {have}")


def parse_checkpoint_selection(spec: str | list[int]) -> str | list[int]:
    """``"final"`` | ``"all"`` | sorted iterations, from a string or a list."""
    if isinstance(spec, list):
        items: list[Any] = spec
    else:
        text = str(spec).strip().lower()
        if text in ("final", "all"):
            return text
        items = [t.strip() for t in text.split(",") if t.strip()]
    try:
        iterations = sorted({int(t) for t in items})
    except (TypeError, ValueError):
        raise CheckpointError(
            f"checkpoints must be 'final', 'all' or iterations like 0,500,2000; got {spec!r}"
        ) from None
    if not iterations or iterations[0] < 0:
        raise CheckpointError(
            f"checkpoints must be 'final', 'all' or iterations >= 0 like 0,500,2000; got {spec!r}"
        )
    return iterations


def select_checkpoints(model_dir: Path, selection: str | list[int]) -> list[CheckpointInfo]:
    """History checkpoints of a model: the final one, all of them, or given iterations."""
    history = list_checkpoints(model_dir / "checkpoints", "iter")
    if not history:
        raise CheckpointError(f"no checkpoints in {model_dir / 'checkpoints'}; train it first")
    selection = parse_checkpoint_selection(selection)
    if selection == "final":
        return [find_checkpoint(model_dir)]  # a damaged final record is named, not skipped
    if selection == "all":
        return history_checkpoints(model_dir / "checkpoints")
    return [find_checkpoint(model_dir, it) for it in selection]
