"""The attack-curve figure: r (and the digits-FID) against attack strength, with the threshold tau."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from PIL import Image  # noqa: E402


def attack_curves_figure(summary: dict) -> Image.Image:
    rows, tau = summary["rows"], summary["metrics"]["tau"]
    groups = [("prune", "pruned fraction"), ("perturb", "perturbation (per kind)"), ("finetune", "fine-tuning seed")]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, (group, label) in zip(axes, groups):
        picked = [r for r in rows if r["group"] == group]
        if group == "perturb":
            for kind in sorted({r["name"].split("_")[0] for r in picked}):
                pts = [r for r in picked if r["name"].startswith(kind)]
                ax.plot(range(len(pts)), [r["r"] for r in pts], "o-", label=kind)
        else:
            ax.plot([r["param"] for r in picked], [r["r"] for r in picked], "o-", label="r")
        if group == "prune":
            fid_ax = ax.twinx()
            fid_ax.plot([r["param"] for r in picked], [r["fid"] for r in picked], "s--", color="grey")
            fid_ax.set_ylabel("digits-FID (grey)")
        ax.axhline(tau, color="red", ls=":", label=f"tau={tau:.2f}")
        ax.set_ylim(0, 1.05)
        ax.set_xlabel(label)
        ax.set_ylabel("match rate r")
        ax.legend(fontsize=7)
    fig.suptitle(f"{summary['design']}: r under attacks (N={summary['n']}, alpha={summary['alpha']:g})")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
