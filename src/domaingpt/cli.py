"""The ``domaingpt`` command line.

Every user-facing failure is a :class:`~domaingpt.errors.DomainGPTError`: it is printed
as one line on stderr and the exit status is 2. Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from . import __version__
from .errors import DomainGPTError


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        metavar="DIR",
        help="directory holding corpus files (default: $DOMAINGPT_DATA, then the cache)",
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")


def _log(args: argparse.Namespace):
    return (
        (lambda msg: None)
        if getattr(args, "quiet", False)
        else (lambda msg: print(msg, file=sys.stderr))
    )


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

    p = sub.add_parser("corpora", help="list the known corpora, where each was found, checksum ok?")
    _add_common(p)
    p.set_defaults(func=cmd_corpora)

    p = sub.add_parser("stats", help="character statistics of corpora (tables and figures)")
    p.add_argument("corpora", nargs="+", help="built-in corpus names or paths to text files")
    p.add_argument("--out", default="runs/default", help="run directory (default: runs/default)")
    p.add_argument("--offline", action="store_true", help="never download a corpus")
    _add_common(p)
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
    p.add_argument("--out", default="runs/default", help="run directory (default: runs/default)")
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
    p.add_argument("--offline", action="store_true", help="never download a corpus")
    _add_common(p)
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
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
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


if __name__ == "__main__":
    sys.exit(main())
