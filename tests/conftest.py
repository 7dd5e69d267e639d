"""Shared fixtures: three small corpora the tests write themselves, the real corpora, a
private cache, the command line in-process, and the runs several test modules read
(trained once per session).

The tests mirror the package: ``tests/core`` tests ``domaingpt/core``, ``tests/stages/softmax``
the probe stage, and so on. Fast unit tests (claims on hand-made tables, statistics,
contract checks) sit beside the integration tests that train small models on text.

Tests that need only *some* text in three domains use :func:`corpora`, written by the
session itself, so they run anywhere. Only tests about the real corpora themselves (their
checksums, the download, the study's published numbers) use ``data_dir`` / ``real_file``
and skip without them.
"""

from __future__ import annotations

import os
import random
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
from domaingpt.study import StudyResult, StudySpec, load_study, run_study
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


# --- three small synthetic corpora -----------------------------------------------------

#: The names of the synthetic corpora: the built-in domains' names, so that the stages'
#: claims about Shakespeare, Math and Wikipedia (keyed by name) are computed on them too.
#: Given as paths they are user corpora (checked against their own SHA-256, not the
#: registry's), as ``README.md`` ("your own corpus") describes.
CORPUS_NAMES = ("shakespeare", "math", "wikipedia")
_CORPUS_CHARS = 20_000  # per corpus: enough for the smoke preset's splits and prompts


def _verse(rng: random.Random) -> str:
    """Speakers in capitals, short lines of plain words: Tiny Shakespeare's shape, ASCII."""
    speakers = ("ROMEO", "JULIET", "KING HENRY", "LADY ANNE", "FIRST CITIZEN", "NURSE")
    words = (
        "thou", "thee", "thy", "love", "night", "day", "sweet", "lord", "heart", "death",
        "king", "crown", "fair", "grace", "good", "noble", "blood", "speak", "tongue",
        "heaven", "earth", "sorrow", "honour", "hath", "doth", "shall", "would", "gentle",
        "true", "eyes", "hand", "sword", "peace", "war", "name", "soul", "tears"
    )  # fmt: skip
    out: list[str] = []
    while sum(map(len, out)) < _CORPUS_CHARS:
        out.append(rng.choice(speakers) + ":\n")
        for _ in range(rng.randint(1, 4)):
            line = " ".join(rng.choice(words) for _ in range(rng.randint(4, 9)))
            out.append(line[0].upper() + line[1:] + rng.choice(",.;!?") + "\n")
        out.append("\n")
    return "".join(out)


def _math(rng: random.Random) -> str:
    """Problems and solutions in LaTeX: digits, operators, braces and backslashes."""
    out: list[str] = []
    while sum(map(len, out)) < _CORPUS_CHARS:
        a, b, c, v = (
            rng.randint(2, 99),
            rng.randint(1, 999),
            rng.randint(-50, 50),
            rng.choice("xyznk"),
        )
        kind = rng.randrange(3)
        if kind == 0:
            p = f"Solve for ${v}$: ${a}{v} + {b} = {c}$."
            s = f"Subtracting {b} gives ${a}{v} = {c - b}$, so ${v} = \\frac{{{c - b}}}{{{a}}}$."
        elif kind == 1:
            p = f"What is the remainder when ${a}^{{{rng.randint(2, 9)}}}$ is divided by {b}?"
            s = f"Working modulo ${b}$, we find $\\boxed{{{rng.randrange(b)}}}$."
        else:
            p = f"Compute $\\sqrt{{{a * a}}} + \\left({b} \\cdot {abs(c)}\\right)$"
            p += ", with $0 < a$ and $b > 1$."
            s = f"We have $\\sqrt{{{a * a}}} = {a}$, so the answer is $\\boxed{{{a + b * abs(c)}}}$."
        out.append(f"Problem: {p}\nSolution: {s}\n\n")
    return "".join(out)


def _encyclopedia(rng: random.Random) -> str:
    """WikiText's shape (`` = Title = ``, `` @,@ ``, spaced full stops) with non-ASCII:
    accented Latin (é among them), Greek, Cyrillic, CJK and Devanagari names, km² and °C."""
    titles = (
        "Zürich",
        "São Paulo",
        "Kraków",
        "Tōkyō",
        "Ελλάδα",
        "Москва",
        "Île-de-France",
        "Dvořák",
        "Orléans",
        "東京都",
        "हिन्दी",
    )
    words = (
        "the", "of", "and", "in", "was", "a", "to", "is", "for", "on", "by", "with", "as",
        "from", "at", "his", "an", "which", "that", "its", "were", "city", "river",
        "century", "population", "museum", "history", "located", "national", "during",
        "first", "built", "church", "council", "railway", "government", "station",
        "university", "region"
    )  # fmt: skip
    out: list[str] = []
    while sum(map(len, out)) < _CORPUS_CHARS:
        title = rng.choice(titles)
        out.append(f" = {title} = \n\n")
        for _ in range(rng.randint(2, 4)):
            sentences = []
            for _ in range(rng.randint(2, 4)):
                ws = [rng.choice(words) for _ in range(rng.randint(6, 14))]
                fact = rng.choice((
                    title,
                    str(rng.randint(1200, 2020)),
                    f"{rng.randint(1, 99)} @,@ {rng.randint(100, 999)}",
                    f"{rng.randint(1, 40)} km²",
                    f"{rng.randint(1, 60)} °C",
                    f"{rng.randint(20, 300)} km/h",
                    f'" {title} & {rng.choice(words)} "',
                    f"≥ {rng.randint(2, 9)}",
                ))  # fmt: skip
                ws.insert(rng.randrange(len(ws)), fact)
                sentence = " ".join(ws)
                sentences.append(sentence[0].upper() + sentence[1:] + " .")
            out.append(" " + " ".join(sentences) + " \n")
        out.append("\n")
    return "".join(out)


