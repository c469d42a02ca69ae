"""LoRAPrune's dashboard panel: sparsity against the validation metric, one point per validation.

Each row is (step, pruning rounds done, mean sparsity over the pruned blocks, the metric). At the end of
training the rows go to W&B as a table (`prune/curve`) with a line plot over it (`prune/sparsity_vs_<metric>`),
and to W&B / TensorBoard as a picture of the same curve (`prune/curve_plot`, through `tenfold.media`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tenfold.media import figure_image, has_media_logger, log_image, pyplot

COLUMNS = ["step", "round", "sparsity"]


def curve_columns(metric: str) -> list[str]:
    return [*COLUMNS, metric]


def curve_figure(rows: Sequence[Sequence[float]], metric: str) -> Any:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    sparsity, values = [r[2] for r in rows], [r[3] for r in rows]
    ax.plot(sparsity, values, marker="o")
    for step, _, x, y in rows:
        ax.annotate(str(step), (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7)
    ax.set_xlabel("sparsity (mean over pruned blocks)")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per pruning round (labels: step)")
    ax.grid(alpha=0.3)
    return figure_image(fig)


def log_pruning_curve(loggers: Sequence[Any], rows: Sequence[Sequence[float]], metric: str, step: int) -> None:
    """The table, the W&B line plot and the picture of `rows` (rank 0 only)."""
    from lightning.pytorch.loggers import WandbLogger

    if not rows or not has_media_logger(loggers):
        return
    columns = curve_columns(metric)
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            import wandb

            table = wandb.Table(columns=columns, data=[list(r) for r in rows])
            name = metric.replace("/", "_")
            plot = wandb.plot.line(table, "sparsity", metric, title=f"sparsity vs {metric}")
            logger.log_metrics({"prune/curve": table, f"prune/sparsity_vs_{name}": plot}, step=step)
    log_image(loggers, "prune/curve_plot", curve_figure(rows, metric), step)
