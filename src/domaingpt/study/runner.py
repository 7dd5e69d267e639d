"""Running a study: its stages in order, each skipped when nothing it depends on changed.

Each stage writes into its own folder of the run directory and leaves a record in
``stages/<stage>.json``: its status, the *key* it ran with, the files it wrote and their
SHA-256. The key is a hash of the stage's settings (runtime fields left out), the
checksums of its inputs (the corpora, the files of the stages it needs or uses), the
tool version, and for a user's stage the SHA-256 of its source (every ``.py`` file of its
package; a stage that uses a user's stage, like the report, depends on that source too,
since it draws the user's section and claims with it). A stage whose key is
unchanged and whose files all still hold the bytes recorded (SHA-256) is skipped, so the
second run of a command does no work; a run stopped anywhere continues where it stopped,
since a record is written only when its stage has finished.

A stage that fails leaves the stages before it done, the stages that need it blocked
(keeping their earlier results, reused once it is repaired if nothing they depend on
changed), and the report marks the parts missing.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from domaingpt.context.activations import ActivationCache
from domaingpt.context.records import Outputs, StageRecord, StageStatus
from domaingpt.context.rundir import RunDir, unwritable
from domaingpt.context.stage import Stage, StageContext, run_stage
from domaingpt.core.distributed import Ranks
from domaingpt.core.io import append_text, atomic_write_text, write_json
from domaingpt.core.progress import Log, stderr_log
from domaingpt.core.threads import torch_threads
from domaingpt.core.version import __version__
from domaingpt.data.corpus import Corpus, resolve_corpus, sha256_file, sha256_once
from domaingpt.errors import ConfigError, DomainGPTError, disk_error
from domaingpt.study.pipeline import REPORT
from domaingpt.study.spec import StudySpec, preset_study_text


def _files_of(paths: Iterable[Path]) -> list[Path]:
    files: set[Path] = set()
    for p in paths:
        p = Path(p)
        if p.is_dir():
            files.update(f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
        elif p.is_file():
            files.add(p)
    return sorted(files)


def fingerprint_outputs(root: Path, paths: Iterable[Path]) -> Outputs:
    """``{relative path: [size, sha256]}`` of the files a stage wrote (dirs walked)."""
    out = {}
    root = root.resolve()
    for f in _files_of(paths):
        try:
            rel = f.resolve().relative_to(root).as_posix()
        except ValueError:
            rel = str(f.resolve())
        out[rel] = [f.stat().st_size, sha256_file(f)]
    return out


def outputs_intact(root: Path, outputs: Outputs) -> bool:
    """Every recorded file is still there, with its recorded size and SHA-256 (an edit
    that keeps the size is a change too; each file is read once per process)."""
    for rel, (size, sha) in outputs.items():
        p = root / rel
        if not p.is_file() or p.stat().st_size != size or sha256_once(p) != sha:
            return False
    return True


@dataclass
class StageOutcome:
    stage: str
    status: StageStatus  # done | skipped | failed | blocked
    seconds: float = 0.0
    message: str = ""
    user_error: bool = True  # False: an unexpected exception (a bug), see stages/<stage>.log


@dataclass
class StudyResult:
    run: RunDir
    outcomes: list[StageOutcome] = field(default_factory=list)

    @property
    def failed(self) -> list[StageOutcome]:
        return [o for o in self.outcomes if o.status == StageStatus.FAILED]

    @property
    def ok(self) -> bool:
        return not self.failed

    def status(self, stage: str) -> StageStatus:
        return next(o.status for o in self.outcomes if o.stage == stage)

    @property
    def report_written(self) -> bool:
        """The report of this run is there: its stage finished now or earlier."""
        finished = (StageStatus.DONE, StageStatus.SKIPPED)
        return any(o.stage == REPORT.name and o.status in finished for o in self.outcomes)

    @property
    def exit_code(self) -> int:
        if not self.failed:
            return 0
        return 2 if all(o.user_error for o in self.failed) else 1


@dataclass
class _Run:
    """What every stage of one ``run_study`` call shares."""

    run: RunDir
    spec: StudySpec
    corpora: list[Corpus]
    progress: bool
    log: Log
    force: set[str]
    data_dir: str | Path | None
    download: bool
    threads: int
    ranks: Ranks
    activations: ActivationCache  # one forward-pass cache for every stage of the run


def _digest(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def fmt_seconds(s: float) -> str:
    return f"{s:.1f} s" if s < 90 else f"{int(s // 60)} min {int(s % 60):02d} s"


def versions(threads: int = 0) -> dict[str, Any]:
    """Versions of the tool and its main dependencies, and what else decides the last
    bits of every number (README, "Reproducibility"): the CPU's instruction set, which
    picks the kernels, and the number of torch threads (``threads``; 0: torch's default).
    """
    import numpy
    import torch

    return {
        "domaingpt": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "pandas": pd.__version__,
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": threads or torch.get_num_threads(),
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _make_log(run: RunDir, sink: Log | None) -> Log:
    log_file = run.root / "log.txt"

    def log(msg: str) -> None:
        (sink or stderr_log)(msg)
        try:
            append_text(log_file, f"{datetime.now().strftime('%H:%M:%S')} {msg}\n")
        except OSError as e:  # a full disk: the line reached the user; the stage says why
            if disk_error(e) is None:
                raise

    return log


def _copy_study(run: RunDir, spec: StudySpec, threads: int = 0) -> None:
    """The study file, its resolved form and the versions, written into the run.

    Rewritten only when they changed, so a run that does no work changes no file.
    """
    text = spec.text if spec.text is not None else preset_study_text(spec.base)
    path = run.root / "study.toml"
    old = path.read_text(encoding="utf-8").split("\n", 1)[-1] if path.is_file() else None
    if old != text:
        header = (
            f"# Copied by domaingpt {__version__} at {_now()}; layered over the "
            f"{spec.base!r} study preset. Resolved: study.json, versions: versions.json.\n"
        )
        atomic_write_text(path, header + text)
    for name, obj in (("study.json", spec.to_dict()), ("versions.json", versions(threads))):
        target = run.root / name
        try:
            same = target.is_file() and json.loads(target.read_text(encoding="utf-8")) == obj
        except (OSError, ValueError):
            same = False
        if not same:
            write_json(target, obj)


def run_study(
    spec: StudySpec,
    out: str | Path | None = None,
    *,
    data_dir: str | Path | None = None,
    force: Iterable[str] = (),
    progress: bool = True,
    log: Log | None = None,
    download: bool = True,
    threads: int | None = None,
    ranks: Ranks | None = None,
) -> StudyResult:
    """Run every stage of ``spec`` into ``out`` (default ``runs/<name>``); see module doc.

    ``threads`` (default: the study's ``threads``) sets torch's thread count for every
    stage; on a CPU shared with other jobs, 1 can be many times faster for small models.
    ``log`` receives the log lines (default: stderr above the progress bars). A stage
    failure does not raise: it is in the result (``result.failed``) and its record.
    KeyboardInterrupt propagates; running again continues. ``ranks``: the processes the
    stages' jobs spread over (:func:`~domaingpt.core.distributed.study_ranks`; default this
    one alone).
    """
    ranks = ranks or Ranks()
    run = RunDir(Path(out) if out is not None else Path("runs") / spec.name)
    run.check_writable()
    names = [s.name for s in spec.stages]
    force = set(names) if "all" in force else {spec.stage(name).name for name in force}
    corpora = [
        resolve_corpus(c, data_dir or spec.data_dir, download=download) for c in spec.corpora
    ]
    corpus_names = [c.name for c in corpora]
    if len(set(corpus_names)) != len(corpus_names):
        raise ConfigError(f"study.corpora names the same corpus twice: {corpus_names}")
    spec.check_before_run(
        corpora,
        threads=spec.threads if threads is None else threads,
        data_dir=data_dir or spec.data_dir,
        offline=not download,
    )
    try:
        run.root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise unwritable(run.root, e) from None
    run.refuse_links()
    log_fn = _make_log(run, log)
    _copy_study(run, spec, spec.threads if threads is None else threads)
    ctx = _Run(
        run,
        spec,
        corpora,
        progress,
        log_fn,
        force,
        data_dir or spec.data_dir,
        download,
        spec.threads if threads is None else threads,
        ranks,
        ActivationCache(),
    )
    result = StudyResult(run)
    records = {s.name: s.record(run) for s in spec.stages}
    n = len(spec.stages)
    log_fn(f"study {spec.name!r}: {len(corpora)} corpora ({', '.join(corpus_names)}) → {run.root}")
    if ranks.world > 1:
        how = "jobs spread over them" if ranks.mode == "jobs" else "each model trained with DDP"
        log_fn(f"{ranks.world} ranks ({how}); rank 0 writes the tables and the report")
    for i, stage in enumerate(spec.stages, start=1):
        outcome = _run_one(stage, ctx, records, f"stage {i}/{n}: {stage.name}")
        result.outcomes.append(outcome)
        records[stage.name] = stage.record(run)
    done = sum(o.status in (StageStatus.DONE, StageStatus.SKIPPED) for o in result.outcomes)
    report = f"report: {run.root / 'report.html'}" if result.report_written else "no report"
    log_fn(f"study {spec.name!r}: {done}/{n} stages complete; {report}")
    return result


def _inputs(stage: Stage, ctx: _Run, records: dict[str, StageRecord | None]) -> dict[str, Any]:
    inputs: dict[str, Any] = {"corpora": [[c.name, c.sha256] for c in ctx.corpora]}
    uses = stage.uses
    if "*" in uses:  # every stage before this one
        uses = tuple(s.name for s in ctx.spec.stages[: ctx.spec.stages.index(stage)])
    for dep in (*stage.needs, *uses):
        rec = records.get(dep)
        if rec is not None and rec.done:
            inputs[dep] = _digest(rec.outputs)
        else:  # the status's string, as in every key made before statuses were typed
            inputs[dep] = str(rec.status if rec is not None else StageStatus.ABSENT)
        if dep in ctx.spec.stage_code:  # the report draws a user stage's section with its code
            inputs[f"{dep}.code"] = ctx.spec.stage_code[dep]
    if stage.name in ctx.spec.stage_code:  # a user's stage: its source is an input too
        inputs["code"] = ctx.spec.stage_code[stage.name]
    return inputs


def _failed(
    stage: Stage, ctx: _Run, head: str, error: BaseException, seconds: float
) -> StageOutcome:
    """Record and log a failed stage; the message names the stage and the cause."""
    user_error = isinstance(error, DomainGPTError)
    message = str(error) if user_error else f"{type(error).__name__}: {error}"
    if isinstance(error, SystemExit):
        message = f"it called sys.exit({error.code!r}); a stage fails by raising an exception"
    elif isinstance(error, OSError) and disk_error(error):  # a full disk, permissions
        user_error, message = True, f"{disk_error(error)}, then run the same command again"
    record = StageRecord(
        stage.name, StageStatus.FAILED, message=message, at=_now(), seconds=round(seconds, 3)
    )
    try:  # on a full disk these writes fail too: the message still reaches the user
        if not user_error:
            tb = ctx.run.root / "stages" / f"{stage.name}.log"
            atomic_write_text(
                tb, "".join(traceback.format_exception(type(error), error, error.__traceback__))
            )
            record = replace(record, traceback=str(tb))
            message += f" (traceback in {tb})"
        ctx.run.write_record(record)
    except OSError:
        pass
    ctx.log(f"{head} — FAILED: {message}")
    return StageOutcome(stage.name, StageStatus.FAILED, seconds, message, user_error)


def _run_one(
    stage: Stage, ctx: _Run, records: dict[str, StageRecord | None], head: str
) -> StageOutcome:
    run, log = ctx.run, ctx.log
    last = records.get(stage.name)
    # A blocked stage keeps its finished work: used again, unchanged, once what it needs
    # is repaired (its key says whether it is still valid).
    kept = last if last is not None and last.done else (last.kept if last else None)
    missing = [d for d in stage.needs if not ((rec := records.get(d)) and rec.done)]
    if missing:
        reason = f"needs {', '.join(missing)}, which did not complete"
        if kept:
            reason += " (its earlier results are kept, and reused once that is repaired)"
        log(f"{head} — blocked: {reason}")
        run.write_record(
            StageRecord(stage.name, StageStatus.BLOCKED, message=reason, at=_now(), kept=kept)
        )
        return StageOutcome(stage.name, StageStatus.BLOCKED, message=reason)
    old = kept or last
    old_done = old is not None and old.done

    t0, c0 = time.perf_counter(), time.process_time()
    try:
        settings = ctx.spec.settings(
            stage.name, corpora=ctx.corpora, data_dir=ctx.data_dir, offline=not ctx.download
        )
        inputs = _inputs(stage, ctx, records)
        settings_d = settings.key_dict()
        key = _digest(
            {"stage": stage.name, "settings": settings_d, "inputs": inputs, "v": __version__}
        )
        forced = stage.name in ctx.force
        if not forced and old_done and old.key == key and outputs_intact(run.root, old.outputs):
            if last is not old:  # a blocked stage's results, valid again
                run.write_record(old)
            log(f"{head} — unchanged, skipped")
            return StageOutcome(stage.name, StageStatus.SKIPPED)
        if old_done and not forced:
            why = "its inputs or settings changed" if old.key != key else "files missing or changed"
            log(f"{head} — {stage.title}: running again ({why})")
        else:
            log(f"{head} — {stage.title}")
        # Until this stage finishes, no record says it is done.
        run.record_path(stage.name).unlink(missing_ok=True)
        sctx = StageContext(
            run=run,
            stage=stage,
            corpora=ctx.corpora,
            progress=ctx.progress,
            log=log,
            force=forced,
            stages=ctx.spec.stages,
            study=ctx.spec,
            ranks=ctx.ranks,
            activations=ctx.activations,
        )
        with torch_threads(ctx.threads):
            written, _ = run_stage(sctx, settings)
        if not written:
            written = {"dir": sctx.out}
        outputs = fingerprint_outputs(run.root, [Path(p) for p in written.values()])
    except KeyboardInterrupt:
        log(f"{head} — interrupted; run the same command again to continue")
        raise
    except (Exception, SystemExit) as e:  # a stage's sys.exit() is its failure, never exit 0
        return _failed(stage, ctx, head, e, time.perf_counter() - t0)
    seconds = time.perf_counter() - t0
    run.write_record(
        StageRecord(
            stage.name,
            StageStatus.DONE,
            key=key,
            settings=settings_d,
            inputs=inputs,
            outputs=outputs,
            version=__version__,
            at=_now(),
            seconds=round(seconds, 3),
            cpu_seconds=round(time.process_time() - c0, 3),
        )
    )
    log(f"{head} — done in {fmt_seconds(seconds)}")
    return StageOutcome(stage.name, StageStatus.DONE, seconds)


__all__ = ["StageOutcome", "StudyResult", "fmt_seconds", "run_study", "sha256_file", "versions"]