@dataclass(frozen=True)
class Corpora:
    """The synthetic corpora: ``<dir>/<name>.txt`` for each of :data:`CORPUS_NAMES`, and
    ``<dir>/smoke.toml``, the smoke study on them."""

    dir: Path
    names = CORPUS_NAMES

    def path(self, name: str) -> Path:
        return self.dir / f"{name}.txt"

    @property
    def paths(self) -> list[Path]:
        return [self.path(n) for n in CORPUS_NAMES]

    @property
    def vocab(self) -> str:
        """``--vocab``'s value: the three corpora (else ``train`` adds the built-in ones)."""
        return ",".join(str(p) for p in self.paths)

    @property
    def study(self) -> Path:
        return self.dir / "smoke.toml"

    @property
    def line(self) -> str:
        """A study file's line naming them (under ``[study]``)."""
        return "corpora = [" + ", ".join(f'"{p}"' for p in self.paths) + "]\n"

    def resolve(self, name: str) -> Corpus:
        return resolve_corpus(str(self.path(name)))

    def smoke(self) -> StudySpec:
        """The smoke study on these corpora: ``domaingpt run STUDY --preset smoke``."""
        return load_study(self.study, preset="smoke")


def write_corpora(directory: Path) -> Corpora:
    """Write the three corpora (about 20,000 characters each, the same bytes every time:
    each from its own seeded generator) and the smoke study file naming them."""
    directory.mkdir(parents=True, exist_ok=True)
    for seed, (name, make) in enumerate(
        zip(CORPUS_NAMES, (_verse, _math, _encyclopedia), strict=True)
    ):
        (directory / f"{name}.txt").write_text(make(random.Random(seed)), encoding="utf-8")
    (directory / "smoke.toml").write_text(
        '[study]\nname = "smoke"\ncorpora = ["shakespeare.txt", "math.txt", "wikipedia.txt"]\n'
    )
    return Corpora(directory)


@pytest.fixture(scope="session")
def corpora(tmp_path_factory: pytest.TempPathFactory) -> Corpora:
    """The synthetic corpora, written once per session (tests must not change them)."""
    return write_corpora(tmp_path_factory.getbasetemp() / "corpora")


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
def train_smoke(corpora: Corpora) -> Callable[..., int]:
    """``train_smoke(out, *overrides, corpus=, quiet=, extra=)``: the exit status of
    ``domaingpt train CORPUS --preset smoke`` into ``out``, CORPUS one of the synthetic
    corpora (by name) and the vocabulary theirs; each override is a ``--set``."""

    def run(
        out: Path,
        *overrides: str,
        corpus: str = "shakespeare",
        quiet: bool = True,
        extra: Sequence[str] = (),
    ) -> int:
        argv = ["train", str(corpora.path(corpus)), "--preset", "smoke", "--out", str(out)]
        argv += ["--vocab", corpora.vocab]
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
def smoke_study(tmp_path_factory: pytest.TempPathFactory, corpora: Corpora) -> SmokeRun:
    """The ``smoke`` study on the three synthetic corpora, run once per test session."""
    out = tmp_path_factory.getbasetemp() / "smoke-study"
    log: list[str] = []
    t0 = time.perf_counter()
    result = run_study(corpora.smoke(), out, progress=False, log=log.append)
    return SmokeRun(out, result, log, time.perf_counter() - t0)


# --- one small model on the verse corpus, and an adapted one ---------------------------


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
def shakespeare_run(tmp_path_factory: pytest.TempPathFactory, corpora: Corpora) -> TrainedRun:
    """A 300-iteration model on the synthetic ``shakespeare`` (checkpoints 0, 50, 150,
    300), and a few-shot model laid out as ``adapt`` writes it: 30 steps on ``math`` from
    the final one."""
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
        found = [corpora.resolve(n) for n in CORPUS_NAMES]
        vocab = shared_vocab(run, found, print)
        cfg = build_config("smoke", overrides)
        shakespeare, math = found[0], found[1]
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
