"""Simulation, inference and AUPRO speed on CPU, with ratios against a baseline measured in the same run.

    python benchmarks/anomaly_sim.py [--size 128] [--batch 16] [--repeats 3] [--threads 1]

* simulated images/s: ours batched (one call per batch) vs the same simulator per sample (a Python loop of
  batch-1 calls, the shape of anomalib's `training_step` loop), interleaved; vs anomalib's
  `PerlinAnomalyGenerator` when anomalib is installed (it is not in the platform's environment);
* inference images/s of the exported detector (demo widths at 64 px, DRAEM's widths at 256 px);
* AUPRO compute time: ours (one sort) vs a per-threshold loop over 100 thresholds (the pre-2.3 anomalib way).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightning_modules.anomaly_aug.config import DEFAULT_TABLE  # noqa: E402
from lightning_modules.anomaly_aug.metrics import aupro, connected_regions  # noqa: E402
from lightning_modules.anomaly_aug.net import build_detector  # noqa: E402
from lightning_modules.anomaly_aug.simulate import AnomalySimulator  # noqa: E402
from lightning_modules.anomaly_aug.sources import bundled_sources  # noqa: E402


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def aupro_by_threshold_loop(scores: torch.Tensor, masks: torch.Tensor, limit: float, steps: int = 100) -> float:
    """The baseline: one pass over all pixels per threshold (binned curve)."""
    regions = connected_regions(masks).flatten()
    s = scores.flatten()
    normal = regions == 0
    ids = regions[~normal]
    fprs, pros = [], []
    for t in torch.linspace(float(s.max()), float(s.min()), steps):
        hit = s >= t
        fprs.append(float(hit[normal].float().mean()))
        per_region = torch.bincount(ids, weights=hit[~normal].float()) / torch.bincount(ids).clamp_min(1)
        pros.append(float(per_region[1:].mean()))
    f, p = torch.tensor(fprs), torch.tensor(pros)
    keep = f <= limit
    return float(torch.trapezoid(p[keep], f[keep]) / limit)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    size, batch = args.size, args.batch
    sources = bundled_sources(size)
    sim = AnomalySimulator(sources, DEFAULT_TABLE["disc"])
    images = torch.rand(batch, 3, size, size)

    def batched() -> None:
        sim.simulate(images, torch.Generator().manual_seed(0))

    def per_sample() -> None:
        g = torch.Generator().manual_seed(0)
        for i in range(batch):
            sim.simulate(images[i:i + 1], g)

    batched(), per_sample()  # warm-up
    t_batched, t_loop = [], []
    for _ in range(args.repeats):  # interleaved
        t_batched.append(best_of(batched, 1))
        t_loop.append(best_of(per_sample, 1))
    rows = [("simulation, ours batched", batch / min(t_batched), "images/s"),
            ("simulation, same code per sample", batch / min(t_loop), "images/s")]
    try:
        from anomalib.data.utils.generators.perlin import PerlinAnomalyGenerator  # type: ignore

        gen = PerlinAnomalyGenerator(anomaly_source_path=None, blend_factor=(0.2, 1.0))
        t = best_of(lambda: gen(images), args.repeats)
        rows.append(("simulation, anomalib PerlinAnomalyGenerator", batch / t, "images/s"))
    except ImportError:
        rows.append(("simulation, anomalib PerlinAnomalyGenerator", float("nan"), "not installed"))

    for name, widths, side, n in (("inference, demo R16/S8", (16, 8), 64, 32),
                                  ("inference, DRAEM R128/S64", (128, 64), 256, 2)):
        net = build_detector(*widths, 21 if side == 256 else 5).eval()
        x = torch.rand(n, 3, side, side)
        with torch.no_grad():
            net(x[:1])
            t = best_of(lambda net=net, x=x: net(x), max(1, args.repeats - 1))
        rows.append((f"{name} @ {side} px", n / t, "images/s"))

    g = torch.Generator().manual_seed(0)
    masks = torch.zeros(60, 256, 256)
    for i in range(30, 60):
        y, x = torch.randint(20, 200, (2,), generator=g).tolist()
        masks[i, y:y + 30, x:x + 40] = 1
    maps = 0.6 * torch.rand(60, 256, 256, generator=g) + 0.4 * masks
    t_ours = best_of(lambda: aupro(maps, masks, 0.3), args.repeats)
    t_loop_aupro = best_of(lambda: aupro_by_threshold_loop(maps, masks, 0.3), 1)
    rows.append(("AUPRO ours (60 maps 256x256, exact)", t_ours, "s"))
    rows.append(("AUPRO per-threshold loop (100 thresholds)", t_loop_aupro, "s"))

    print(f"\nCPU, {args.threads} thread(s), simulation at {size} px, batch {batch}")
    print("| measurement | value | unit |\n|---|---|---|")
    for name, value, unit in rows:
        print(f"| {name} | {value:.3f} | {unit} |")
    print(f"\nbatched / per-sample simulation: {min(t_loop) / min(t_batched):.1f}x")
    print(f"AUPRO per-threshold loop / ours: {t_loop_aupro / t_ours:.1f}x "
          f"(values {aupro(maps, masks, 0.3):.4f} exact vs {aupro_by_threshold_loop(maps, masks, 0.3):.4f} binned)")


if __name__ == "__main__":
    main()
