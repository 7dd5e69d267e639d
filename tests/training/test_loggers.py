"""``train.loggers`` on real Shakespeare: TensorBoard event files and an offline W&B run
hold the scalars of ``metrics.jsonl`` (same steps, same values), a resumed run logs each
step once, a missing extra stops ``domaingpt train`` before it writes anything, and
changing the loggers retrains nothing."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from domaingpt.core.io import read_jsonl
from domaingpt.core.rundir import RunDir
from domaingpt.training.loop import LOGGED_SCALARS
from domaingpt.training.modeldir import is_model_dir, model_state, read_record

SMOKE = ("train.threads=1", "train.checkpoints=[0, 30, 60]")


def tensorboard_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the event files in ``folder``: tag -> [(step, value)]."""
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    events = accumulator.EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }


def expected(model_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """What the loggers should hold: the non-empty scalars of ``metrics.jsonl``."""
    rows = read_jsonl(model_dir / "metrics.jsonl")
    return {
        key: [(r["iter"], r[key]) for r in rows if r[key] is not None] for key in LOGGED_SCALARS
    }


def assert_same(logged: dict, want: dict) -> None:
    assert sorted(logged) == sorted(want)
    for key, points in want.items():
        assert [s for s, _ in logged[key]] == [s for s, _ in points], key
        for (_, got), (_, value) in zip(logged[key], points, strict=True):
            # event files hold float32: losses within 1e-6, tokens/s to 1e-6 of itself
            assert got == pytest.approx(value, rel=1e-6, abs=1e-6), key


@pytest.fixture(scope="module")
def tb_run(train_smoke, tmp_path_factory) -> RunDir:
    pytest.importorskip("tensorboard")
    root = tmp_path_factory.mktemp("tbrun")
    assert train_smoke(root, "train.loggers=csv,tensorboard", *SMOKE) == 0
    return RunDir(root)


def test_tensorboard_scalars_equal_the_metrics_log(tb_run):
    model_dir = tb_run.model("shakespeare")
    want = expected(model_dir)
    assert [s for s, _ in want["val_loss"]] == [0, 30, 60]
    assert [s for s, _ in want["train_loss"]] == [30, 60]
    assert_same(tensorboard_scalars(model_dir / "tensorboard"), want)
    # the folder is the model's own: --overwrite may still delete the model directory
    assert is_model_dir(model_dir)


def test_changing_loggers_retrains_nothing(tb_run):
    model_dir = tb_run.model("shakespeare")
    record = read_record(model_dir)
    assert record["config"]["train"]["loggers"] == ["csv", "tensorboard"]
    for loggers in (["csv"], ["wandb"], []):
        other = json.loads(json.dumps(record))
        other["config"]["train"]["loggers"] = loggers
        assert model_state(model_dir, other, 60) == "finished"


def test_extended_run_logs_each_step_once(train_smoke, tmp_path):
    """Extending a model (a new session in the same folder) purges nothing it needs and
    logs each step once: the event files equal the metrics log again."""
    pytest.importorskip("tensorboard")
    assert train_smoke(tmp_path, "train.loggers=tensorboard", *SMOKE) == 0
    extend = ["train.loggers=tensorboard", "train.max_iters=90", *SMOKE]
    assert train_smoke(tmp_path, *extend, extra=["--resume"]) == 0
    model_dir = tmp_path / "models" / "shakespeare"
    want = expected(model_dir)
    assert [s for s, _ in want["val_loss"]] == [0, 30, 60, 90]
    assert len(list((model_dir / "tensorboard").iterdir())) == 2  # one file per session
    assert_same(tensorboard_scalars(model_dir / "tensorboard"), want)


def wandb_history(run_file: Path) -> dict[str, list[tuple[int, float]]]:
    """The history of an offline W&B run, from its ``run-*.wandb`` record log (a LevelDB
    log: 7-byte file header, 32 KiB blocks, records of crc32 + length + type)."""
    from wandb.proto import wandb_internal_pb2

    data = run_file.read_bytes()
    assert data[:4] == b":W&B"
    block, pos, part, records = 32768, 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        part = chunk if kind in (1, 2) else part + chunk  # full/first, or middle/last
        if kind in (1, 4):
            records.append(part)
    history: dict[str, list[tuple[int, float]]] = {}
    for raw in records:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") != "history":
            continue
        items = {
            i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item
        }
        step = items.pop("_step")
        for key, value in items.items():
            if not key.startswith("_"):
                history.setdefault(key, []).append((step, value))
    return history


def test_wandb_offline_run_matches_the_metrics_log(train_smoke, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL", "WANDB_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))  # no key anywhere: offline
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    out = tmp_path / "run"
    assert train_smoke(out, "train.loggers=csv,wandb", *SMOKE) == 0
    model_dir = out / "models" / "shakespeare"
    (run_folder,) = (model_dir / "wandb").glob("offline-run-*")
    (run_file,) = run_folder.glob("run-*.wandb")
    want = expected(model_dir)
    logged = wandb_history(run_file)
    assert sorted(logged) == sorted(want)
    for key, points in want.items():  # JSON holds the doubles exactly
        assert logged[key] == [(s, v) for s, v in points], key
    # no link is left in the run (a run directory with one is refused), and it is a model
    assert not [p for p in out.rglob("*") if p.is_symlink()]
    assert is_model_dir(model_dir)
    assert all(math.isfinite(v) for _, v in logged["val_loss"])


def test_missing_extra_stops_train_before_writing(cli_error, data_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if it were not installed
    out = tmp_path / "run"
    err = cli_error(
        "train", "shakespeare", "--preset", "smoke", "--out", out, "--data-dir", data_dir,
        "--quiet", "--set", "train.loggers=csv,tensorboard",
    )  # fmt: skip
    assert "the tensorboard logger needs" in err
    assert "pip install 'domaingpt[loggers]'" in err
    assert not out.exists() or not any(out.iterdir())


def test_missing_extra_stops_a_study_before_writing(cli_error, data_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    study = tmp_path / "study.toml"
    study.write_text(
        '[study]\nname = "logged"\ncorpora = ["shakespeare"]\npreset = "smoke"\n'
        '[train]\nloggers = ["csv", "tensorboard"]\n',
        encoding="utf-8",
    )
    out = tmp_path / "run"
    err = cli_error("run", study, "--out", out, "--data-dir", data_dir, "--quiet")
    assert "the tensorboard logger needs" in err
    assert not out.exists()


def test_unknown_logger_names_the_known_ones(cli_error, data_dir, tmp_path):
    out = tmp_path / "run"
    err = cli_error(
        "train", "shakespeare", "--preset", "smoke", "--out", out, "--data-dir", data_dir,
        "--set", "train.loggers=nope",
    )  # fmt: skip
    assert "unknown logger 'nope'" in err and "csv, tensorboard, wandb" in err
    assert not out.exists() or not any(out.iterdir())


def test_no_logger_folder_by_default(train_smoke, tmp_path):
    assert train_smoke(tmp_path, *SMOKE) == 0
    names = {p.name for p in (tmp_path / "models" / "shakespeare").iterdir()}
    assert not names & {"tensorboard", "wandb"}
