"""The demo study: the paper's framework (new simulation + split training) vs DRAEM's original simulation
(rotation, transparent external anomalies, joint training) on the same budget, over seeds; plus the
shifted-mask control (the trained model's maps scored against ground truth moved by 8 px).

    python benchmarks/anomaly_aug_study.py --seeds 0 1 2 [--root /tmp/anomaly_aug_study] [key=value ...]

Every run is `train.py --config configs/demo/anomaly_aug.yaml` with the variant's overrides; the table
prints the test metrics (mean +- std over seeds) and the control.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

VARIANTS = {
    "framework (paper)": [],
    "DRAEM simulation": ["model.simulation.mode=draem", "model.split_training=false"],
}
METRICS = ("image_auroc", "image_ap", "pixel_auroc", "pixel_ap", "aupro")


def run(root: Path, name: str, seed: int, overrides: list[str], extra: list[str]) -> Path:
    from tenfold.cli import main

    run_dir = root / "anomaly_aug" / name
    done = (run_dir / "metrics.csv").is_file() and "test/" in (run_dir / "metrics.csv").read_text()
    if not done:
        os.environ.pop("TENFOLD_RUN_DIR", None)  # set by the previous in-process run for its DDP children
        code = main(["--config", str(REPO / "configs/demo/anomaly_aug.yaml"), f"run.root={root}", f"run.name={name}",
                     f"seed={seed}", "logger=csv", "export.enabled=false", "trainer.enable_progress_bar=false",
                     "trainer.enable_model_summary=false", *overrides, *extra])
        if code != 0:
            raise SystemExit(f"run {name} failed ({code})")
    return run_dir


def test_metrics(run_dir: Path) -> dict[str, float]:
    with open(run_dir / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    return {m: float([r[f"test/{m}"] for r in rows if r.get(f"test/{m}")][-1]) for m in METRICS}


def shifted_mask_control(run_dir: Path, shift: int = 8) -> dict[str, dict[str, float]]:
    """Pixel metrics of the trained model's maps against the true masks and the masks rolled by `shift` px."""
    from datamodules.anomaly_aug_mvtec import MVTecDataModule
    from lightning_modules.anomaly_aug.metrics import AnomalyMetrics
    from lightning_modules.anomaly_aug.module import AnomalyAugModule

    module = AnomalyAugModule.load_from_checkpoint(run_dir / "checkpoints" / "best.ckpt", weights_only=True).eval()
    dm = MVTecDataModule(module.cfg.data)
    dm.setup("test")
    out = {}
    for name, roll in (("true masks", 0), (f"masks shifted {shift} px", shift)):
        metric = AnomalyMetrics(module.cfg.model.aupro_fpr_limit)
        with torch.no_grad():
            for batch in dm.test_dataloader():
                maps, scores = module(batch["image"])
                masks = torch.roll(batch["mask"], shifts=(roll, roll), dims=(1, 2))
                metric.update(batch["index"], scores, batch["label"], batch["defect"], maps, masks)
        values = metric.compute()
        out[name] = {k: float(values[k]) for k in ("pixel_auroc", "pixel_ap", "aupro")}
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--root", default="/tmp/anomaly_aug_study")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    args, extra = parser.parse_known_args()
    root = Path(args.root)
    results: dict[str, list[dict[str, float]]] = {}
    for seed in args.seeds:
        for variant in args.variants:
            tag = "framework" if variant.startswith("framework") else "draem"
            run_dir = run(root, f"{tag}-s{seed}", seed, VARIANTS[variant], extra)
            results.setdefault(variant, []).append(test_metrics(run_dir))
    print("\n| variant | seeds | " + " | ".join(METRICS) + " |")
    print("|---|---|" + "---|" * len(METRICS))
    for variant, rows in results.items():
        cells = []
        for m in METRICS:
            values = [r[m] for r in rows]
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.3f} ± {std:.3f}")
        print(f"| {variant} | {len(rows)} | " + " | ".join(cells) + " |")
    seed = next(s for s in args.seeds if (root / "anomaly_aug" / f"framework-s{s}/checkpoints/best.ckpt").is_file())
    control = shifted_mask_control(root / "anomaly_aug" / f"framework-s{seed}")
    print(f"\nshifted-mask control (framework, seed {seed}):")
    print("| ground truth | pixel_auroc | pixel_ap | aupro |\n|---|---|---|---|")
    for name, v in control.items():
        print(f"| {name} | {v['pixel_auroc']:.3f} | {v['pixel_ap']:.3f} | {v['aupro']:.3f} |")


if __name__ == "__main__":
    main()
