"""Models trained elsewhere in a study: analysis-only studies.

A study file may give, for some or all of its corpora, a model to analyse instead of
one to train::

    [study]
    corpora = ["shakespeare", "math", "wikipedia"]
    models = { shakespeare = "nanogpt:out-shakespeare", math = "hf:hf/math",
               wikipedia = "runs/other/models/wikipedia" }

The key is the corpus the model was trained on (its domain: a name of ``corpora``); the
value says where the model is:

* ``nanogpt:PATH`` — nanoGPT checkpoints: a ``ckpt.pt``, the out_dir holding one, or a
  folder of such out_dirs / ``.pt`` files (a history, ordered by ``iter_num``); the
  vocabulary is a ``meta.pkl`` beside a checkpoint or in PATH, else the corpus's sorted
  characters (:mod:`domaingpt.interop.nanogpt`);
* ``hf:PATH`` — a Hugging Face GPT-2 character model folder, or a folder of ``stepN``
  ones (:mod:`domaingpt.interop.importer`);
* any other PATH — a domaingpt model directory of another run (``RUN/models/NAME``),
  its history checkpoints copied with their checksums.

The train stage imports these into ``models/<corpus>`` (every model of a run shares its
vocabulary, so each must use the run's) and trains the others; every stage after it runs
on all of them alike, and the report says where each came from (``run.json``:
``imported_from``). Paths are relative to the study file.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from domaingpt.context.rundir import RunDir, read_run_json
from domaingpt.core.progress import Log
from domaingpt.data.corpus import Corpus
from domaingpt.data.subword import SubwordVocab
from domaingpt.data.tokenizer import AnyVocab, vocab_from_json
from domaingpt.errors import ConfigError, DomainGPTError
from domaingpt.interop.importer import model_folders, read_vocab
from domaingpt.model.checkpoint import list_checkpoints, read_tensors
from domaingpt.training.modeldir import is_model_dir, write_record

KINDS = ("nanogpt", "hf")


def split_source(source: str) -> tuple[str, str]:
    """``("nanogpt" | "hf" | "domaingpt", path)`` of a ``[study] models`` value."""
    kind, sep, path = source.partition(":")
    if sep and kind in KINDS:
        return kind, path
    return "domaingpt", source


def resolve_models(value: Any, base: Path, where: str) -> dict[str, str]:
    """``[study] models`` checked: a table of corpus name -> source, paths made absolute
    against the study file's folder (``base``)."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) and v for v in value.values()):
        raise ConfigError(
            f"study.models in {where} must be a table of corpus = source, e.g. "
            '{ shakespeare = "nanogpt:out-shakespeare" }'
        )
    out = {}
    for corpus, source in value.items():
        kind, path = split_source(source)
        p = Path(path).expanduser()
        p = p if p.is_absolute() else (base / p).resolve()
        out[str(corpus)] = str(p) if kind == "domaingpt" else f"{kind}:{p}"
    return out


def check_models(models: dict[str, str], corpora: list[str], where: str) -> None:
    """Every key of ``[study] models`` names a corpus of the study."""
    unknown = [c for c in models if c not in corpora]
    if unknown:
        raise ConfigError(
            f"study.models in {where} names {', '.join(map(repr, unknown))}, not among the "
            f"study's corpora ({', '.join(corpora)}): each model is keyed by its domain corpus"
        )


def _nanogpt_files(path: Path) -> list[Path]:
    """The checkpoints a ``nanogpt:`` source names: one file, one out_dir, or a folder
    of out_dirs and ``.pt`` files."""
    if path.is_file() or (path / "ckpt.pt").is_file():
        return [path]
    if not path.is_dir():
        raise DomainGPTError(f"nanoGPT source {path} does not exist")
    found = sorted([*path.glob("*/ckpt.pt"), *path.glob("*.pt")])
    if not found:
        raise DomainGPTError(f"{path} holds no nanoGPT checkpoint (ckpt.pt or *.pt)")
    return found


def _source_files(source: str) -> list[Path]:
    """Every file an import of ``source`` reads the weights from."""
    kind, path = split_source(source)
    p = Path(path)
    if kind == "nanogpt":
        return [f / "ckpt.pt" if f.is_dir() else f for f in _nanogpt_files(p)]
    if kind == "hf":
        return sorted(p.rglob("*.safetensors")) + sorted(p.rglob("*.json"))
    return [c.tensor_path for c in list_checkpoints(p / "checkpoints", "iter")]


def source_digest(source: str) -> str:
    """SHA-256 over the files of ``source`` (their names and bytes): the train stage's
    cache key, so a changed model is imported again. Missing files digest to ''."""
    h = hashlib.sha256()
    try:
        for f in _source_files(source):
            h.update(str(f).encode() + b"\0" + hashlib.sha256(f.read_bytes()).digest())
    except (OSError, DomainGPTError):
        return ""
    return h.hexdigest()


