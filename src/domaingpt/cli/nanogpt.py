"""``domaingpt import-nanogpt``: nanoGPT checkpoints into a run directory."""

from __future__ import annotations

import argparse

from domaingpt.cli.options import add_quiet, command_log


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import-nanogpt",
        help="bring nanoGPT checkpoints (ckpt.pt) of one character model into a run directory",
        description="Import the ckpt.pt files nanoGPT's train.py wrote (files, or out_dirs "
        "saved at different iterations) as RUN/models/NAME, one history checkpoint per "
        "iter_num, so the analyses run on it. Checkpoints are read with "
        "torch.load(weights_only=True) and meta.pkl without running any of it.",
    )
    p.add_argument(
        "sources", nargs="+", metavar="CKPT_OR_DIR", help="ckpt.pt files or nanoGPT out_dirs"
    )
    p.add_argument("--out", required=True, metavar="RUN", help="run directory to import into")
    p.add_argument("--name", required=True, help="model name in the run")
    p.add_argument(
        "--corpus",
        default=None,
        metavar="CORPUS_OR_PATH",
        help="the corpus the model was trained on (default: NAME when it is a built-in corpus)",
    )
    p.add_argument(
        "--meta",
        default=None,
        metavar="META_PKL",
        help="nanoGPT's meta.pkl vocabulary (default: one beside the checkpoint, else the "
        "corpus's sorted characters, as shakespeare_char's prepare.py makes it)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace a model of that name")
    p.add_argument("--offline", action="store_true", help="never download a corpus")
    p.add_argument("--data-dir", metavar="DIR", help="directory holding corpus files")
    add_quiet(p)
    p.set_defaults(func=cmd_import_nanogpt)


def cmd_import_nanogpt(args: argparse.Namespace) -> int:
    from domaingpt.interop.nanogpt import import_nanogpt

    infos = import_nanogpt(
        args.sources,
        args.out,
        name=args.name,
        corpus=args.corpus,
        meta=args.meta,
        overwrite=args.overwrite,
        data_dir=args.data_dir,
        download=not args.offline,
        log=command_log(args),
    )
    iterations = ", ".join(str(i.iteration) for i in infos)
    print(f"{infos[-1].json_path.parent.parent}  (iterations {iterations})")
    return 0
