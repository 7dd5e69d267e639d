"""Every bad input a user can give meets a one-line error and exit status 2: never a
traceback, never a half-written result. Plus property tests with random config values
and random prompts."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domaingpt.cli import main


@pytest.fixture(scope="module")
def run_dir(train_smoke, tmp_path_factory, data_dir) -> Path:
    out = tmp_path_factory.mktemp("bad")
    assert train_smoke(out, "train.max_iters=20") == 0
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("files")
    f = {
        "empty": d / "empty.txt",
        "binary": d / "binary.txt",
        "latin1": d / "latin1.txt",
        "short": d / "short.txt",
        "huge_line": d / "huge_line.txt",
        "dir": d / "adir.txt",
        "bad_toml": d / "bad.toml",
        "unknown_key": d / "unknown.toml",
        "wrong_type": d / "wrongtype.toml",
        "pickle": d / "ckpt" / "iter-0000001.safetensors",
        "empty_prompts": d / "prompts.txt",
    }
    f["empty"].write_text("")
    f["binary"].write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" * 20)
    f["latin1"].write_bytes(b"na\xefve caf\xe9 " * 20)
    f["short"].write_text("tiny\n")
    f["huge_line"].write_text("x" * 40)  # a single short line: too short to train
    f["dir"].mkdir()
    f["bad_toml"].write_text("[train\nlr=")
    f["unknown_key"].write_text("[train]\nlearning_rate = 1e-3\n")
    f["wrong_type"].write_text('[train]\nmax_iters = "many"\n')
    f["pickle"].parent.mkdir()
    f["pickle"].write_bytes(b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00}\x94.")
    f["pickle"].with_suffix(".json").write_text('{"format": "something-else"}')
    f["empty_prompts"].write_text("")
    return f


def cases(run: Path, f: dict[str, Path]) -> list[tuple[list[str], str]]:
    model = str(run / "models" / "shakespeare")
    out = ["--out", str(run)]
    return [
        (["train", "shakspeare"], "did you mean 'shakespeare'"),
        (["train", str(f["empty"])], "empty"),
        (["train", str(f["binary"])], "binary"),
        (["train", str(f["latin1"])], "byte offset"),
        (["train", str(f["short"]), "--preset", "smoke"], "too short"),
        (["train", str(f["huge_line"]), "--preset", "smoke"], "too short"),
        (["train", str(f["dir"])], "directory"),
        (["train", "/nonexistent/corpus.txt"], "does not exist"),
        (["train", "shakespeare", "--preset", str(f["bad_toml"])], "not valid TOML"),
        (["train", "shakespeare", "--preset", str(f["unknown_key"])], "unknown config key"),
        (["train", "shakespeare", "--preset", str(f["wrong_type"])], "must be an integer"),
        (["train", "shakespeare", "--preset", "nope"], "unknown preset"),
        (["train", "shakespeare", "--set", "train.max_iters=-5"], "at least 1"),
        (["train", "shakespeare", "--set", "train.lr=0"], "train.lr"),
        (["train", "shakespeare", "--set", "model.n_embd=0"], "at least 1"),
        (["train", "shakespeare", "--set", "train.batch_size=1.5"], "must be an integer"),
        (["train", "shakespeare", "--set", "train.device=tpu"], "device"),
        (["train", "shakespeare", "--set", "nokey"], "key=value"),
        (
            ["train", "shakespeare", "--preset", "smoke", *out, "--set", "model.n_layer=3"],
            "different run",
        ),
        (["sample", model, "--iter", "999"], "available"),
        (["sample", model, "--iter", "last"], "integer"),
        (["sample", model, "--prompt", ""], "empty"),
        (["sample", model, "--temperature", "-1"], "temperature"),
        (["sample", model, "--top-k", "0"], "top-k"),
        (["sample", str(f["pickle"])], "not a domaingpt checkpoint"),
        (["sample", str(f["dir"])], "no checkpoints"),
        (["stats", "nosuchcorpus", *out], "unknown corpus"),
        (["stats", str(f["latin1"]), *out], "byte offset"),
        (["evaluate", *out, "--models", "wikipedia"], "wikipedia"),
        (["evaluate", "--out", str(f["dir"])], ""),
        (["adapt", *out, "--iters", "0"], ""),
        (["adapt", *out, "--iters", "-3"], ""),
        (["probe", *out, "--prompt", ""], ""),
        (["probe", *out, "--prompt-file", str(f["empty_prompts"])], ""),
        (["probe", *out, "--length", "0"], ""),
        (["saliency", *out, "--methods", "gradcam"], "gradcam"),
        (["saliency", *out, "--ig-steps", "0"], ""),
        (["quality", *out, "--samples", "0"], ""),
        (["run", str(f["unknown_key"]), "--out", str(f["dir"].parent / "r1")], ""),
        (["run", str(f["bad_toml"]), "--out", str(f["dir"].parent / "r2")], ""),
    ]


def test_at_least_thirty_bad_inputs_each_get_a_one_line_error(run_dir, files, data_dir, capsys):
    table = cases(run_dir, files)
    assert len(table) >= 30
    before = sorted(p.relative_to(run_dir) for p in run_dir.rglob("*") if p.name != ".lock")
    failures = []
    for argv, message in table:
        code = main([*argv, "--data-dir", str(data_dir), "--quiet"])
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if not line.startswith("warning:")]
        ok = (
            code == 2
            and len(lines) == 1
            and lines[0].startswith("error: ")
            and "Traceback" not in err
            and message in err
        )
        if not ok:
            failures.append((argv, code, err))
    assert not failures, "\n".join(f"{a}: exit {c}: {e!r}" for a, c, e in failures)
    after = sorted(p.relative_to(run_dir) for p in run_dir.rglob("*") if p.name != ".lock")
    assert after == before  # nothing half-written by any refused command


KEYS = [
    "train.lr",
    "train.batch_size",
    "train.max_iters",
    "model.n_head",
    "model.n_embd",
    "model.dropout",
    "train.warmup_iters",
    "train.checkpoints",
    "data.val_fraction",
    "train.compile",
    "model.block_size",
    "train.grad_clip",
    "train.nokey",
]
VALUES = st.one_of(
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
    from domaingpt.core.config import build_config
    from domaingpt.errors import DomainGPTError

    raw = repr(value).replace("'", '"') if not isinstance(value, bool) else str(value).lower()
    try:
        build_config("smoke", [f"{key}={raw}"])
    except DomainGPTError as e:
        assert str(e) and "\n" not in str(e)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(prompt=st.text(max_size=80))
def test_random_prompts_never_traceback(prompt, run_dir, capsys):
    code = main(
        [
            "sample",
            str(run_dir / "models" / "shakespeare"),
            f"--prompt={prompt}",
            "--chars",
            "3",
            "--quiet",
        ]
    )
    err = capsys.readouterr().err
    assert code in (0, 2) and "Traceback" not in err
    assert (code == 2) == (prompt == "")


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "shakespeare", "--preset", "nope"],
        ["train", "shakespeare", "--set", "train.lrr=1"],
        ["run", "--preset", "bogus"],
        ["evaluate"],
    ],
)
def test_a_failed_command_leaves_no_new_run_directory(cli_error, argv, tmp_path, data_dir, capsys):
    """Nothing half-written: not even the empty run directory the lock would create."""
    out = tmp_path / "new" / "run"
    cli_error(*argv, "--out", out, "--data-dir", data_dir)
    assert not out.exists()
    kept = tmp_path / "kept"  # a directory the user made stays, with its lock file
    kept.mkdir()
    cli_error(*argv, "--out", kept, "--data-dir", data_dir)
    assert kept.is_dir()
