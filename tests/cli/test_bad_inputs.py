"""Every bad input a user can give meets a one-line error and exit status 2: never a
traceback, never a half-written result, nothing changed anywhere.

The table runs every command (run, train, sample, corpora, stats, evaluate, adapt, softmax,
saliency, quality) on a *sandbox*: a trained run, copies of it with symbolic links
planted in them, a victim file those links point to, bad corpora, presets, study files
and checkpoints. Each case is compared with the sandbox before it, file by file (listing
and SHA-256, links by target): a refused command changes nothing, anywhere. Plus property
tests with random config values and random prompts.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domaingpt.cli import main
from domaingpt.data.corpus import cache_dir

# ---------------------------------------------------------------------------------------
# The sandbox


@dataclass(frozen=True)
class Sandbox:
    root: Path
    names: dict[str, str]  # what {name} stands for in a case's arguments


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under ``root``: a folder, a link (and its target) or a file (its SHA-256)."""
    entries: dict[str, tuple] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                entries[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                entries[rel] = ("dir",)
            elif not path.is_file():  # a FIFO: reading it would wait for a writer
                entries[rel] = ("special", stat.S_IFMT(path.stat().st_mode))
            else:
                entries[rel] = ("file", hashlib.sha256(path.read_bytes()).hexdigest())
    return entries


def _plant_link(run: Path, copy: str, rel: str, target: Path) -> Path:
    """A copy of ``run`` with ``rel`` replaced by a symbolic link to ``target``."""
    dest = run.parent / copy
    shutil.copytree(run, dest, symlinks=True)
    link = dest / rel
    if link.is_dir() and not link.is_symlink():
        shutil.rmtree(link)
    else:
        link.unlink(missing_ok=True)
    link.symlink_to(target)
    return dest


def _bad_files(files: Path, corpora) -> None:
    files.mkdir()
    (files / "empty.txt").write_text("")
    (files / "binary.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" * 20)
    (files / "latin1.txt").write_bytes(b"na\xefve caf\xe9 " * 20)
    (files / "short.txt").write_text("tiny\n")
    (files / "adir.txt").mkdir()
    (files / "bad.toml").write_text("[train\nlr=")
    (files / "unknown.toml").write_text("[train]\nlearning_rate = 1e-3\n")
    (files / "wrongtype.toml").write_text('[train]\nmax_iters = "many"\n')
    (files / "empty_prompts.txt").write_text("")
    text = "To be, or not to be, that is the question.\n" * 1200  # 52,800 characters
    for name in ("..txt", "...txt", ".hidden.txt", "my notes.txt", "notes.txt"):
        (files / name).write_text(text)
    # Every study file names the synthetic corpora (the preset's are the real ones).
    study = "[study]\n" + corpora.line
    sh = corpora.path("shakespeare")
    (files / "dotdot_study.toml").write_text(f'[study]\ncorpora = ["{sh}", "..txt"]\n')
    (files / "inf_study.toml").write_text(study + "[train]\nlr = inf\n")
    (files / "seed_study.toml").write_text(study + "[evaluate]\nseed = -1\n")
    os.mkfifo(files / "fifo")  # a reader that opened it whole would wait forever
    with open(files / "big_prompts.txt", "wb") as f:  # sparse: 65 MiB on no disk space
        f.truncate(65 << 20)
    (files / "fifo_study.toml").write_text(study + '[probe]\nprompt_file = "fifo"\n')
    (files / "pairs_study.toml").write_text(study + '[adapt]\npairs = ["nosuch:shakespeare"]\n')
    (files / "target_study.toml").write_text(study + '[adapt]\npairs = ["math:nosuch"]\n')
    (files / "threads_study.toml").write_text(study + "threads = 100000\n")
    stage = (
        "from domaingpt.core.settings import StageSettings\n"
        "from domaingpt.context.stage import Stage\n"
        "class {cls}Settings(StageSettings):\n    pass\n"
        "stage = Stage(name={name!r}, title='t', settings={cls}Settings,\n"
        "              run=lambda ctx, s: {{}})\n"
    )
    for module, name in (("named_report", "report"), ("in_models", "models")):
        (files / f"{module}.py").write_text(
            stage.format(cls=module.title().replace("_", ""), name=name)
        )
        (files / f"{module}_study.toml").write_text(study + f'stages = ["{module}:stage"]\n')
    (files / "exiting.py").write_text("import sys\nsys.exit(0)\n")
    (files / "exiting_study.toml").write_text(study + 'stages = ["exiting:stage"]\n')
    fake = files / "ckpt" / "iter-0000001.safetensors"
    fake.parent.mkdir()
    fake.write_bytes(b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00}\x94.")
    fake.with_suffix(".json").write_text('{"format": "something-else"}')
    nano = files / "nano" / "out"
    nano.mkdir(parents=True)
    torch.save({"model": {"w": torch.zeros(2)}, "iter_num": 5}, nano / "ckpt.pt")


def _edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    edit(data)
    path.write_text(json.dumps(data), encoding="utf-8")


def _tampered_copies(run: Path, root: Path) -> dict[str, str]:
    """Copies of the run (and of an export of its model) with one file edited the way a
    damaged or hostile file would be: {name: path} for the table."""
    out: dict[str, str] = {}

    def copy(name: str) -> Path:
        dest = root / name
        shutil.copytree(run, dest, symlinks=True)
        out[name] = str(dest)
        return dest

    final = sorted((run / "models/shakespeare/checkpoints").glob("iter-*.json"))[-1].name
    for name, n_embd in (("huge_embd", 32768), ("wrong_embd", 64)):
        record = copy(name) / "models/shakespeare/checkpoints" / final
        _edit_json(record, lambda d, n=n_embd: d["model_config"].update(n_embd=n))
    _edit_json(copy("config_text") / "models/shakespeare/run.json", lambda d: d.update(config="x"))
    (copy("study_array") / "study.json").write_text("[1, 2]\n")
    if importlib.util.find_spec("tokenizers") is None:  # the interop extra: export needs it
        return out
    export = root / "export"
    assert main(["export", str(run / "models/shakespeare"), str(export), "--quiet"]) == 0

    def tokens(d: dict, token_id: object) -> None:
        d["model"]["vocab"]["a"] = token_id

    edits = {
        "hf_embd_text": ("config.json", lambda d: d.update(n_embd="abc")),
        "hf_eps_text": ("config.json", lambda d: d.update(layer_norm_epsilon="tiny")),
        "hf_added_text": ("tokenizer.json", lambda d: d["added_tokens"][0].update(id="zero")),
        "hf_id_huge": ("tokenizer.json", lambda d: tokens(d, 2_000_000_000)),
        "hf_id_negative": ("tokenizer.json", lambda d: tokens(d, -1)),
    }
    for name, (file, edit) in edits.items():
        dest = root / name
        shutil.copytree(export, dest)
        _edit_json(dest / file, edit)
        out[name] = str(dest)
    return out


@pytest.fixture(scope="module")
def sandbox(train_smoke, corpora, tmp_path_factory) -> Sandbox:
    root = tmp_path_factory.mktemp("sandbox")
    run = root / "run"
    assert train_smoke(run, "train.max_iters=20", "train.threads=1") == 0
    victim = root / "victim.txt"
    victim.write_text("a file outside every run directory\n")
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("a folder outside every run directory\n")
    files = root / "files"
    _bad_files(files, corpora)
    badjson = root / "badjson"
    shutil.copytree(run, badjson)
    record = badjson / "models" / "shakespeare" / "checkpoints" / "iter-0000000.json"
    record.write_text(record.read_text().replace('"format"', '"format" oops', 1))
    model = run / "models" / "shakespeare"
    tampered = _tampered_copies(run, root)
    names = {
        "box": str(root),
        "run": str(run),
        "model": str(model),
        "files": str(files),
        "victim": str(victim),
        "badjson": str(badjson / "models" / "shakespeare"),
        "linked_lock": str(_plant_link(run, "linked_lock", ".lock", victim)),
        "linked_log": str(_plant_link(run, "linked_log", "log.txt", victim)),
        "linked_metrics": str(
            _plant_link(run, "linked_metrics", "models/shakespeare/metrics.jsonl", victim)
        ),
        "linked_model": str(_plant_link(run, "linked_model", "models/shakespeare", elsewhere)),
        "long": "x" * 300,  # a file name longer than any file system allows (255 bytes)
        "shakespeare": str(corpora.path("shakespeare")),
        "study": str(corpora.study),
        **tampered,
    }
    return Sandbox(root, names)


# ---------------------------------------------------------------------------------------
# The table: arguments (``{name}`` from the sandbox) and a part of the expected message

R, F, M = "{run}", "{files}", "{model}"
OUT = ["--out", R]
FRESH = ["--out", "{box}/fresh"]  # a run directory that must still not exist afterwards
SMOKE = ["--preset", "smoke"]
SH = "{shakespeare}"  # the synthetic corpus (a built-in name would need the real one)
SMOKE_RUN = ["{study}", *SMOKE]  # the smoke study on the synthetic corpora

CASES: list[tuple[str, list[str], str]] = [
    # train: corpora
    ("train-typo", ["train", "shakspeare", *FRESH], "did you mean 'shakespeare'"),
    ("train-empty", ["train", f"{F}/empty.txt", *FRESH], "empty"),
    ("train-binary", ["train", f"{F}/binary.txt", *FRESH], "binary"),
    ("train-latin1", ["train", f"{F}/latin1.txt", *FRESH], "byte offset"),
    ("train-short", ["train", f"{F}/short.txt", *SMOKE, *OUT], "too short"),
    ("train-dir", ["train", f"{F}/adir.txt", *FRESH], "directory"),
    ("train-missing", ["train", "/nonexistent/corpus.txt", *FRESH], "does not exist"),
    ("train-dot", ["train", f"{F}/..txt", *SMOKE, *OUT, "--overwrite"], "cannot name a model"),
    ("train-dotdot", ["train", f"{F}/...txt", *SMOKE, *OUT, "--overwrite"], "cannot name"),
    ("train-hidden", ["train", f"{F}/.hidden.txt", *SMOKE, *OUT], "starts with '.'"),
    ("train-space", ["train", f"{F}/my notes.txt", *SMOKE, *OUT], "holds ' '"),
    ("train-vocab", ["train", "{shakespeare}", "--vocab", "nosuch", *FRESH], "unknown corpus"),
    # train: configuration
    ("train-bad-toml", ["train", SH, "--preset", f"{F}/bad.toml"], "not valid TOML"),
    ("train-key", ["train", SH, "--preset", f"{F}/unknown.toml"], "unknown config"),
    ("train-type", ["train", SH, "--preset", f"{F}/wrongtype.toml"], "an integer"),
    ("train-preset", ["train", SH, "--preset", "nope"], "unknown preset"),
    ("train-iters", ["train", SH, "--set", "train.max_iters=-5"], "at least 1"),
    ("train-lr0", ["train", SH, "--set", "train.lr=0"], "train.lr"),
    ("train-lr-inf", ["train", SH, "--set", "train.lr=inf"], "finite"),
    ("train-wd-nan", ["train", SH, "--set", "train.weight_decay=nan"], "finite"),
    ("train-clip-nan", ["train", SH, "--set", "train.grad_clip=nan"], "finite"),
    ("train-dropout", ["train", SH, "--set", "model.dropout=-inf"], "finite"),
    (
        "train-seed-big",
        ["train", SH, "--set", "train.seed=18446744073709551616"],
        "seed",
    ),
    ("train-seed-neg", ["train", SH, "--set", "train.seed=-1"], "seed"),
    ("train-embd0", ["train", SH, "--set", "model.n_embd=0"], "at least 1"),
    ("train-batch", ["train", SH, "--set", "train.batch_size=1.5"], "an integer"),
    ("train-device", ["train", SH, "--set", "train.device=tpu"], "device"),
    ("train-nokey", ["train", SH, "--set", "nokey"], "key=value"),
    (
        "train-differs",
        ["train", SH, *SMOKE, *OUT, "--set", "model.n_layer=3"],
        "different",
    ),
    # train: more than the corpus or the machine can hold
    (
        "train-block-split",
        ["train", SH, *SMOKE, *OUT, "--set", "model.block_size=200000"],
        "block_size",
    ),
    (
        "train-block-notes",
        ["train", f"{F}/notes.txt", *SMOKE, *OUT, "--set", "model.block_size=100000"],
        "block_size",
    ),
    (
        "train-block-memory",
        ["train", SH, *FRESH, "--set", "model.block_size=100000000"],
        "model.block_size",
    ),
    (
        "train-batch-memory",
        ["train", SH, *FRESH, "--set", "train.batch_size=1000000000"],
        "memory",
    ),
    (
        "train-embd-memory",
        [
            "train",
            SH,
            *FRESH,
            "--set",
            "model.n_embd=1000000",
            "--set",
            "model.n_head=4",
        ],
        "memory",
    ),
    # train: where it writes
    ("train-out-sys", ["train", SH, "--out", "/sys/kernel/domaingpt"], "cannot write"),
    ("train-out-proc", ["train", SH, "--out", "/proc/domaingpt/run"], "cannot write"),
    ("train-out-file", ["train", SH, "--out", f"{F}/short.txt"], "is a file"),
    ("train-out-under-file", ["train", SH, "--out", f"{F}/short.txt/r"], "cannot write"),
    (
        "train-link-lock",
        ["train", SH, *SMOKE, "--out", "{linked_lock}"],
        "symbolic link",
    ),
    (
        "train-link-metrics",
        ["train", SH, *SMOKE, "--out", "{linked_metrics}", "--resume"],
        "symbolic link",
    ),
    (
        "train-link-model",
        ["train", SH, *SMOKE, "--out", "{linked_model}", "--overwrite"],
        "symbolic link",
    ),
    # sample
    ("sample-iter", ["sample", M, "--iter", "999"], "available"),
    ("sample-iter-word", ["sample", M, "--iter", "last"], "integer"),
    ("sample-prompt", ["sample", M, "--prompt", ""], "empty"),
    ("sample-temp-neg", ["sample", M, "--temperature", "-1"], "temperature"),
    ("sample-temp-nan", ["sample", M, "--temperature", "nan"], "finite"),
    ("sample-temp-inf", ["sample", M, "--temperature", "inf"], "finite"),
    ("sample-top-k", ["sample", M, "--top-k", "0"], "top-k"),
    ("sample-seed", ["sample", M, "--seed", "18446744073709551616"], "seed"),
    ("sample-chars-huge", ["sample", M, "--chars", "1e20"], "at most 10,000,000"),
    ("sample-chars-zero", ["sample", M, "--chars", "0"], "1 or more"),
    ("sample-chars-word", ["sample", M, "--chars", "many"], "expected an integer"),
    ("sample-fake", ["sample", f"{F}/ckpt/iter-0000001.safetensors"], "not a domaingpt checkpoint"),
    ("sample-dir", ["sample", f"{F}/adir.txt"], "no checkpoints"),
    ("sample-missing", ["sample", "{box}/nowhere"], "does not exist"),
    ("sample-nanogpt", ["sample", f"{F}/nano/out/ckpt.pt"], "nanoGPT"),
    ("sample-nanogpt-dir", ["sample", f"{F}/nano/out"], "pickle"),
    ("sample-bad-json", ["sample", "{badjson}", "--iter", "0"], "not valid JSON"),
    ("sample-bad-json-final", ["sample", "{badjson}/checkpoints/iter-0000000.json"], "JSON"),
    # corpora
    ("corpora-data-dir", ["corpora", "--data-dir", f"{F}/short.txt"], "not a directory"),
    ("corpora-option", ["corpora", "--bogus"], "unrecognized arguments"),
    # stats
    ("stats-unknown", ["stats", "nosuchcorpus", *OUT], "unknown corpus"),
    ("stats-latin1", ["stats", f"{F}/latin1.txt", *OUT], "byte offset"),
    ("stats-dot", ["stats", f"{F}/..txt", *OUT], "cannot name a model"),
    ("stats-out-sys", ["stats", SH, "--out", "/sys"], "cannot write"),
    ("stats-link-log", ["stats", SH, "--out", "{linked_log}"], "symbolic link"),
    # evaluate
    ("evaluate-model", ["evaluate", *OUT, "--models", "wikipedia"], "wikipedia"),
    ("evaluate-no-models", ["evaluate", "--out", f"{F}/adir.txt"], "no trained models"),
    ("evaluate-checkpoints", ["evaluate", *OUT, "--checkpoints", "last"], "checkpoints"),
    ("evaluate-seed", ["evaluate", *OUT, "--seed", "-1"], "seed"),
    ("evaluate-out-sys", ["evaluate", "--out", "/sys/kernel/domaingpt"], "cannot write"),
    ("evaluate-link-model", ["evaluate", "--out", "{linked_model}"], "symbolic link"),
    ("evaluate-corpus", ["evaluate", *OUT, "--corpora", f"{F}/...txt"], "cannot name a model"),
    # adapt
    ("adapt-iters0", ["adapt", *OUT, "--iters", "0"], "iters"),
    ("adapt-iters-neg", ["adapt", *OUT, "--iters", "-3"], "iters"),
    ("adapt-lr-nan", ["adapt", *OUT, "--lr", "nan"], "finite"),
    ("adapt-seed", ["adapt", *OUT, "--seed", "18446744073709551616"], "seed"),
    ("adapt-pair-dot", ["adapt", *OUT, "--pairs", "..:shakespeare"], "no model trained on '..'"),
    ("adapt-pair-self", ["adapt", *OUT, "--pairs", "shakespeare:shakespeare"], "its own corpus"),
    ("adapt-link-log", ["adapt", "--out", "{linked_log}"], "symbolic link"),
    # softmax
    ("softmax-prompt", ["softmax", *OUT, "--prompt", ""], "prompt"),
    ("softmax-prompt-file", ["softmax", *OUT, "--prompt-file", f"{F}/empty_prompts.txt"], ""),
    ("softmax-length", ["softmax", *OUT, "--length", "0"], "length"),
    ("softmax-epsilon", ["softmax", *OUT, "--epsilon", "nan"], "finite"),
    # saliency
    ("saliency-method", ["saliency", *OUT, "--methods", "gradcam"], "gradcam"),
    ("saliency-steps", ["saliency", *OUT, "--ig-steps", "0"], "at least 1 step"),
    ("saliency-checkpoints", ["saliency", *OUT, "--checkpoints", "some"], "invalid choice"),
    # quality
    ("quality-samples", ["quality", *OUT, "--samples", "0"], "samples"),
    ("quality-temperature", ["quality", *OUT, "--temperature", "inf"], "finite"),
    ("quality-link-lock", ["quality", "--out", "{linked_lock}"], "symbolic link"),
    # run
    ("run-unknown-key", ["run", f"{F}/unknown.toml", "--out", "{box}/r1"], "unknown"),
    ("run-bad-toml", ["run", f"{F}/bad.toml", "--out", "{box}/r2"], "not valid TOML"),
    ("run-preset", ["run", "--preset", "bogus"], "unknown study preset"),
    ("run-dot-corpus", ["run", f"{F}/dotdot_study.toml", *SMOKE], "cannot name a model"),
    ("run-inf", ["run", f"{F}/inf_study.toml", *SMOKE, "--out", "{box}/r3"], "finite"),
    ("run-seed", ["run", f"{F}/seed_study.toml", *SMOKE, "--out", "{box}/r4"], "seed"),
    ("run-out-sys", ["run", *SMOKE_RUN, "--out", "/sys/kernel/domaingpt"], "cannot write"),
    ("run-link-log", ["run", *SMOKE_RUN, "--out", "{linked_log}"], "symbolic link"),
    ("run-threads", ["run", *SMOKE_RUN, "--threads", "-1"], "zero or more"),
    # issue 26: user stages, bounded reads, limits, the environment, damaged files
    ("run-threads-big", ["run", *SMOKE_RUN, "--threads", "100000"], "at most"),
    ("run-study-threads", ["run", f"{F}/threads_study.toml", *SMOKE], "at most"),
    ("train-threads-big", ["train", SH, "--set", "train.threads=100000"], "at most"),
    ("softmax-prompt-zero", ["softmax", *OUT, "--prompt-file", "/dev/zero"], "character device"),
    ("softmax-prompt-fifo", ["softmax", *OUT, "--prompt-file", f"{F}/fifo"], "FIFO"),
    ("softmax-prompt-big", ["softmax", *OUT, "--prompt-file", f"{F}/big_prompts.txt"], "64 MiB"),
    ("run-prompt-fifo", ["run", f"{F}/fifo_study.toml", *SMOKE, "--out", "{box}/r5"], "FIFO"),
    ("run-pairs", ["run", f"{F}/pairs_study.toml", *SMOKE, "--out", "{box}/r6"], "'nosuch'"),
    ("run-target", ["run", f"{F}/target_study.toml", *SMOKE, "--out", "{box}/r9"], "nosuch"),
    ("run-study-dir", ["run", f"{F}/adir.txt", *SMOKE], "is a directory"),
    ("run-study-fifo", ["run", f"{F}/fifo", *SMOKE], "FIFO"),
    ("run-stage-exit", ["run", f"{F}/exiting_study.toml", *SMOKE], "sys.exit(0)"),
    ("run-stage-report", ["run", f"{F}/named_report_study.toml", *SMOKE], "taken"),
    ("run-stage-models", ["run", f"{F}/in_models_study.toml", *SMOKE], "trained models"),
    ("run-autocast", ["run", *SMOKE_RUN, "--out", "{box}/r7"], "DOMAINGPT_AUTOCAST"),
    ("run-fault", ["run", *SMOKE_RUN, "--out", "{box}/r8"], "DOMAINGPT_FAULT"),
    ("train-autocast", ["train", SH, *SMOKE, *FRESH], "DOMAINGPT_AUTOCAST"),
    ("run-out-long", ["run", *SMOKE_RUN, "--out", "{box}/{long}"], "too long"),
    ("train-out-long", ["train", SH, "--out", "{box}/{long}"], "too long"),
    ("train-newline", ["train", "{box}/a\nb.txt", *FRESH], "a\\nb.txt"),
    ("sample-huge-embd", ["sample", "{huge_embd}/models/shakespeare"], "16,384"),
    ("sample-wrong-embd", ["sample", "{wrong_embd}/models/shakespeare"], "does not fit"),
    ("evaluate-config-text", ["evaluate", "--out", "{config_text}"], "damaged"),
    ("softmax-config-text", ["softmax", "--out", "{config_text}"], "damaged"),
    ("compare-study-array", ["compare", "{study_array}", R], "damaged"),
    ("import-embd-text", ["import-hf", "{hf_embd_text}", *FRESH], "n_embd must be an integer"),
    ("import-eps-text", ["import-hf", "{hf_eps_text}", *FRESH], "must be a number"),
    ("import-added-text", ["import-hf", "{hf_added_text}", *FRESH], "must be an integer"),
    ("import-id-huge", ["import-hf", "{hf_id_huge}", *FRESH], "2,000,000,000"),
    ("import-id-negative", ["import-hf", "{hf_id_negative}", *FRESH], "got -1"),
]
#: Commands without --quiet (they log nothing).
NO_QUIET = ("compare", "runs")
#: The environment of a case, besides its arguments.
CASE_ENV: dict[str, dict[str, str]] = {
    "run-autocast": {"DOMAINGPT_AUTOCAST": "bogus"},
    "train-autocast": {"DOMAINGPT_AUTOCAST": "bogus"},
    "run-fault": {"DOMAINGPT_FAULT": "garbage"},
}


def test_the_table_has_sixty_cases_across_every_command():
    commands = {argv[0] for _, argv, _ in CASES}
    assert len(CASES) >= 60
    assert commands == {
        "run",
        "train",
        "sample",
        "corpora",
        "stats",
        "evaluate",
        "adapt",
        "softmax",
        "saliency",
        "quality",
        "compare",
        "import-hf",
    }


@pytest.mark.parametrize(("argv", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_error_line_and_changes_nothing(
    sandbox, argv, message, corpora, capsys, monkeypatch, request
):
    case = request.node.callspec.id
    if case.startswith("import-") or case.startswith("export-"):
        pytest.importorskip("tokenizers")  # the export they read is made with it
    for name, value in CASE_ENV.get(case, {}).items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(sandbox.root)  # a default --out (runs/NAME) lands in the sandbox too
    args = [a.format(**sandbox.names) for a in argv]
    if args[0] == "train" and "--vocab" not in args:  # else the built-in corpora's
        args += ["--vocab", corpora.vocab]
    before = snapshot(sandbox.root)
    encoded = cache_dir() / "encoded"  # the shared cache: a refused command adds nothing
    cache_before = snapshot(encoded) if encoded.is_dir() else {}
    code = main([*args, *(["--quiet"] if args[0] not in NO_QUIET else [])])
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if not line.startswith("warning:")]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert message in lines[0], err
    assert out == ""
    assert snapshot(sandbox.root) == before  # listing, contents, links: all unchanged
    assert (snapshot(encoded) if encoded.is_dir() else {}) == cache_before


# ---------------------------------------------------------------------------------------
# Property tests: random values never give a traceback

KEYS = [
    "train.lr",
    "train.batch_size",
    "train.max_iters",
    "train.seed",
    "model.n_head",
    "model.n_embd",
    "model.dropout",
    "train.warmup_iters",
    "train.checkpoints",
    "data.val_fraction",
    "train.compile",
    "model.block_size",
    "train.grad_clip",
    "train.weight_decay",
    "train.nokey",
]
VALUES = st.one_of(
    st.integers(-(2**70), 2**70),
    st.integers(-10, 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.booleans(),
    st.lists(st.integers(-5, 5), max_size=3),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(key=st.sampled_from(KEYS), value=VALUES)
def test_random_config_values_never_traceback(key, value, tmp_path, capsys):
    import math

    from domaingpt.core.config import build_config
    from domaingpt.errors import DomainGPTError

    if isinstance(value, float) and math.isnan(value):
        raw = "nan"
    elif isinstance(value, float) and math.isinf(value):
        raw = "inf" if value > 0 else "-inf"
    else:
        raw = repr(value).replace("'", '"') if not isinstance(value, bool) else str(value).lower()
    try:
        cfg = build_config("smoke", [f"{key}={raw}"])
    except DomainGPTError as e:
        assert str(e) and "\n" not in str(e)
    else:  # whatever is accepted is finite and a seed torch can take
        for section in (cfg.model, cfg.train, cfg.data):
            for v in vars(section).values():
                assert not isinstance(v, float) or math.isfinite(v)
        torch.Generator().manual_seed(cfg.train.seed)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(prompt=st.text(max_size=80))
def test_random_prompts_never_traceback(prompt, sandbox, capsys):
    code = main(["sample", sandbox.names["model"], f"--prompt={prompt}", "--chars", "3", "--quiet"])
    err = capsys.readouterr().err
    assert code in (0, 2) and "Traceback" not in err
    assert (code == 2) == (prompt == "")


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "{shakespeare}", "--preset", "nope"],
        ["train", "{shakespeare}", "--set", "train.lrr=1"],
        ["run", "--preset", "bogus"],
        ["evaluate"],
    ],
)
def test_a_failed_command_leaves_no_new_run_directory(cli_error, argv, tmp_path, corpora):
    """Nothing half-written: not the run directory the lock would create, not its parents,
    and no lock file in a directory the user made."""
    argv = [a.format(shakespeare=corpora.path("shakespeare")) for a in argv]
    out = tmp_path / "new" / "run"
    cli_error(*argv, "--out", out)
    assert not (tmp_path / "new").exists()
    kept = tmp_path / "kept"  # a directory the user made stays as it was
    kept.mkdir()
    cli_error(*argv, "--out", kept)
    assert kept.is_dir() and not any(kept.iterdir())
