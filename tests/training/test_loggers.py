"""``train.loggers`` on real Shakespeare: TensorBoard event files hold the per-step
scalars (the step's loss, lr, tokens/s, gradient norm), the evaluation rows of
``metrics.jsonl`` under separate tags for the estimated and the whole-split loss, the
samples, ``loss.png`` and the hparams; an offline W&B run carries the study's name, the
version and the corpus checksum, lives in the run's one ``wandb/`` folder and is
continued by a resumed model; a resumed run logs each step once; a missing extra stops
``domaingpt train`` before it writes anything, and changing the loggers retrains nothing."""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from domaingpt import __version__
from domaingpt.context.rundir import RunDir
from domaingpt.core.config import build_config
from domaingpt.core.io import read_jsonl
from domaingpt.core.loggers import WANDB_ID_FILE
from domaingpt.training.loop import ESTIMATE_TAG, FULL_TAG, STEP_TAGS, TRAIN_MEAN_TAG
from domaingpt.training.modeldir import is_model_dir, model_state, read_record
from domaingpt.training.trainer import lr_at

SMOKE = ("train.threads=1", "train.checkpoints=[0, 30, 60]")


def tensorboard_events(folder: Path):
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    events = accumulator.EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return events


def tensorboard_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the event files in ``folder``: tag -> [(step, value)]."""
    events = tensorboard_events(folder)
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }


def expected(model_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """The evaluation rows of ``metrics.jsonl`` as the loggers should hold them: the mean
    train loss, the estimate on ``eval_tokens`` and the whole-split loss apart."""
    rows = read_jsonl(model_dir / "metrics.jsonl")
    return {
        TRAIN_MEAN_TAG: [(r["iter"], r["train_loss"]) for r in rows if r["train_loss"] is not None],
        ESTIMATE_TAG: [(r["iter"], r["val_loss"]) for r in rows if "val_loss_full" not in r],
        FULL_TAG: [(r["iter"], r["val_loss_full"]) for r in rows if "val_loss_full" in r],
    }


def assert_same(logged: dict, want: dict) -> None:
    for key, points in want.items():
        assert [s for s, _ in logged[key]] == [s for s, _ in points], key
        for (_, got), (_, value) in zip(logged[key], points, strict=True):
            # event files hold float32: losses within 1e-6
            assert got == pytest.approx(value, rel=1e-6, abs=1e-6), key


@pytest.fixture(scope="module")
def tb_run(train_smoke, tmp_path_factory) -> RunDir:
    pytest.importorskip("tensorboard")
    root = tmp_path_factory.mktemp("tbrun")
    logged = ("train.loggers=csv,tensorboard", "train.log_interval=1")
    assert train_smoke(root, *logged, *SMOKE) == 0
    return RunDir(root)


def test_tensorboard_scalars_per_step_and_per_evaluation(tb_run):
    model_dir = tb_run.model("shakespeare")
    logged = tensorboard_scalars(model_dir / "tensorboard")
    assert sorted(logged) == sorted([*STEP_TAGS, TRAIN_MEAN_TAG, ESTIMATE_TAG, FULL_TAG])
    want = expected(model_dir)
    assert [s for s, _ in want[ESTIMATE_TAG]] == [0, 30]  # 4,096 characters
    assert [s for s, _ in want[FULL_TAG]] == [60]  # the whole split, its own tag
    assert_same(logged, want)
    # every step (log_interval 1): its own loss, whose mean over an evaluation window is
    # metrics.jsonl's train loss; the schedule's lr; a positive gradient norm and speed
    for tag in STEP_TAGS:
        assert [s for s, _ in logged[tag]] == list(range(1, 61)), tag
    losses = [v for _, v in logged["train/loss"]]
    rows = {r["iter"]: r for r in read_jsonl(model_dir / "metrics.jsonl")}
    for a, b in ((0, 30), (30, 60)):
        assert sum(losses[a:b]) / 30 == pytest.approx(rows[b]["train_loss"], rel=1e-5)
    assert len(set(losses)) > 50  # one value per step, not a mean repeated
    spec = build_config("smoke").train
    assert [v for _, v in logged["train/lr"]] == pytest.approx(
        [lr_at(i - 1, spec) for i in range(1, 61)], rel=1e-6
    )
    norms = [v for _, v in logged["train/grad_norm"]]
    assert all(math.isfinite(n) and n > 0 for n in norms) and len(set(norms)) > 50
    assert all(v > 0 for _, v in logged["train/tokens_per_s"])
    # the folder is the model's own: --overwrite may still delete the model directory
    assert is_model_dir(model_dir)


def test_tensorboard_hparams_samples_and_loss_image(tb_run):
    from tensorboard.plugins.hparams import plugin_data_pb2

    model_dir = tb_run.model("shakespeare")
    events = tensorboard_events(model_dir / "tensorboard")
    content = events.PluginTagToContent("hparams")
    data = {tag: plugin_data_pb2.HParamsPluginData.FromString(c) for tag, c in content.items()}
    (start,) = [d.session_start_info for d in data.values() if d.HasField("session_start_info")]
    hparams = {
        k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind"))
        for k, v in start.hparams.items()
    }
    assert hparams["model.n_layer"] == 2 and hparams["model.n_embd"] == 32
    assert hparams["train.lr"] == pytest.approx(3e-3)
    assert hparams["train.max_iters"] == 60 and hparams["train.loggers"] == "['csv', 'tensorboard']"
    (experiment,) = [d.experiment for d in data.values() if d.HasField("experiment")]
    metrics = {m.name.tag for m in experiment.metric_infos}
    assert metrics == {FULL_TAG, TRAIN_MEAN_TAG}  # final metrics: scalars of those tags
    # the history samples, as text at their iterations, and the loss curve as an image
    samples = read_jsonl(model_dir / "samples.jsonl")
    texts = events.Tensors("samples/text_summary")
    assert [e.step for e in texts] == [r["iter"] for r in samples] == [0, 30, 60]
    shown = texts[-1].tensor_proto.string_val[0].decode()
    assert [line[4:] for line in shown.split("\n")] == samples[-1]["text"].split("\n")
    (image,) = events.Images("loss")
    assert image.step == 60 and image.width > 300 and image.height > 200
    assert image.encoded_image_string == (model_dir / "loss.png").read_bytes()


def test_changing_loggers_retrains_nothing(tb_run):
    model_dir = tb_run.model("shakespeare")
    record = read_record(model_dir)
    assert record.section("train")["loggers"] == ["csv", "tensorboard"]
    for loggers in (["csv"], ["wandb"], []):
        config = json.loads(json.dumps(record.config))
        config["train"].update(loggers=loggers, log_interval=50)
        other = replace(record, config=config)
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
    assert [s for s, _ in want[ESTIMATE_TAG]] == [0, 30]
    assert [s for s, _ in want[FULL_TAG]] == [60, 90]  # each session's last step
    assert len(list((model_dir / "tensorboard").iterdir())) == 2  # one file per session
    logged = tensorboard_scalars(model_dir / "tensorboard")
    assert_same(logged, want)
    assert [s for s, _ in logged["train/loss"]] == list(range(10, 91, 10))  # log_interval 10


def wandb_records(run_file: Path, wait: float = 60.0) -> list:
    """The records of a finished offline W&B run, up to its ``exit`` record: the file is
    written by wandb's service process, which may still be flushing it when
    ``run.finish()`` has returned (so it is read again until whole, at most ``wait`` s)."""
    deadline = time.monotonic() + wait
    while True:
        records = _read_records(run_file)
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            return records
        assert time.monotonic() < deadline, f"{run_file} has no exit record after {wait} s"
        time.sleep(0.2)


def _read_records(run_file: Path) -> list:
    """The records of a ``run-*.wandb`` record log (a LevelDB log: 7-byte file header,
    32 KiB blocks, records of crc32 + length + type)."""
    from wandb.proto import wandb_internal_pb2

    data = run_file.read_bytes()
    block, pos, part, records = 32768, 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        part = chunk if kind in (1, 2) else part + chunk  # full/first, or middle/last
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(part)
            records.append(record)
    return records


def wandb_history(records: list) -> dict[str, list[tuple[int, float]]]:
    history: dict[str, list[tuple[int, float]]] = {}
    for record in records:
        if record.WhichOneof("record_type") != "history":
            continue
        items = {
            i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item
        }
        step = items.pop("_step")
        for key, value in items.items():
            if not key.startswith("_") and isinstance(value, float | int):
                history.setdefault(key, []).append((step, value))
    return history


def wandb_run(records: list) -> tuple[dict, dict]:
    """The run record's fields (id, group, name ...) and its config (key -> value)."""
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    updates = [*run.config.update]  # the config given to wandb.init, then any later ones
    updates += [
        i for r in records if r.WhichOneof("record_type") == "config" for i in r.config.update
    ]
    config = {item.key: json.loads(item.value_json) for item in updates}
    return {"id": run.run_id, "group": run.run_group, "name": run.display_name}, config


