"""What each ``domaingpt`` command does: the study (``run``), the stages (generated from
their settings), and the commands that are not stages (``train``, ``sample``,
``corpora``)."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from domaingpt.cli.options import command_log, settings_from_args, show_progress
from domaingpt.context.records import StageStatus
from domaingpt.context.rundir import RunDir
from domaingpt.core.config import RunConfig
from domaingpt.core.distributed import study_ranks
from domaingpt.errors import ConfigError, one_line

if TYPE_CHECKING:
    from domaingpt.context.stage import Stage

#: The training preset of ``domaingpt train`` when none is given (and none is recorded).
DEFAULT_TRAIN_PRESET = "cpu-mini"


def cmd_corpora(args: argparse.Namespace) -> int:
    from domaingpt.data.corpus import corpus_table

    for row in corpus_table(args.data_dir):
        ok = {True: "ok", False: "MISMATCH", None: "-"}[row["sha256_ok"]]
        size = f"{row['size_bytes']:,} B" if row["size_bytes"] else ""
        print(f"{row['name']:<12} {ok:<9} {size:>13}  {row['path']}")
        print(f"{'':<12} {row['description']} [{row['licence']}]")
        if row["found_in"] is None:
            print(f"{'':<12} not found locally; downloads from {row['url']}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Train one model: the train stage's own job (:func:`domaingpt.context.training.train_one`),
    so its vocabulary, checks and model are those of a study's."""
    from domaingpt.context.training import train_one
    from domaingpt.data.corpus import resolve_corpus

    run = RunDir(Path(args.out))
    run.check_writable()
    download = not args.offline
    corpus = resolve_corpus(args.corpus, args.data_dir, download=download)
    cfg = _train_config(args, run.model(corpus.name))
    names = [n.strip() for n in (args.vocab or "").split(",") if n.strip()]
    if args.vocab is not None and not names:
        raise ConfigError("--vocab needs corpus names or paths, e.g. --vocab shakespeare,math")
    result = train_one(
        run,
        corpus,
        cfg,
        vocab_corpora=[resolve_corpus(n, args.data_dir, download=download) for n in names],
        vocab_names=args.vocab,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=show_progress(args),
        log=command_log(args),
        data_dir=args.data_dir,
        download=download,
    )
    if result.is_main:
        print(f"val_loss {result.val_loss:.4f}  model {result.model_dir}")
    return 0


def _train_config(args: argparse.Namespace, model_dir: Path) -> RunConfig:
    """``--preset`` with the ``--set`` overrides; with ``--resume`` and no ``--preset``, the
    configuration the model there was trained with (its ``run.json``) instead of a preset,
    so that a model continues as it was configured (``--set train.max_iters=N`` extends it)."""
    from domaingpt.core.config import build_config
    from domaingpt.training.modeldir import recorded_config

    if args.resume and args.preset is None:
        recorded = recorded_config(model_dir, args.set)
        if recorded is not None:
            return recorded
    return build_config(args.preset or DEFAULT_TRAIN_PRESET, args.set)


def cmd_sample(args: argparse.Namespace) -> int:
    """Print the prompt, then each character as it is sampled: a long text shows as it
    grows, and Ctrl-C keeps what was printed."""
    from domaingpt.context.prompts import decode_escapes
    from domaingpt.core.device import pick_device
    from domaingpt.model.checkpoint import find_checkpoint, load_checkpoint
    from domaingpt.model.generate import check_sampling, stream_text

    check_sampling(args.chars, args.temperature, args.top_k, args.seed)  # before loading
    info = find_checkpoint(args.model, args.iter)
    loaded = load_checkpoint(info, pick_device(args.device))
    prompt = decode_escapes(args.prompt) if args.escapes else args.prompt
    chars = stream_text(
        loaded.model,
        loaded.vocab,
        prompt,
        args.chars,
        temperature=args.temperature,
        top_k=args.top_k,
        seed=args.seed,
    )
    out = sys.stdout
    every = 1 if out.isatty() else 1024  # a terminal sees each character
    out.write(prompt)
    try:
        for i, ch in enumerate(chars, start=1):
            out.write(ch)
            if i % every == 0:
                out.flush()
    finally:
        out.write("\n")
        out.flush()
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from domaingpt.study import load_study, run_study

    spec = load_study(args.study, preset=args.preset)
    out = Path(args.out) if args.out else Path("runs") / spec.name
    # main() locks an explicit --out; the default one is known only now.
    lock = contextlib.nullcontext() if args.out else RunDir(out).lock()
    # Under torchrun, rank 0 runs the study and the other ranks run its jobs.
    log = command_log(args)  # the run's log.txt gets every line, --quiet or not
    with lock, study_ranks(spec.ranks, spec.config().train.device, log=log) as ranks:
        if ranks is None:  # a rank other than 0: it served rank 0's jobs
            return 0
        result = run_study(
            spec,
            out,
            data_dir=args.data_dir,
            force=args.force,
            progress=show_progress(args),
            log=log,
            download=not args.offline,
            threads=args.threads,
            ranks=ranks,
        )
    for o in result.failed:
        print(f"error: stage {o.stage} failed: {one_line(o.message)}", file=sys.stderr)
    if result.failed:
        blocked = [o.stage for o in result.outcomes if o.status == StageStatus.BLOCKED]
        waiting = f"; blocked until then: {', '.join(blocked)}" if blocked else ""
        report = (
            "the report was written again with the missing parts marked: "
            f"{result.run.root / 'report.html'}"
            if result.report_written
            else "no report was written"
        )
        print(
            f"the stages before stayed done{waiting}; fix the cause and run the same command "
            f"again ({report})",
            file=sys.stderr,
        )
    return result.exit_code


def stage_command(stage: Stage) -> Callable[[argparse.Namespace], int]:
    """``domaingpt NAME``: run one stage into ``--out`` and print what it found."""
    # Here, not at the top: the stage contract imports pandas, which the commands that
    # are not stages (train: a 3-second start) never need.
    from domaingpt.context.stage import StageContext, run_stage
    from domaingpt.study.pipeline import BUILTIN_STAGES, REPORT

    def command(args: argparse.Namespace) -> int:
        settings = settings_from_args(stage.settings, args, stage.name)
        run = RunDir(Path(args.out))
        run.check_writable()
        log = command_log(args)
        with study_ranks("jobs", settings.device, log=log) as ranks:  # torchrun: jobs over ranks
            if ranks is None:  # a rank other than 0: it served rank 0's jobs
                return 0
            ctx = StageContext(
                run=run,
                stage=stage,
                progress=show_progress(args),
                log=log,
                ranks=ranks,
                stages=(*BUILTIN_STAGES, REPORT),
            )
            written, claims = run_stage(ctx, settings)
        text = stage.summary_text(written)
        if text is not None:
            print(text.rstrip("\n"))
        else:
            for c in claims:
                print(c.line())
        return 0

    return command
