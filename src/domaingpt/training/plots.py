"""The loss curve of a training run (``loss.png`` in a model directory)."""

from __future__ import annotations

from pathlib import Path

from domaingpt.report.plotting import figure_style, save_figure, subplots


def plot_loss_curves(runs: dict[str, list[dict]], path: str | Path) -> Path:
    """Train and val loss against iteration, one colour per model (rows of metrics.jsonl)."""
    with figure_style():
        fig, ax = subplots(figsize=(7, 4))
        for i, (name, rows) in enumerate(runs.items()):
            color = f"C{i}"
            tr = [(r["iter"], r["train_loss"]) for r in rows if r.get("train_loss") is not None]
            va = [(r["iter"], r["val_loss"]) for r in rows if r.get("val_loss") is not None]
            if tr:
                ax.plot(*zip(*tr, strict=True), color=color, alpha=0.5, lw=1, label=f"{name} train")
            if va:
                ax.plot(
                    *zip(*va, strict=True), color=color, lw=2, marker="o", ms=3, label=f"{name} val"
                )
        ax.set_xlabel("iteration")
        ax.set_ylabel("cross-entropy (nats / character)")
        ax.set_title("Training loss")
        ax.legend(fontsize=8)
        caption = (
            "Training loss (thin: mean over the steps since the previous evaluation) and "
            "validation loss (dots: estimated on a sample of windows, the last on the whole "
            "split) of " + ("every model" if len(runs) > 1 else "the model") + ", in nats per "
            "character, against iteration"
        )
        return save_figure(fig, path, caption=caption)
