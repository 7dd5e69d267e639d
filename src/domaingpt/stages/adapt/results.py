"""The adapt stage's run (every adaptation, its tables, summary and figures) and its
tables read back."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from domaingpt.context.stage import Results, StageContext
from domaingpt.stages.adapt.compute import adapt_all, in_domain_losses
from domaingpt.stages.adapt.settings import AdaptSettings

#: The stage's tables in ``adapt/``, beside the adapted models' folders.
TABLES = ("curves", "final", "summary")


def run(ctx: StageContext, settings: AdaptSettings) -> dict[str, Path]:
    """Every adaptation of ``settings`` (the study's ``train.loggers`` when it names
    none); what it wrote, the adapted models' checkpoints included."""
    if not settings.loggers and ctx.study is not None:  # the study's train.loggers
        settings = settings.replace(loggers=list(ctx.study.config().train.loggers))
    written = adapt_all(ctx, settings)
    # The adapted models' checkpoints are outputs too: recorded by SHA-256, a damaged one
    # makes the stage run again, and that adaptation is redone (stored_result).
    for ckpt in sorted(ctx.out.glob("*/*/seed*/checkpoints/iter-*")):
        written[ckpt.relative_to(ctx.out).as_posix()] = ckpt
    return written


def load(results: Results) -> dict[str, pd.DataFrame]:
    """``curves``, ``final``, ``summary``, and each trained model's ``in_domain`` loss."""
    tables = results.tables()
    tables["in_domain"] = in_domain_losses(results.run)
    return tables
