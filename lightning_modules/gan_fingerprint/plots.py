"""The attack-curve figure: r (and the digits-FID) against attack strength, with the threshold tau."""

from __future__ import annotations

from PIL import Image

from tenfold.media import figure_image, pyplot


def attack_curves_figure(summary: dict) -> Image.Image:
    plt = pyplot()
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
    return figure_image(fig)
