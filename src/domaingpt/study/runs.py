"""Runs as things a user manages: find the runs under a folder, and compare two.

``domaingpt runs [DIR]`` lists every run directory under ``DIR`` (default ``runs``) with
its study, the stages done, its models and their in-domain losses; ``domaingpt compare
RUN_A RUN_B`` shows what differs between two runs: the settings, the in-domain losses,
the zero-shot matrix and the verdicts on the study's claims. Both read what the runs
wrote; nothing is recomputed but the claims, which are a pure function of the tables.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from domaingpt.context.records import StageRecord, StageStatus
from domaingpt.context.rundir import RunDir, read_run_json, study_order
from domaingpt.core.claims import Verdict, claims_frame
from domaingpt.errors import DomainGPTError, one_line
from domaingpt.model.checkpoint import list_checkpoints
from domaingpt.study.load import Study, read_study_record
from domaingpt.study.pipeline import EVALUATE, TRAIN

#: How deep below the folder given to ``domaingpt runs`` run directories are looked for.
MAX_DEPTH = 3


def is_run(path: Path) -> bool:
    """A run directory: a study's record, stage records, or trained models."""
    return path.is_dir() and (
        (path / "study.json").is_file()
        or any((path / "stages").glob("*.json"))
        or any((path / "models").glob("*/checkpoints/iter-*.json"))
    )


def find_runs(root: str | Path, depth: int = MAX_DEPTH) -> list[Path]:
    """Run directories at or below ``root`` (a run's own folders are not searched)."""
    root = Path(root)
    if not root.is_dir():
        raise DomainGPTError(f"{root} is not a folder; give the folder that holds your runs")
    if is_run(root):
        return [root]
    found: list[Path] = []
    if depth > 0:
        for child in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            found += find_runs(child, depth - 1)
    return found


# --- what a run holds -----------------------------------------------------------------


def _final_eval(run: RunDir) -> pd.DataFrame:
    """The zero-shot rows of each model's last evaluated checkpoint (empty if none)."""
    try:
        table = EVALUATE.read(run)["zero_shot"]
    except DomainGPTError:
        return pd.DataFrame(columns=["model", "corpus", "loss_nats"])
    last = table.groupby("model")["iteration"].transform("max")
    return table[table["iteration"] == last]


def in_domain_losses(run: RunDir) -> dict[str, float]:
    """Each model's loss on its own corpus: the zero-shot matrix's diagonal, else the
    final validation loss its training recorded."""
    final = _final_eval(run)
    own = final[final["model"] == final["corpus"]]
    losses = {str(r.model): float(r.loss_nats) for r in own.itertuples()}
    for name in run.trained_models():
        if name in losses:
            continue
        history = list_checkpoints(run.model(name) / "checkpoints", "iter")
        val = history[-1].meta.val_loss if history else None
        if isinstance(val, int | float) and math.isfinite(val):
            losses[name] = float(val)
    return {name: losses[name] for name in study_order(losses)}


def zero_shot_matrix(run: RunDir) -> pd.DataFrame:
    """Final zero-shot losses, rows model, columns corpus (empty without ``evaluate``)."""
    final = _final_eval(run)
    if final.empty:
        return pd.DataFrame()
    matrix = final.pivot_table(index="model", columns="corpus", values="loss_nats")
    return matrix.reindex(index=study_order(matrix.index), columns=study_order(matrix.columns))


@dataclass(frozen=True)
class RunSummary:
    path: Path
    study: str
    done: list[str]
    not_done: dict[str, StageStatus]  # stage -> status (failed, blocked)
    models: list[str]
    losses: dict[str, float]
    updated: str

    def row(self) -> dict[str, str]:
        stages = f"{len(self.done)} done"
        if self.not_done:
            stages += ", " + ", ".join(f"{s} {st}" for s, st in self.not_done.items())
        losses = " ".join(f"{m} {v:.4f}" for m, v in self.losses.items())
        return {
            "run": str(self.path),
            "study": self.study,
            "stages": stages,
            "models": " ".join(self.models) or "-",
            "in-domain loss": losses or "-",
            "updated": self.updated or "-",
        }


def _records(run: RunDir) -> dict[str, StageRecord]:
    records = {}
    for path in sorted((run.root / "stages").glob("*.json")):
        rec = run.record(path.stem)
        if rec is not None:
            records[path.stem] = rec
    return records


def summarize(path: str | Path) -> RunSummary:
    """What ``domaingpt runs`` says of one run."""
    run = RunDir(Path(path))
    spec = read_study_record(run.root)
    records = _records(run)
    done = [s for s, r in records.items() if r.done]
    not_done = {s: r.status for s, r in records.items() if s not in done}
    stamps = [r.at for r in records.values() if r.at]
    return RunSummary(
        path=run.root,
        study=str(spec.get("name", "-")),
        done=done,
        not_done=not_done,
        models=study_order(run.trained_models()),
        losses=in_domain_losses(run),
        updated=max(stamps)[:16].replace("T", " ") if stamps else "",
    )


def _damaged_row(path: Path, why: str) -> dict[str, str]:
    return {
        "run": str(path),
        "study": "DAMAGED",
        "stages": one_line(why),
        "models": "-",
        "in-domain loss": "-",
        "updated": "-",
    }