def _copy_domaingpt(path: Path, run: RunDir, corpus: Corpus, log: Log) -> None:
    """A model directory of another run: its history checkpoints (checksums verified)
    and ``run.json``, which must name the same corpus bytes (the model keeps its vocabulary)."""
    history = list_checkpoints(path / "checkpoints", "iter")
    if not history:
        raise DomainGPTError(
            f"{path} holds no domaingpt checkpoints; give RUN/models/NAME, or prefix a "
            "nanoGPT or Hugging Face model with nanogpt: or hf:"
        )
    record = read_run_json(path)
    if record.corpus_sha256 not in (None, corpus.sha256):
        raise DomainGPTError(
            f"{path} was trained on other bytes than corpus {corpus.name} (sha256 differs); "
            "key it by the corpus it was trained on"
        )
    for info in history:
        read_tensors(info)  # raises on a truncated or altered checkpoint
    model_dir = run.model(corpus.name)
    if model_dir.exists() and not is_model_dir(model_dir):
        raise DomainGPTError(f"{model_dir} holds files domaingpt did not write there")
    staged = Path(tempfile.mkdtemp(dir=run.models, prefix=".import-"))
    try:
        (staged / "checkpoints").mkdir()
        for info in history:
            shutil.copy2(info.tensor_path, staged / "checkpoints" / info.tensor_path.name)
            shutil.copy2(info.json_path, staged / "checkpoints" / info.json_path.name)
        origin = {"format": "domaingpt", "path": str(path)}
        if record.imported_from:  # a model imported there: keep where it came from
            origin["imported_from"] = record.imported_from
        write_record(staged, replace(record, imported_from=origin))
        if model_dir.exists():
            shutil.rmtree(model_dir)
        staged.rename(model_dir)
    finally:
        if staged.exists():
            shutil.rmtree(staged)
    log(f"copied {len(history)} checkpoints of {path}")


def study_tokenizer(
    models: dict[str, str], log: Log, *, of: str | None = None
) -> SubwordVocab | None:
    """The subword tokenizer the models trained elsewhere bring to the models trained
    here (None: characters). When every such model reads one subword tokenizer, the
    study's other corpora are trained with it, so that every model of the run reads
    tokens alike; when they read different vocabularies (two tokenizers, or a subword
    model beside a character one), the study's own models read characters. ``of``: the
    corpus whose imported model's tokenizer to use whatever the others read (its
    characters, for a character model). Each model trained elsewhere keeps its own
    vocabulary either way."""
    subword: dict[str, SubwordVocab] = {}
    chars: list[str] = []  # corpora whose model reads characters (nanoGPT's always do)
    for corpus, source in models.items():
        kind, path = split_source(source)
        vocab: AnyVocab | None = None
        if kind == "hf":
            p = Path(path)
            vocab = read_vocab(model_folders(p)[-1][1] if p.is_dir() else p)
        elif kind == "domaingpt":
            history = list_checkpoints(Path(path) / "checkpoints", "iter")
            if history and history[-1].vocab is not None:
                vocab = vocab_from_json(history[-1].vocab)
        if isinstance(vocab, SubwordVocab):
            subword[corpus] = vocab
        else:
            chars.append(corpus)
    if of is not None:
        return subword.get(of)
    if not subword:
        return None
    first, tokenizer = next(iter(subword.items()))
    other = [c for c, v in subword.items() if v != tokenizer] or chars
    if other:
        log(
            f"note: the models of {first} and {other[0]} read different vocabularies; "
            "the study's own models read characters, each imported model its own vocabulary"
        )
        return None
    return tokenizer


def import_external(run: RunDir, corpus: Corpus, source: str, *, log: Log) -> None:
    """Put the model ``source`` at ``run/models/<corpus>`` (replacing an earlier import)."""
    kind, path = split_source(source)
    p = Path(path)
    run.models.mkdir(parents=True, exist_ok=True)
    if kind == "nanogpt":
        from domaingpt.interop.nanogpt import META_NAME, import_nanogpt

        meta = p / META_NAME if p.is_dir() and (p / META_NAME).is_file() else None
        import_nanogpt(
            _nanogpt_files(p),
            run.root,
            name=corpus.name,
            corpus=corpus,
            meta=meta,
            overwrite=True,
            log=log,
        )
    elif kind == "hf":
        from domaingpt.interop.importer import import_hf

        import_hf(p, run.root, name=corpus.name, overwrite=True, log=log)
        record = replace(
            read_run_json(run.model(corpus.name)),
            corpus=corpus.name,
            corpus_sha256=corpus.sha256,
            imported_from={"format": "hf", "path": str(p)},
        )
        if not corpus.builtin:
            record = replace(record, corpus_path=str(corpus.path))
        write_record(run.model(corpus.name), record)
    else:
        _copy_domaingpt(p, run, corpus, log)
