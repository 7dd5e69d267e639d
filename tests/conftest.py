"""Shared fixtures: the real corpora, a private cache, the command line in-process, and
the runs several test modules read (trained once per session).

The tests mirror the package: ``tests/core`` tests ``domaingpt/core``, ``tests/stages/softmax``
the probe stage, and so on. Fast unit tests (claims on hand-made tables, statistics,
contract checks) sit beside the integration tests that train small models on real text.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import torch

from domaingpt.cli import main
from domaingpt.context.rundir import RunDir
from domaingpt.context.stage import Stage, StageContext, Tables, run_stage
from domaingpt.context.vocabulary import shared_vocab
from domaingpt.core.config import RunConfig, build_config
from domaingpt.data.corpus import Corpus, resolve_corpus
from domaingpt.data.encoding import encode_corpus
from domaingpt.data.vocab import Vocab
from domaingpt.model.checkpoint import (
    CheckpointMeta,
    find_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from domaingpt.study import StudyResult, load_study, run_study
from domaingpt.study.pipeline import BUILTIN_STAGES, REPORT
from domaingpt.training.loop import TrainResult, train
from domaingpt.training.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]


def run_one(
    stage: Stage, run: RunDir | Path, settings: object = None, **context: object
) -> dict[str, Path]:
    """Run one stage the way its command does (the runner's contract: tables, settings,
    claims written), quietly; what it wrote."""
    run = run if isinstance(run, RunDir) else RunDir(Path(run))
    context = {"progress": False, "log": lambda m: None, **context}
    context.setdefault("stages", (*BUILTIN_STAGES, REPORT))
    ctx = StageContext(run=run, stage=stage, **context)  # type: ignore[arg-type]
    return run_stage(ctx, settings if settings is not None else stage.settings())[0]


def read_one(stage: Stage, run: RunDir | Path) -> Tables:
    """A stage's tables read back from ``run``."""
    return stage.read(run if isinstance(run, RunDir) else RunDir(Path(run)))


# The corpus and download tests read the real files here: $DOMAINGPT_DATA, else
# ../shared/data (unlike real_data_dir, no fall-back from the one to the other).
REAL_DATA = Path(os.environ.get("DOMAINGPT_DATA") or REPO / ".." / "shared" / "data").resolve()


def real_data_dir() -> Path | None:
    env = os.environ.get("DOMAINGPT_DATA")
    for candidate in (Path(env) if env else None, REPO.parent / "shared" / "data"):
        if candidate and (candidate / "shakespeare.txt").is_file():
            return candidate
    return None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = real_data_dir()
    if d is None:
        pytest.skip(
            "real corpora not found (set DOMAINGPT_DATA or put ../shared/data beside the repo)"
        )
    return d


@pytest.fixture
def real_file() -> Callable[[str], Path]:
    """A function giving ``REAL_DATA / name``; it skips the test when that file is missing."""

    def get(name: str) -> Path:
        path = REAL_DATA / name
        if not path.is_file():
            pytest.skip(f"real corpora not found in {REAL_DATA} (set DOMAINGPT_DATA)")
        return path

    return get


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    # One cache for the whole session (encoded corpora and the native kernels are reused
    # across tests), never ~/.cache. Session-scoped, so session fixtures that train or
    # encode already see it.
    cache = tmp_path_factory.getbasetemp() / "xdg-cache"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(cache))
        mp.setenv("DOMAINGPT_OFFLINE", "1")
        if os.environ.get("DOMAINGPT_DATA"):  # .ci/run gives ../shared/data: tests change dir
            mp.setenv("DOMAINGPT_DATA", str(Path(os.environ["DOMAINGPT_DATA"]).resolve()))
        yield


@contextmanager
def _threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def single_thread() -> Iterator[None]:
    """One torch thread for a whole test module: on a busy 2-core machine two OpenMP
    threads make small matrix products many times slower (spinning at barriers)."""
    with _threads(1):
        yield


# --- the command line, in-process ------------------------------------------------------


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """``cli(*argv)``: exit status, stdout and stderr of ``domaingpt *argv``."""

    def run(*argv: object) -> tuple[int, str, str]:
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def cli_error(capsys: pytest.CaptureFixture[str]) -> Callable[..., str]:
    """``cli_error(*argv)``: stderr of a command that must fail with one ``error:`` line."""

    def run(*argv: object) -> str:
        code = main([str(a) for a in argv])
        err = capsys.readouterr().err
        assert code == 2, err
        assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
        return err

    return run


