"""The ``domaingpt`` command line.

Every user-facing failure is a :class:`~domaingpt.errors.DomainGPTError`: it is printed
as one line on stderr and the exit status is 2. Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import __version__
from .errors import DomainGPTError


def _add_common(p: argparse.ArgumentParser, *, offline: bool = False) -> None:
    """``--offline`` (commands that may download a corpus), ``--data-dir`` and ``--quiet``."""
    if offline:
        p.add_argument("--offline", action="store_true", help="never download a corpus")
    p.add_argument(
        "--data-dir",
        metavar="DIR",
        help="directory holding corpus files (default: $DOMAINGPT_DATA, then the cache)",
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")


def _add_out(p: argparse.ArgumentParser) -> None:
    """``--out``: the run directory a command writes into."""
    p.add_argument("--out", default="runs/default", help="run directory (default: runs/default)")


def _add_models(p: argparse.ArgumentParser) -> None:
    """``--models``: which trained models of the run a command reads."""
    p.add_argument("--models", help="comma-separated models (default: every trained model)")


def _add_compute(
    p: argparse.ArgumentParser,
    *,
    device: str = "auto",
    threads: int = 0,
    device_help: str | None = None,
    threads_help: str = "torch threads (default: torch's)",
) -> None:
    """``--device`` and ``--threads`` of a command that runs models."""
    p.add_argument("--device", default=device, help=device_help)
    p.add_argument("--threads", type=int, default=threads, help=threads_help)


def _log(args: argparse.Namespace):
    """A command's log: stderr, above any progress bar (nothing with ``--quiet``)."""
    if getattr(args, "quiet", False):
        return lambda msg: None
    from tqdm.auto import tqdm

    return lambda msg: tqdm.write(msg, file=sys.stderr)


# --- corpora -------------------------------------------------------------------------


def cmd_corpora(args: argparse.Namespace) -> int:
    from .corpus import corpus_table

    rows = corpus_table(args.data_dir)
    for row in rows:
        ok = {True: "ok", False: "MISMATCH", None: "-"}[row["sha256_ok"]]
        size = f"{row['size_bytes']:,} B" if row["size_bytes"] else ""
        print(f"{row['name']:<12} {ok:<9} {size:>13}  {row['path']}")
        print(f"{'':<12} {row['description']} [{row['licence']}]")
        if row["found_in"] is None:
            print(f"{'':<12} not found locally; downloads from {row['url']}")
    return 0


# --- stats ---------------------------------------------------------------------------


def cmd_stats(args: argparse.Namespace) -> int:
    from .corpus import resolve_corpus
    from .rundir import RunDir
    from .stats import compute_stats, summary_markdown, write_stats

    run = RunDir(Path(args.out))
    run.check_writable()
    stats = []
    for name in args.corpora:
        corpus = resolve_corpus(name, args.data_dir, download=not args.offline)
        stats.append(
            compute_stats(corpus.name, corpus.read_text(), n_bytes=corpus.path.stat().st_size)
        )
    written = write_stats(stats, run.stats)
    print(summary_markdown(stats))
    _log(args)(f"wrote {len(written)} files to {run.stats}")
    return 0


# --- train ---------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    from .config import build_config
    from .corpus import resolve_corpus
    from .data import encode_corpus
    from .rundir import RunDir, default_vocab_corpora, study_vocab
    from .train import train

    cfg = build_config(args.preset, args.set)
    run = RunDir(Path(args.out))
    run.check_writable()
    corpus = resolve_corpus(args.corpus, args.data_dir, download=not args.offline)
    if args.vocab:
        vocab_corpora = [resolve_corpus(n, args.data_dir) for n in args.vocab.split(",") if n]
    elif run.vocab_path.exists():
        vocab_corpora = []
    else:
        vocab_corpora = default_vocab_corpora([corpus], args.data_dir)
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
        log=_log(args),
    )
    if result.is_main:
        print(f"val_loss {result.val_loss:.4f}  model {result.model_dir}")
    return 0


