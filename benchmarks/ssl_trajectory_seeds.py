"""The demo study: 3 seeds x lambda in {0, 0.2} through train.py on the generated pose benchmark.

Prints mean ± std over seeds of the test metrics (pose kNN per layer with the setting selected on the
validation split, out-of-domain poses and categories, semantic kNN / linear probe), and the paired
per-seed differences layer3 - pooled and (lambda > 0) - (lambda = 0).

    python benchmarks/ssl_trajectory_seeds.py --root /tmp/ssl_study [--epochs 6] [--parallel 2] [key=value ...]
    python benchmarks/ssl_trajectory_seeds.py --root /tmp/ssl_study --val-epoch 1   # summarise runs in progress

`--val-epoch N` trains nothing: it reads the online validation metrics (fixed kNN k=20, T=0.1) logged at
epoch N by the runs under --root, for a study that could not finish.

`--retest` trains nothing: it reruns the offline protocol (this code: relative pose included) on each finished
run's best.ckpt; `--test-epoch N` does the same on a copy of last.ckpt from the end of epoch N.

`--straightness` trains nothing either: for each finished run (its best.ckpt) and for the same network at
initialisation (the run's seed) it prints the mean trajectory cosine -cos(u1, u2) of the training triplets on
pooled z, layer3 and layer4 (-1: every triplet locally straight, 0: no relation), i.e. how much the
trajectory term changed the features compared with the SSL loss alone.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the in-process modes import this checkout's code, not an installed copy
METRICS = [
    "pose_knn_layer3",
    "pose_knn_layer4",
    "pose_knn_pooled",
    "pose_knn_layer3_ood_pose",
    "pose_knn_pooled_ood_pose",
    "pose_knn_layer3_ood_category",
    "pose_knn_pooled_ood_category",
    "sem_knn",
    "sem_linear",
    "rel_pose_layer3",
    "rel_pose_pooled",
    "rel_pose_layer3_ood_pose",
    "rel_pose_layer3_ood_category",
]


def run_one(root: Path, seed: int, lam: float, epochs: int, extra: list[str]) -> dict:
    name = f"seed{seed}-lam{lam:g}"
    report = root / "ssl_trajectory" / name / "pose_knn_grid.json"
    if not report.is_file():
        cmd = [
            sys.executable,
            str(REPO / "train.py"),
            "--config",
            "configs/demo/ssl_trajectory.yaml",
            f"run.root={root}",
            f"run.name={name}",
            f"seed={seed}",
            f"model.traj_lambda={lam}",
            f"trainer.max_epochs={epochs}",
            "logger=csv",
            "export.onnx=false",
            "trainer.enable_progress_bar=false",
            *extra,
        ]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"{name} failed:\n{proc.stderr[-3000:]}")
    return json.loads(report.read_text())["metrics"]


def val_metrics(root: Path, seed: int, lam: float, epoch: int) -> dict:
    with open(root / "ssl_trajectory" / f"seed{seed}-lam{lam:g}" / "metrics.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("val/pose_knn_layer3") and int(r["epoch"]) == epoch]
    if not rows:
        raise SystemExit(f"seed {seed}, lambda {lam:g}: no validation row for epoch {epoch} yet")
    return {k: float(v) for k, v in rows[0].items() if k.startswith("val/") and v}


def epoch_checkpoint(run: Path, epoch: int | None) -> Path:
    """best.ckpt, or (epoch given) a checkpoint saved at the end of that epoch: last.ckpt or a copy of it."""
    import torch

    if epoch is None:
        return run / "checkpoints" / "best.ckpt"
    for path in sorted((run / "checkpoints").glob("*.ckpt")):
        if torch.load(path, map_location="cpu", weights_only=True, mmap=True)["epoch"] == epoch:
            return path
    raise SystemExit(f"{run}: no checkpoint of epoch {epoch} (copies of last.ckpt: checkpoints/snap-*.ckpt)")


def test_at_epoch(root: Path, seed: int, lam: float, epoch: int | None) -> dict:
    """The offline protocol (test stage: val-selected pose kNN, relative pose, semantic) with this code, on the
    checkpoint of `epoch` (None: best.ckpt, what the run's own test used)."""
    import lightning as L

    from datamodules.ssl_trajectory import PoseBenchmarkDataModule
    from lightning_modules.ssl_trajectory.module import SSLTrajectoryModule

    run = root / "ssl_trajectory" / f"seed{seed}-lam{lam:g}"
    out = run / (f"test-epoch{epoch}" if epoch is not None else "retest-best")
    if not (out / "pose_knn_grid.json").is_file():
        module = SSLTrajectoryModule.load_from_checkpoint(epoch_checkpoint(run, epoch), weights_only=True)
        trainer = L.Trainer(
            accelerator="cpu",
            devices=1,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=out,
        )
        trainer.test(module, datamodule=PoseBenchmarkDataModule(module.cfg.data), weights_only=True, verbose=False)
    return json.loads((out / "pose_knn_grid.json").read_text())["metrics"]


def straightness(root: Path, seed: int, lam: float, epoch: int | None = None) -> dict[str, float]:
    """Mean per-triplet trajectory cosine of the run's training triplets: trained network and at init."""
    import lightning as L
    import torch
    from PIL import Image

    from datamodules.ssl_trajectory import PoseBenchmarkDataModule
    from lightning_modules.ssl_trajectory.module import SSLTrajectoryModule
    from lightning_modules.ssl_trajectory.trajectory_loss import trajectory_cosine

    run = root / "ssl_trajectory" / f"seed{seed}-lam{lam:g}"
    trained = SSLTrajectoryModule.load_from_checkpoint(epoch_checkpoint(run, epoch), weights_only=True)
    L.seed_everything(seed, verbose=False)  # the same initialisation as the run's
    kwargs = {k: trained.hparams[k] for k in ("categories", "ood_categories", "n_poses", "val_sets", "test_sets")}
    init = SSLTrajectoryModule(trained.hparams["config"], **kwargs)
    data = PoseBenchmarkDataModule(trained.cfg.data)
    triplets, plain = data.index.triplets, data.plain_transform()
    out = {}
    for name, module in (("trained", trained), ("init", init)):
        net, sums = module.net.eval(), dict.fromkeys(("pooled", "layer3", "layer4"), 0.0)
        with torch.no_grad():
            for start in range(0, len(triplets), 256):
                chunk = triplets[start : start + 256]
                feats = [
                    net.features(torch.stack([plain(Image.open(t[k]).convert("RGB")) for t in chunk])) for k in range(3)
                ]
                for layer in sums:
                    sums[layer] += trajectory_cosine(*(f[layer] for f in feats)).sum().item()
        out.update({f"{name} {layer}": v / len(triplets) for layer, v in sums.items()})
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", default="/tmp/ssl_trajectory_study")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--lambdas", type=float, nargs="+", default=[0.0, 0.2])
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--val-epoch", type=int, default=None)
    parser.add_argument("--straightness", action="store_true")
    parser.add_argument("--test-epoch", type=int, default=None)
    parser.add_argument("--retest", action="store_true", help="rerun the offline protocol on finished runs' best.ckpt")
    args, extra = parser.parse_known_args()
    root = Path(args.root)
    jobs = [(s, lam) for s in args.seeds for lam in args.lambdas]
    if args.straightness:
        table = {job: straightness(root, *job, args.test_epoch) for job in jobs}
        print("\nmean trajectory cosine of the training triplets (-1 straight, 0 unrelated), mean ± std over seeds\n")
        print("| features | " + " | ".join(f"λ={lam:g}" for lam in args.lambdas) + " |")
        print("|---|" + "---|" * len(args.lambdas))
        for key in table[jobs[0]]:
            cells = [np.array([table[(s, lam)][key] for s in args.seeds]) for lam in args.lambdas]
            print(f"| {key} | " + " | ".join(f"{c.mean():+.3f} ± {c.std(ddof=1):.3f}" for c in cells) + " |")
        return
    stage = "test"
    if args.val_epoch is not None:
        stage, metrics = "val", [*METRICS[:3], "sem_knn", "sem_linear"]
        results = {job: val_metrics(root, job[0], job[1], args.val_epoch) for job in jobs}
    elif args.test_epoch is not None or args.retest:
        metrics = METRICS
        results = {job: test_at_epoch(root, job[0], job[1], args.test_epoch) for job in jobs}
    else:
        metrics = METRICS
        with ThreadPoolExecutor(args.parallel) as pool:
            results = dict(zip(jobs, pool.map(lambda j: run_one(root, j[0], j[1], args.epochs, extra), jobs)))

    def values(lam: float, metric: str) -> np.ndarray:
        return np.array([results[(s, lam)][f"{stage}/{metric}"] for s in args.seeds]) * 100

    when = (
        f"checkpoint of epoch {args.test_epoch} (0-based), test split"
        if args.test_epoch is not None
        else "best.ckpt of each finished run, offline protocol rerun, test split"
        if args.retest
        else f"after epoch {args.val_epoch}, val split (online kNN)"
        if stage == "val"
        else f"{args.epochs} epochs, test split"
    )
    print(f"\n{len(args.seeds)} seeds, {when}, % (mean ± std over seeds)\n")
    print("| metric | " + " | ".join(f"λ={lam:g}" for lam in args.lambdas) + " |")
    print("|---|" + "---|" * len(args.lambdas))
    for metric in metrics:
        cells = [f"{values(lam, metric).mean():.1f} ± {values(lam, metric).std(ddof=1):.1f}" for lam in args.lambdas]
        print(f"| {metric} | " + " | ".join(cells) + " |")
    print("\npaired differences (percentage points, mean ± std over seeds):")
    for lam in args.lambdas:
        d = values(lam, "pose_knn_layer3") - values(lam, "pose_knn_pooled")
        print(f"  λ={lam:g}: layer3 - pooled pose kNN = {d.mean():+.1f} ± {d.std(ddof=1):.1f}  (per seed {d.round(1)})")
    base = args.lambdas[0]
    for lam in args.lambdas[1:]:
        for metric in [m for m in metrics if "layer4" not in m and m != "pose_knn_pooled_ood_category"]:
            d = values(lam, metric) - values(base, metric)
            print(
                f"  λ={lam:g} - λ={base:g}: {metric} = {d.mean():+.1f} ± {d.std(ddof=1):.1f}  (per seed {d.round(1)})"
            )


if __name__ == "__main__":
    main()