def test_wandb_offline_run_study_named_and_resumed(train_smoke, tmp_path, monkeypatch):
    """One ``wandb/`` folder at the run root; the run is named by its model, grouped by
    its study, with the settings, the corpus checksum and the version in its config; the
    scalars equal the metrics log; extending the model continues the same W&B run."""
    pytest.importorskip("wandb")
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL", "WANDB_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))  # no key anywhere: offline
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    out = tmp_path / "mystudy"
    assert train_smoke(out, "train.loggers=csv,wandb", *SMOKE) == 0
    model_dir = out / "models" / "shakespeare"
    assert not (model_dir / "wandb").exists()
    run_id = (model_dir / WANDB_ID_FILE).read_text().strip()
    (run_folder,) = (out / "wandb").glob(f"offline-run-*-{run_id}")
    (run_file,) = run_folder.glob("run-*.wandb")
    records = wandb_records(run_file)
    run, config = wandb_run(records)
    assert run == {"id": run_id, "group": "mystudy", "name": "shakespeare"}
    assert config["study"] == "mystudy" and config["domaingpt_version"] == __version__
    assert config["corpus_sha256"] == read_record(model_dir).corpus_sha256
    assert len(config["corpus_sha256"]) == 64
    assert config["train"]["max_iters"] == 60 and config["model"]["n_layer"] == 2
    logged = wandb_history(records)
    for key, points in expected(model_dir).items():  # JSON holds the doubles exactly
        assert logged[key] == points, key
    assert [s for s, _ in logged["train/grad_norm"]] == list(range(10, 61, 10))
    # extended (resumed): the same W&B run, continued in a second offline folder
    extend = ["train.loggers=csv,wandb", "train.max_iters=90", *SMOKE]
    assert train_smoke(out, *extend, extra=["--resume"]) == 0
    assert (model_dir / WANDB_ID_FILE).read_text().strip() == run_id
    folders = sorted((out / "wandb").glob("offline-run-*"))
    assert len(folders) == 2 and all(f.name.endswith(run_id) for f in folders)
    # no link is left in the run (a run directory with one is refused), and it is a model
    assert not [p for p in out.rglob("*") if p.is_symlink()]
    assert is_model_dir(model_dir)
    assert all(math.isfinite(v) for _, v in logged[ESTIMATE_TAG])


