"""The report's section on training: recipe, final losses, loss curves, samples."""

from __future__ import annotations

from domaingpt.context.rundir import read_run_json
from domaingpt.context.stage import StageView
from domaingpt.core.claims import display
from domaingpt.report.document import Section
from domaingpt.report.format import ordered
from domaingpt.stages.train.results import imported_from
from domaingpt.training.plots import plot_loss_curves


def section(view: StageView) -> Section:
    """The models' shape and recipe, final losses, loss curves and the sample timeline."""
    s = Section("training", view.stage.heading)
    tables = view.tables or {}
    if tables.get("summary") is None or tables["summary"].empty:
        s.missing("no trained model in this run")
        return s
    summary = tables["summary"]
    models = ordered(summary["model"], view.corpora)
    summary = summary.set_index("model").loc[models].reset_index()
    elsewhere = {m: imported_from(view.run.model(m)) for m in models}
    elsewhere = {m: where for m, where in elsewhere.items() if where}
    # The recipe is that of the models trained here (an imported one has none).
    here = [m for m in models if m not in elsewhere]
    record = read_run_json(view.run.model(here[0])) if here else None
    if record is not None and record.config:
        m, t = record.section("model"), record.section("train")
        every = "Every model" if not elsewhere else "Every model trained here"
        s.p(
            f"{every} has {m.get('n_layer')} layers, {m.get('n_head')} heads, "
            f"{m.get('n_embd')} dimensions and a context of {m.get('block_size')} characters; "
            f"it is trained for {t.get('max_iters')} iterations of {t.get('batch_size')}×"
            f"{t.get('grad_accum', 1)} sequences (learning rate {t.get('lr')} → {t.get('min_lr')})."
        )
    if elsewhere:
        s.p(
            "Trained elsewhere and imported (their losses are the ones their checkpoints "
            "recorded): "
            + "; ".join(f"{display(m)}: {where}" for m, where in elsewhere.items())
            + "."
        )
    s.table(
        summary,
        "Validation loss (nats per character) at the first and last iteration; the last on the whole validation split",
    )
    metrics = tables["metrics"]
    if not metrics.empty:
        runs = {m: metrics[metrics["model"] == m].to_dict("records") for m in models}
        path = plot_loss_curves(runs, view.figdir / "loss_curves.png")
        s.figure(path)
    samples = tables["samples"]
    if not samples.empty:
        s.h3("Sample timeline")
        s.p(
            "A fixed-seed sample (temperature 1) at every history checkpoint of each model, "
            "with the validation loss at that iteration."
        )
        for m in models:
            rows = samples[samples["model"] == m].sort_values("iter").to_dict("records")
            if rows:
                s.samples(f"{display(m)} model", rows)
    return s
