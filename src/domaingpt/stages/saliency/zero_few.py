"""Zero- vs few-shot: the same prompts through a model before and after adaptation.

For every adapted model of the run (:meth:`RunDir.adapted_models`,
``adapt/<source>__to__<target>/<start>/seed<k>/``), the target corpus's prompts are
attributed through the source model at the checkpoint adaptation started from (zero-shot:
the ``source_iteration`` the adapt stage records in the adapted checkpoint) and through
the adapted model's last checkpoint (few-shot). ``scratch`` runs have no source model and
are left out; without adapted models there is no table (``zero_few.csv``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from domaingpt.core.progress import Log
from domaingpt.core.rundir import AdaptedModel, ModelEntry, RunDir
from domaingpt.data.prompts import PromptSet
from domaingpt.errors import CheckpointError, DomainGPTError
from domaingpt.model.checkpoint import CheckpointInfo, find_checkpoint, load_checkpoint
from domaingpt.stages.saliency.aggregate import aggregate, long_frame, per_prompt
from domaingpt.stages.saliency.methods import PromptAttributions, attribute_prompts
from domaingpt.stages.saliency.settings import SaliencySettings


@dataclass(frozen=True)
class ZeroFewPair:
    """One adapted model, its target corpus's prompts, and the two checkpoints compared."""

    adapted: AdaptedModel
    prompts: PromptSet
    zero_shot: CheckpointInfo  # the source model where adaptation started
    few_shot: CheckpointInfo  # the adapted model's last checkpoint

    def stages(self) -> list[tuple[str, CheckpointInfo]]:
        return [("zero_shot", self.zero_shot), ("few_shot", self.few_shot)]


def start_checkpoint(run: RunDir, adapted: AdaptedModel) -> CheckpointInfo:
    """The source checkpoint an adaptation started from, as the adapted checkpoint records
    it (``source_iteration``); an error says what is missing when it does not."""
    final = adapted.checkpoints[-1]
    iteration = final.meta.get("source_iteration")
    if not isinstance(iteration, int) or isinstance(iteration, bool):
        raise DomainGPTError(
            f"{final.json_path} does not record 'source_iteration' (the {adapted.source} "
            f"checkpoint its adaptation started from): delete {adapted.directory} and run "
            f"`domaingpt adapt --out {run.root}` again, or set adapted = false under [saliency]"
        )
    return find_checkpoint(run.model(adapted.source), iteration)


def zero_few_pairs(
    run: RunDir,
    models: Sequence[ModelEntry],
    prompts: PromptSet,
    settings: SaliencySettings,
    log: Log,
) -> list[ZeroFewPair] | None:
    """The adapted models to compare, resolved before any attribution is computed (None:
    no table, because ``adapted`` is off or the run has no adapted model of ``models``)."""
    if not settings.adapted:
        return None
    names = {m.name for m in models}
    adapted = [a for a in run.adapted_models() if a.source in names]
    if not adapted:
        log(f"note: no adapted models in {run.adapt}; skipping the zero- vs few-shot table")
        return None
    pairs = []
    for a in adapted:
        keep = [i for i, p in enumerate(prompts.prompts) if p.corpus == a.target]
        if not keep:
            log(f"note: no prompts from {a.target!r}; skipping {a.source} -> {a.target}")
            continue
        try:
            zero_shot = start_checkpoint(run, a)
        except CheckpointError as e:
            log(f"note: skipping {a.directory}: {e}")
            continue
        pairs.append(ZeroFewPair(a, prompts.subset(keep), zero_shot, a.checkpoints[-1]))
    return pairs


def zero_few(
    pairs: Sequence[ZeroFewPair], settings: SaliencySettings, device: torch.device, bar: Any
) -> pd.DataFrame:
    """One row per adapted model, stage, method and group (the total, each character
    class, each relative position): mean magnitude, share and lift."""
    rows: list[dict] = []
    for pair in pairs:
        a, sub = pair.adapted, pair.prompts
        for stage, info in pair.stages():
            loaded = load_checkpoint(info, device)
            domains = ["in" if stage == "few_shot" else "out"] * len(sub)
            for name in settings.methods:
                method = settings.method(name, loaded.model)
                res = attribute_prompts(method, sub, batch_size=settings.batch_size, device=device)
                keys = {
                    "source": a.source,
                    "target": a.target,
                    "start": a.start,
                    "seed": a.directory.name,
                    "method": name,
                    "stage": stage,
                    "checkpoint_iteration": info.iteration,
                }
                rows += _rows(keys, res, sub, domains)
                bar.update(1)
    return pd.DataFrame(rows)


def _rows(
    keys: dict, res: PromptAttributions, prompts: PromptSet, domains: list[str]
) -> list[dict]:
    """The total row, then one row per character class and per relative position."""
    pp = per_prompt(res.values, res.log_p, prompts, domains)
    keys = {**keys, "log_p_true_mean": float(pp["log_p_true"].mean())}
    rows = [
        {
            **keys,
            "group_kind": "total",
            "group": "all",
            "n": len(prompts),
            "mean_magnitude": float(pp["total_magnitude"].mean()),
            "mean_share": 1.0,
            "lift": 1.0,
        }
    ]
    long = long_frame(res.values, prompts, domains)
    for kind, by in (("class", "char_class"), ("relpos", "relpos")):
        for r in aggregate(long, by).to_dict("records"):
            rows.append(
                {
                    **keys,
                    "group_kind": kind,
                    "group": r[by],
                    "n": r["n_chars"],
                    "mean_magnitude": r["mean_magnitude"],
                    "mean_share": r["mean_share"],
                    "lift": r["lift"],
                }
            )
    return rows