def test_missing_extra_stops_train_before_writing(cli_error, corpora, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if it were not installed
    out = tmp_path / "run"
    err = cli_error(
        "train", corpora.path("shakespeare"), "--vocab", corpora.vocab, "--preset", "smoke",
        "--out", out, "--quiet", "--set", "train.loggers=csv,tensorboard",
    )  # fmt: skip
    assert "tensorboard" in err and "pip install 'domaingpt[loggers]'" in err
    assert not out.exists() or not any(out.iterdir())


def test_missing_extra_stops_a_study_before_writing(cli_error, corpora, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    study = tmp_path / "study.toml"
    study.write_text(
        f'[study]\nname = "logged"\ncorpora = ["{corpora.path("shakespeare")}"]\n'
        'preset = "smoke"\n[train]\nloggers = ["csv", "tensorboard"]\n',
        encoding="utf-8",
    )
    out = tmp_path / "run"
    err = cli_error("run", study, "--out", out, "--quiet")
    assert "tensorboard" in err and "domaingpt[loggers]" in err
    assert not out.exists()


def test_unknown_logger_names_the_known_ones(cli_error, corpora, tmp_path):
    out = tmp_path / "run"
    err = cli_error(
        "train", corpora.path("shakespeare"), "--vocab", corpora.vocab, "--preset", "smoke",
        "--out", out, "--set", "train.loggers=nope",
    )  # fmt: skip
    assert "unknown logger 'nope'" in err and "csv, tensorboard, wandb" in err
    assert not out.exists() or not any(out.iterdir())


def test_no_logger_folder_by_default(train_smoke, tmp_path):
    assert train_smoke(tmp_path, *SMOKE) == 0
    names = {p.name for p in (tmp_path / "models" / "shakespeare").iterdir()}
    assert not names & {"tensorboard", "wandb"}