@pytest.fixture(scope="session")
def train_smoke(data_dir: Path) -> Callable[..., int]:
    """``train_smoke(out, *overrides, corpus=, quiet=, extra=)``: the exit status of
    ``domaingpt train CORPUS --preset smoke`` into ``out``; each override is a ``--set``."""

    def run(
        out: Path,
        *overrides: str,
        corpus: str = "shakespeare",
        quiet: bool = True,
        extra: Sequence[str] = (),
    ) -> int:
        argv = ["train", corpus, "--preset", "smoke", "--out", str(out)]
        argv += ["--data-dir", str(data_dir)]
        if quiet:
            argv.append("--quiet")
        for item in overrides:
            argv += ["--set", item]
        return main([*argv, *extra])

    return run


# --- the smoke study, run once ---------------------------------------------------------


@dataclass
class SmokeRun:
    root: Path
    result: StudyResult
    log: list[str]
    seconds: float

    def copy(self, dest: Path) -> Path:
        """A private copy of the shared run, for tests that change it."""
        shutil.copytree(self.root, dest)
        return dest


@pytest.fixture(scope="session")
def smoke_study(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> SmokeRun:
    """The ``smoke`` study on the three real corpora, run once per test session."""
    out = tmp_path_factory.getbasetemp() / "smoke-study"
    log: list[str] = []
    t0 = time.perf_counter()
    result = run_study(
        load_study(preset="smoke"), out, data_dir=data_dir, progress=False, log=log.append
    )
    return SmokeRun(out, result, log, time.perf_counter() - t0)


# --- one small model on real Shakespeare, and an adapted one ---------------------------


def train_quietly(run: RunDir, corpus: Corpus, vocab: Vocab, cfg: RunConfig) -> TrainResult:
    """Train ``corpus``'s model into ``run`` on its train/val split, with no output."""
    enc = encode_corpus(corpus, vocab)
    tr, va = enc.checked_split(cfg.data.val_fraction, cfg.model.block_size)
    return train(
        corpus.name,
        corpus.sha256,
        tr,
        va,
        vocab,
        cfg,
        run.model(corpus.name),
        progress=False,
        log=lambda m: None,
    )


@pytest.fixture(scope="session")
def quiet_trainer() -> Callable[[RunDir, Corpus, Vocab, RunConfig], TrainResult]:
    return train_quietly


@dataclass(frozen=True)
class TrainedRun:
    """A run with models/shakespeare and one adapted model (Shakespeare -> Math)."""

    run: RunDir
    iters: int
    checkpoints: list[int]


@pytest.fixture(scope="session")
def shakespeare_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> TrainedRun:
    """A 300-iteration model on real Shakespeare (checkpoints 0, 50, 150, 300), and a
    few-shot model laid out as ``adapt`` writes it: 30 steps on Math from the final one."""
    iters, checkpoints = 300, [0, 50, 150, 300]
    overrides = [
        f"train.max_iters={iters}",
        "train.batch_size=32",
        "train.lr=6e-3",
        "train.min_lr=6e-4",
        "model.n_embd=64",
        "model.n_head=4",
        "train.eval_interval=0",
        "train.eval_tokens=2048",
        "train.sample_chars=10",
        f"train.checkpoints={checkpoints}",
        "train.threads=1",
    ]
    run = RunDir(tmp_path_factory.getbasetemp() / "interpret-run")
    with _threads(1):
        corpora = [resolve_corpus(n, data_dir) for n in ("shakespeare", "math", "wikipedia")]
        vocab = shared_vocab(run, corpora, print)
        cfg = build_config("smoke", overrides)
        shakespeare, math = corpora[0], corpora[1]
        train_quietly(run, shakespeare, vocab, cfg)
        start = load_checkpoint(find_checkpoint(run.model("shakespeare")))
        math_train, _ = encode_corpus(math, vocab).split(cfg.data.val_fraction)
        spec = replace(cfg.train, max_iters=30, warmup_iters=0, seed=5)
        trainer = Trainer(start.model, spec, math_train, torch.device("cpu"))
        for _ in range(30):
            trainer.step()
        out = run.adapted / "shakespeare__to__math" / "final" / "seed0" / "checkpoints"
        meta = CheckpointMeta(corpus="math", source_model="shakespeare", source_iteration=iters)
        save_checkpoint(out, "iter", 30, start.model.eval(), vocab, meta)
    return TrainedRun(run, iters, checkpoints)
