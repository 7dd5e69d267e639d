"""``domaingpt export`` and ``domaingpt import-hf``: models to and from Hugging Face."""

from __future__ import annotations

import argparse
from pathlib import Path

from domaingpt.cli.options import add_quiet, command_log


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write a model as a Hugging Face GPT2LMHeadModel folder (transformers, lm-eval)",
        description="Write a model's checkpoint as a Hugging Face GPT2LMHeadModel folder "
        "with a character tokenizer: transformers loads it (AutoModelForCausalLM, "
        "pipeline('text-generation')) and lm-evaluation-harness runs it. --all writes "
        "every history checkpoint as OUT/stepN, the way Pythia publishes its steps. "
        "Needs the interop extra: pip install 'domaingpt[interop]'.",
    )
    p.add_argument("model", help="model directory (runs/NAME/models/CORPUS) or checkpoint file")
    p.add_argument("dest", metavar="OUT", help="folder to write (created)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--iter", default="final", help="checkpoint iteration (default: final)")
    which.add_argument(
        "--all", action="store_true", help="every history checkpoint, as OUT/step<iteration>"
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace an earlier export at OUT (only that)"
    )
    add_quiet(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "import-hf",
        help="bring a GPT-2 character model (Hugging Face folder) into a run directory",
        description="Import a Hugging Face GPT-2 character model (a folder with config.json, "
        "model.safetensors and tokenizer.json, e.g. one `domaingpt export` wrote, or a "
        "folder of stepN histories) as RUN/models/NAME, so the analyses run on it.",
    )
    p.add_argument("source", metavar="DIR", help="the Hugging Face model folder")
    p.add_argument("--out", required=True, metavar="RUN", help="run directory to import into")
    p.add_argument(
        "--name",
        default=None,
        help="model name in the run (default: the corpus it was trained on, else DIR's name)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace a model of that name")
    add_quiet(p)
    p.set_defaults(func=cmd_import_hf)


def cmd_export(args: argparse.Namespace) -> int:
    from domaingpt.interop.hf import export

    log = command_log(args)
    folders = export(
        args.model,
        Path(args.dest),
        iteration=args.iter,
        history=args.all,
        overwrite=args.overwrite,
        log=log,
    )
    for folder in folders:
        print(folder)
    return 0


def cmd_import_hf(args: argparse.Namespace) -> int:
    from domaingpt.interop.importer import import_hf

    log = command_log(args)
    infos = import_hf(args.source, args.out, name=args.name, overwrite=args.overwrite, log=log)
    iterations = ", ".join(str(i.iteration) for i in infos)
    print(f"{infos[-1].json_path.parent.parent}  (iterations {iterations})")
    return 0