# --- sample --------------------------------------------------------------------------


def cmd_sample(args: argparse.Namespace) -> int:
    from .checkpoint import find_checkpoint, load_checkpoint
    from .device import pick_device
    from .sample import generate_text

    info = find_checkpoint(args.model, args.iter)
    loaded = load_checkpoint(info, pick_device(args.device))
    prompt = args.prompt.encode("utf-8").decode("unicode_escape") if args.escapes else args.prompt
    text = generate_text(
        loaded.model,
        loaded.vocab,
        prompt,
        args.chars,
        temperature=args.temperature,
        top_k=args.top_k,
        seed=args.seed,
    )
    sys.stdout.write(prompt + text + "\n")
    return 0


# --- run (the whole study) -----------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from .rundir import RunDir
    from .study import load_study, run_study

    spec = load_study(args.study, preset=args.preset)
    quiet_log = (lambda msg: print(msg, file=sys.stderr)) if args.quiet else None
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
            log=quiet_log,
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


# --- evaluate / adapt ------------------------------------------------------------------


def _names(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def _int_list(text: str, what: str) -> list[int]:
    try:
        return [int(t) for t in _names(text)]
    except ValueError:
        raise DomainGPTError(f"{what} must be comma-separated integers, got {text!r}") from None


def _compute_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Settings fields every model-running command takes from its common options."""
    return {"device": args.device, "threads": args.threads, "data_dir": args.data_dir or ""}


def _run_stage(
    args: argparse.Namespace, runner: Callable[..., dict[str, Path]], settings: Any
) -> dict[str, Path]:
    """Run a stage's ``runner`` into ``--out`` with the command's progress and log."""
    from .rundir import RunDir

    return runner(RunDir(Path(args.out)), settings, progress=not args.quiet, log=_log(args))


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import EvalSettings, run_evaluate

    settings = EvalSettings(
        models=_names(args.models),
        corpora=_names(args.corpora),
        checkpoints=args.checkpoints,
        batch_size=args.batch_size,
        bootstrap=args.bootstrap,
        seed=args.seed,
        offline=args.offline,
        **_compute_settings(args),
    )
    written = _run_stage(args, run_evaluate, settings)
    print(written["zero_shot_md"].read_text(encoding="utf-8"))
    return 0


def cmd_adapt(args: argparse.Namespace) -> int:
    from .adapt import AdaptSettings, run_adapt

    settings = AdaptSettings(
        iters=args.iters,
        early=args.early,
        seeds=args.seeds,
        seed=args.seed,
        lr=args.lr,
        warmup_iters=args.warmup,
        schedule=_int_list(args.schedule, "--schedule"),
        pairs=_names(args.pairs),
        starts=_names(args.starts),
        eval_windows=args.eval_windows,
        offline=args.offline,
        **_compute_settings(args),
    )
    written = _run_stage(args, run_adapt, settings)
    print(written["summary_md"].read_text(encoding="utf-8"))
    return 0


def cmd_quality(args: argparse.Namespace) -> int:
    from .samplequality import SampleQualitySettings, run_sample_quality

    settings = SampleQualitySettings(
        samples=args.samples,
        chars=args.chars,
        prompt=args.prompt,
        temperature=args.temperature,
        models=_names(args.models),
        iterations=_int_list(args.iterations or "", "--iterations"),
        corpora=_names(args.corpora),
        n_slices=args.slices,
        adapt=not args.no_adapt,
        adapt_samples=args.adapt_samples,
        **_compute_settings(args),
    )
    written = _run_stage(args, run_sample_quality, settings)
    print(written["summary"].read_text(encoding="utf-8"))
    return 0


# --- probe / saliency ------------------------------------------------------------------


def _verdict_word(holds) -> str:
    return {True: "holds", False: "fails"}.get(holds, "undecided")


def _print_claims(claims: Any) -> None:
    """One line per row of a claims table: verdict, claim, model and evidence."""
    for r in claims.itertuples():
        print(f"[{_verdict_word(r.holds)}] {r.claim} ({r.model}): {r.evidence}")


def _prompt_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Settings fields of the prompt options that probe and saliency share."""
    return {
        "models": _names(args.models),
        "corpora": _names(args.corpora),
        "prompts_per_corpus": args.prompts_per_corpus,
        "length": args.length,
        "prompts": list(args.prompt or []),
        "prompt_file": args.prompt_file or "",
        **_compute_settings(args),
    }


def cmd_probe(args: argparse.Namespace) -> int:
    from .probe import ProbeSettings, load_probe, run_probe
    from .rundir import RunDir

    settings = ProbeSettings(top_k=args.top_k, epsilon=args.epsilon, **_prompt_settings(args))
    _run_stage(args, run_probe, settings)
    tables = load_probe(RunDir(Path(args.out)))
    for r in tables["hardening"].itertuples():
        when = (
            "not reached"
            if pd_isna(r.hardening_iteration)
            else f"iteration {r.hardening_iteration}"
        )
        where = {"in": "in-domain", "out": "out-of-domain"}.get(r.domain, f"{r.domain} prompts")
        print(f"hardening {r.model} ({where}): {when} (of {r.final_iteration})")
    _print_claims(tables["claims"])
    return 0


def pd_isna(value) -> bool:
    import pandas as pd

    return bool(pd.isna(value))


def cmd_saliency(args: argparse.Namespace) -> int:
    from .saliency import SaliencySettings, check_methods, run_saliency

    settings = SaliencySettings(
        methods=check_methods(_names(args.methods)),
        checkpoints=args.checkpoints,
        ig_steps=args.ig_steps,
        deletion_k=_int_list(args.deletion_k, "--deletion-k"),
        **_prompt_settings(args),
    )
    paths = _run_stage(args, run_saliency, settings)
    from .probe import read_table

    _print_claims(read_table(paths["claims"]))
    print(f"heatmap: {paths['heatmap']}")
    return 0


# --- parser --------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected zero or more, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="domaingpt",
        description="Study how the training domain shapes small character-level GPT models.",
    )
    parser.add_argument("--version", action="version", version=f"domaingpt {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "run",
        help="run the whole study (statistics, training, analyses) and write its report",
        description="Run every stage of a study into runs/NAME and write report.html. "
        "Finished stages whose inputs are unchanged are skipped; an interrupted run "
        "continues where it stopped.",
    )
    p.add_argument("study", nargs="?", help="study file (TOML); default: the --preset study")
    p.add_argument(
        "--preset",
        default=None,
        help="study preset: smoke, cpu or gpu (default: cpu); a study file is layered over it",
    )
    p.add_argument("--out", default=None, help="run directory (default: runs/<study name>)")
    p.add_argument(
        "--force",
        action="append",
        default=[],
        metavar="STAGE",
        help="redo a stage even if unchanged (repeatable; 'all' for every stage)",
    )
    p.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="torch threads for every stage (default: the study's; 1 is often fastest on a "
        "CPU shared with other jobs)",
    )
    _add_common(p, offline=True)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("corpora", help="list the known corpora, where each was found, checksum ok?")
    _add_common(p)
    p.set_defaults(func=cmd_corpora)

    p = sub.add_parser("stats", help="character statistics of corpora (tables and figures)")
    p.add_argument("corpora", nargs="+", help="built-in corpus names or paths to text files")
    _add_out(p)
    _add_common(p, offline=True)
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("train", help="train a character-level GPT on one corpus")
    p.add_argument("corpus", help="built-in corpus name or path to a text file")
    p.add_argument(
        "--preset", default="cpu-mini", help="preset name or TOML file (default: cpu-mini)"
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.lr=3e-4 (repeatable)",
    )
    _add_out(p)
    p.add_argument(
        "--vocab",
        help="comma-separated corpora whose characters form the vocabulary "
        "(default: the run's vocab.json, else the built-in corpora plus this one)",
    )
    p.add_argument(
        "--resume", action="store_true", help="continue from the newest valid checkpoint"
    )
    p.add_argument(
        "--overwrite", action="store_true", help="delete an existing model directory first"
    )
    _add_common(p, offline=True)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="generate text from a trained model")
    p.add_argument("model", help="model directory (runs/NAME/models/CORPUS) or checkpoint file")
    p.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    p.add_argument("--escapes", action="store_true", help=r"interpret \n, \t in --prompt")
    p.add_argument("--chars", type=_positive_int, default=300, help="characters to generate")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--iter", default="final", help="history checkpoint iteration (default: final)")
    p.add_argument("--device", default="auto")
    _add_common(p)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser(
        "evaluate",
        help="zero-shot loss of every model checkpoint on every corpus (the loss matrix)",
        description="Score every (model checkpoint, corpus) pair of a run on the corpus's "
        "whole validation split; writes eval/zero_shot.{csv,md,png}.",
    )
    _add_out(p)
    _add_models(p)
    p.add_argument(
        "--corpora", help="comma-separated corpus names or paths (default: the models' corpora)"
    )
    p.add_argument(
        "--checkpoints",
        default="final",
        help="final, all, or iterations like 0,500,2000 (default: final)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=128,
        help="windows per forward pass (the native CPU engine uses at most 1024 positions, "
        "16 windows of 64; default: 128)",
    )
    p.add_argument(
        "--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95 %% interval"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    _add_compute(p)
    _add_common(p, offline=True)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "adapt",
        help="few-shot adaptation of each model to each other corpus, from early, final "
        "and scratch starts",
        description="Continue training each source model on each other corpus from its final "
        "checkpoint, an early checkpoint and from scratch; writes adapt/ (curves, summary, "
        "adapted checkpoints, samples).",
    )
    _add_out(p)
    p.add_argument("--iters", type=int, default=200, help="adaptation iterations (default: 200)")
    p.add_argument(
        "--early",
        default="auto",
        help="early checkpoint iteration, or auto: the one nearest 10 %% of training",
    )
    p.add_argument("--seeds", type=int, default=3, help="seeds per start point (default: 3)")
    p.add_argument("--seed", type=int, default=0, help="first seed (default: 0)")
    p.add_argument("--lr", type=float, default=0.0, help="peak lr (default: the source's)")
    p.add_argument("--warmup", type=int, default=10, help="warm-up iterations (default: 10)")
    p.add_argument(
        "--schedule",
        default="0,10,25,50,100,200",
        help="steps at which losses are recorded (default: 0,10,25,50,100,200)",
    )
    p.add_argument(
        "--pairs", help="comma-separated SOURCE:TARGET pairs (default: every ordered pair)"
    )
    p.add_argument(
        "--starts", default="final,early,scratch", help="start points (default: all three)"
    )
    p.add_argument(
        "--eval-windows",
        type=int,
        default=128,
        help="windows per loss along the schedule; 0: whole split (default: 128)",
    )
    _add_compute(p)
    _add_common(p, offline=True)
    p.set_defaults(func=cmd_adapt)

    p = sub.add_parser(
        "quality",
        help="measure what the samples show (spelling, layout, repetitiveness, style) along "
        "training and after adaptation, and check the study's judgements",
        description="Generate several samples at every history checkpoint of every model "
        "(and of the adapted models), measure them against the corpora; writes quality/ "
        "(tables, claims, figures).",
    )
    _add_out(p)
    p.add_argument(
        "--samples", type=_positive_int, default=5, help="seeds per checkpoint (default: 5)"
    )
    p.add_argument(
        "--chars", type=_positive_int, default=500, help="characters per sample (default: 500)"
    )
    p.add_argument("--prompt", default="\n", help="prompt of every sample (default: a newline)")
    p.add_argument("--temperature", type=float, default=1.0)
    _add_models(p)
    p.add_argument("--iterations", help="comma-separated iterations (default: every checkpoint)")
    p.add_argument(
        "--corpora",
        help="comma-separated reference corpora, names or paths (default: the models' corpora)",
    )
    p.add_argument(
        "--slices",
        type=_positive_int,
        default=20,
        help="held-out corpus slices the samples are compared with (default: 20)",
    )
    p.add_argument("--no-adapt", action="store_true", help="skip the adapted models")
    p.add_argument(
        "--adapt-samples",
        type=_positive_int,
        default=1,
        help="seeds per adapted model; its adaptation seeds add the spread (default: 1)",
    )
    _add_compute(
        p,
        device="cpu",
        threads=1,
        device_help="device for generation (default: cpu)",
        threads_help="torch threads for generation (default: 1)",
    )
    _add_common(p)
    p.set_defaults(func=cmd_quality)

    def prompt_options(p: argparse.ArgumentParser) -> None:
        _add_out(p)
        _add_models(p)
        p.add_argument(
            "--corpora",
            help="comma-separated prompt corpora, names or paths (default: the models' corpora)",
        )
        p.add_argument(
            "--prompts-per-corpus",
            type=_positive_int,
            default=64,
            help="validation prompts per corpus (default: 64)",
        )
        p.add_argument(
            "--length",
            type=_positive_int,
            default=64,
            help="prompt length in characters (default: 64)",
        )
        p.add_argument(
            "--prompt",
            action="append",
            metavar="TEXT",
            help=r"a prompt of your own; its last character is the target; \n, \t decoded "
            "(repeatable)",
        )
        p.add_argument(
            "--prompt-file", metavar="FILE", help="prompts of your own, one per line (as --prompt)"
        )
        _add_compute(
            p,
            device_help="device (default: auto)",
            threads_help="torch threads (default: torch's choice)",
        )
        _add_common(p)

    p = sub.add_parser(
        "probe",
        help="softmax inspection: entropy, p(true), top-k at every checkpoint, in vs out of domain",
        description="Read every model's next-character distribution at every history "
        "checkpoint on prompts from every corpus; writes probe/ (tables, claims, figures).",
    )
    prompt_options(p)
    p.add_argument(
        "--top-k", type=_positive_int, default=5, help="top-k characters kept (default: 5)"
    )
    p.add_argument(
        "--epsilon",
        type=float,
        default=0.05,
        help="JS divergence (bits) below which a model counts as hardened (default: 0.05)",
    )
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser(
        "saliency",
        help="gradient-based attributions per input character, by class, position, checkpoint",
        description="Attribute log p(true next character) to each input character with "
        "gradient methods; aggregates, deletion test, zero- vs few-shot; writes saliency/.",
    )
    prompt_options(p)
    p.add_argument(
        "--methods",
        default="grad_norm,input_x_grad,integrated_gradients",
        help="comma-separated methods (default: grad_norm,input_x_grad,integrated_gradients)",
    )
    p.add_argument("--checkpoints", choices=("final", "all"), default="final")
    p.add_argument(
        "--ig-steps",
        type=_positive_int,
        default=32,
        help="integrated-gradients steps (default: 32)",
    )
    p.add_argument(
        "--deletion-k",
        default="1,3,8",
        help="characters replaced in the deletion test, comma-separated (default: 1,3,8)",
    )
    p.set_defaults(func=cmd_saliency)
    return parser


def _run_lock(args: argparse.Namespace) -> contextlib.AbstractContextManager:
    """Every command that writes a run directory (``--out``) holds its lock meanwhile."""
    from .rundir import RunDir

    out = getattr(args, "out", None)
    return RunDir(Path(out)).lock() if out else contextlib.nullcontext()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                with _run_lock(args):
                    return int(args.func(args) or 0)
            finally:
                for w in caught:  # library warnings reach the user as plain lines
                    if issubclass(w.category, UserWarning):
                        print(f"warning: {w.message}", file=sys.stderr)
    except DomainGPTError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if "torch.distributed" in sys.modules:  # joined a process group under torchrun
            from .distributed import shutdown

            shutdown()


if __name__ == "__main__":
    sys.exit(main())