def runs_table(root: str | Path) -> pd.DataFrame:
    """One row per run under ``root``, most recently updated first."""
    rows = []
    for path in find_runs(root):
        try:
            rows.append(summarize(path).row())
        except DomainGPTError as e:  # one damaged run is flagged, the others still listed
            rows.append(_damaged_row(path, str(e)))
    table = pd.DataFrame(
        rows, columns=["run", "study", "stages", "models", "in-domain loss", "updated"]
    )
    return table.sort_values("updated", ascending=False, kind="stable").reset_index(drop=True)


# --- comparing two runs ---------------------------------------------------------------


def _flatten(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = json.dumps(value, ensure_ascii=False, sort_keys=True)


def settings_of(run: RunDir) -> dict[str, str]:
    """Every setting a run used, flattened: the study's (``study.*``) and each stage's
    recorded settings (``evaluate.bootstrap``); models' training configs for a run
    without stage records (``models.NAME.train.lr``)."""
    out: dict[str, str] = {}
    spec = read_study_record(run.root)
    for key in ("name", "preset", "corpora"):
        if key in spec:
            _flatten(f"study.{key}", spec[key], out)
    records = _records(run)
    for stage, rec in records.items():
        if rec.settings is not None:
            _flatten(stage, rec.settings, out)
    if TRAIN.name not in records:
        for name in run.trained_models():
            _flatten(f"models.{name}", read_run_json(run.model(name)).config, out)
    return out


def _diff(a: dict[str, str], b: dict[str, str]) -> pd.DataFrame:
    keys = sorted(set(a) | set(b))
    rows = [
        {"setting": k, "A": a.get(k, "(unset)"), "B": b.get(k, "(unset)")}
        for k in keys
        if a.get(k) != b.get(k)
    ]
    return pd.DataFrame(rows, columns=["setting", "A", "B"])


def _losses(a: dict[str, float], b: dict[str, float]) -> pd.DataFrame:
    rows = []
    for model in study_order(set(a) | set(b)):
        va, vb = a.get(model, math.nan), b.get(model, math.nan)
        rows.append({"model": model, "A": va, "B": vb, "B - A": vb - va})
    return pd.DataFrame(rows, columns=["model", "A", "B", "B - A"])


def _matrices(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    rows = []
    models = study_order(set(a.index) | set(b.index))
    corpora = study_order(set(a.columns) | set(b.columns))
    for m in models:
        for c in corpora:
            va = float(a.loc[m, c]) if m in a.index and c in a.columns else math.nan
            vb = float(b.loc[m, c]) if m in b.index and c in b.columns else math.nan
            if math.isnan(va) and math.isnan(vb):
                continue
            rows.append({"model": m, "corpus": c, "A": va, "B": vb, "B - A": vb - va})
    return pd.DataFrame(rows, columns=["model", "corpus", "A", "B", "B - A"])


def _labelled(claims: pd.DataFrame) -> pd.DataFrame:
    """Claims whose verdict rests on one model labelled with that model's own verdict
    (``one model (holds)``), so two one-replicate runs show what changed in the model."""
    own = claims["numbers"].map(lambda n: json.loads(n).get("model_verdict") if n else None)
    one = (claims["verdict"] == str(Verdict.ONE_MODEL)) & own.notna()
    out = claims.copy()
    out.loc[one, "verdict"] = "one model (" + own[one].astype(str) + ")"
    return out


def _verdicts(a: Study, b: Study) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Verdict counts of both runs, and the claims whose verdict differs."""
    key = ["stage", "claim", "scope"]
    ta, tb = claims_frame(a.claims()), claims_frame(b.claims())
    counts = (
        pd.DataFrame({"A": ta["verdict"].value_counts(), "B": tb["verdict"].value_counts()})
        .fillna(0)
        .astype(int)
    )
    counts = counts.rename_axis("verdict").reset_index()
    both = _labelled(ta)[[*key, "verdict"]].merge(
        _labelled(tb)[[*key, "verdict"]], on=key, how="outer", suffixes=(" A", " B")
    )
    both = both.fillna({"verdict A": "(absent)", "verdict B": "(absent)"})
    changed = both[both["verdict A"] != both["verdict B"]].reset_index(drop=True)
    return counts, changed


@dataclass(frozen=True)
class Comparison:
    a: Path
    b: Path
    settings: pd.DataFrame
    losses: pd.DataFrame
    matrix: pd.DataFrame
    verdict_counts: pd.DataFrame
    verdicts: pd.DataFrame


def compare_runs(path_a: str | Path, path_b: str | Path) -> Comparison:
    """What differs between two runs (``B - A`` for numbers)."""
    runs = []
    for p in (Path(path_a), Path(path_b)):
        if not is_run(p):
            raise DomainGPTError(
                f"{p} is not a run directory (no study.json, stage records or models); "
                "list the runs with `domaingpt runs`"
            )
        runs.append(RunDir(p))
    ra, rb = runs
    counts, changed = _verdicts(Study(ra.root), Study(rb.root))
    return Comparison(
        a=ra.root,
        b=rb.root,
        settings=_diff(settings_of(ra), settings_of(rb)),
        losses=_losses(in_domain_losses(ra), in_domain_losses(rb)),
        matrix=_matrices(zero_shot_matrix(ra), zero_shot_matrix(rb)),
        verdict_counts=counts,
        verdicts=changed,
    )
