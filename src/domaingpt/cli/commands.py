"""What each ``domaingpt`` command does: the study (``run``), the stages (generated from
their settings), and the commands that are not stages (``train``, ``sample``,
``corpora``)."""

from __future__ import annotations

import argparse
import contextlib
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

from domaingpt.cli.options import settings_from_args
from domaingpt.core.progress import Log, quiet_log, stderr_log
from domaingpt.core.rundir import RunDir, default_vocab_corpora, study_vocab
from domaingpt.core.stage import Stage, StageContext, run_stage
from domaingpt.core.threads import torch_threads


def command_log(args: argparse.Namespace) -> Log:
    """A command's log: stderr, above any progress bar (nothing with ``--quiet``)."""
    return quiet_log if getattr(args, "quiet", False) else stderr_log


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
    from domaingpt.core.config import build_config
    from domaingpt.core.device import pick_device
    from domaingpt.data.corpus import resolve_corpus
    from domaingpt.data.encoding import encode_corpus
    from domaingpt.training.loop import train
    from domaingpt.training.memory import check_fits

    cfg = build_config(args.preset, args.set)
    check_fits(cfg, device_type=pick_device(cfg.train.device).type)  # before any write
    run = RunDir(Path(args.out))
    run.check_writable()
    download = not args.offline
    corpus = resolve_corpus(args.corpus, args.data_dir, download=download)
    if args.vocab:
        names = [n for n in args.vocab.split(",") if n]
        vocab_corpora = [resolve_corpus(n, args.data_dir, download=download) for n in names]
    elif run.vocab_path.exists():
        vocab_corpora = []
    else:
        vocab_corpora = default_vocab_corpora([corpus], args.data_dir, download=download)
    vocab = study_vocab(run, vocab_corpora)
    encoded = encode_corpus(corpus, vocab)
    if encoded.n_unk:
        warnings.warn(
            f"{encoded.n_unk} characters of {corpus.name} are not in the run's vocabulary "
            f"({run.vocab_path}) and are trained as <unk>",
            stacklevel=1,
        )
    train_ids, val_ids = encoded.checked_split(cfg.data.val_fraction, cfg.model.block_size)
    result = train(
        corpus.name,
        corpus.sha256,
        train_ids,
        val_ids,
        vocab,
        cfg,
        run.model(corpus.name),
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.quiet,
        log=command_log(args),
    )
    if result.is_main:
        print(f"val_loss {result.val_loss:.4f}  model {result.model_dir}")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    """Print the prompt, then each character as it is sampled: a long text shows as it
    grows, and Ctrl-C keeps what was printed."""
    from domaingpt.core.device import pick_device
    from domaingpt.data.prompts import decode_escapes
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
    quiet = (lambda msg: print(msg, file=sys.stderr)) if args.quiet else None
    out = Path(args.out) if args.out else Path("runs") / spec.name
    # main() locks an explicit --out; the default one is known only now.
    lock = contextlib.nullcontext() if args.out else RunDir(out).lock()
    with lock:
        result = run_study(
            spec,
            out,
            data_dir=args.data_dir,
            force=args.force,
            progress=not args.quiet,
            log=quiet,
            download=not args.offline,
            threads=args.threads,
        )
    for o in result.failed:
        print(f"error: stage {o.stage} failed: {o.message}", file=sys.stderr)
    if result.failed:
        print(
            f"the stages before stayed done; fix the cause and run the same command again "
            f"(report with the missing parts marked: {result.run.root / 'report.html'})",
            file=sys.stderr,
        )
    return result.exit_code


def stage_command(stage: Stage) -> Callable[[argparse.Namespace], int]:
    """``domaingpt NAME``: run one stage into ``--out`` and print what it found."""

    def command(args: argparse.Namespace) -> int:
        settings = settings_from_args(stage.settings, args)
        run = RunDir(Path(args.out))
        run.check_writable()
        ctx = StageContext(run=run, stage=stage, progress=not args.quiet, log=command_log(args))
        with torch_threads(settings.threads):
            written, claims = run_stage(ctx, settings)
        if stage.summary is not None:
            print(stage.summary(written).rstrip("\n"))
        else:
            for c in claims:
                print(c.line())
        return 0

    return command
