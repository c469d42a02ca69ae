"""Distillation wall time against the kept fraction of the real data (digits, ConvNet-3 width 64, 1 thread).

    python benchmarks/distill_fraction.py [--dm-iterations 30] [--mtt-iterations 20] [--repeats 2]

For keep in {100, 50, 10, 1} % (LossInit_large per class): DM time for a fixed number of iterations
(batch_real 256 per class: each class contributes min(n_c, 256) real images per step), and MTT time as
expert training on the kept subset plus trajectory matching. The score estimation (LossInit, 5 runs x 2
epochs on the full set) is a fixed up-front cost, measured once and shown separately; "net" is the whole cost
(scores + distillation) over the keep-100 % cost, which needs no scores. Variants are interleaved over
`--repeats` rounds and the fastest round is kept (the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from datamodules.critical_distill import load_real_data  # noqa: E402
from lightning_modules.critical_distill import matching, mtt, scores  # noqa: E402
from lightning_modules.critical_distill.config import DistillDataConfig  # noqa: E402
from lightning_modules.critical_distill.net import ConvNet, seeded_convnet  # noqa: E402
from lightning_modules.critical_distill.selection import select  # noqa: E402

KEEPS = [1.0, 0.5, 0.1, 0.01]
WIDTH, DEPTH, DSA = 64, 3, "color_crop_cutout_scale_rotate"


def dm_seconds(pools: list[torch.Tensor], iterations: int) -> float:
    syn = torch.cat([p[:1] for p in pools]).clone().requires_grad_(True)
    opt = torch.optim.SGD([syn], lr=1.0, momentum=0.5)
    start = time.perf_counter()
    for it in range(iterations):
        net = seeded_convnet(it, 1, len(pools), 8, WIDTH, DEPTH).requires_grad_(False)
        loss = syn.new_zeros(())
        for c, pool in enumerate(pools):
            g = matching.generator(0, it, c)
            real, s = matching.siamese(matching.sample_real(pool, 256, g), syn[c : c + 1], DSA, g)
            loss = loss + matching.dm_class_loss(net.embed, real, s)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - start


def mtt_seconds(pools: list[torch.Tensor], experts: int, epochs: int, iterations: int) -> tuple[float, float]:
    x = torch.cat(pools)
    y = torch.cat([torch.full((len(p),), c) for c, p in enumerate(pools)])
    start = time.perf_counter()
    buffer = torch.stack(
        [
            mtt.train_expert(
                seeded_convnet(e, 1, len(pools), 8, WIDTH, DEPTH),
                x,
                y,
                epochs,
                0.01,
                256,
                DSA,
                torch.Generator().manual_seed(e),
            )
            for e in range(experts)
        ]
    )
    expert_time = time.perf_counter() - start
    syn = torch.cat([p[:1] for p in pools]).clone().requires_grad_(True)
    labels = torch.arange(len(pools))
    syn_lr = torch.tensor(0.01, requires_grad=True)
    opt = torch.optim.SGD([syn], lr=100.0, momentum=0.5)
    student = ConvNet(1, len(pools), 8, WIDTH, DEPTH)
    start = time.perf_counter()
    for it in range(iterations):
        g = torch.Generator().manual_seed(it)
        e, t = it % experts, int(torch.randint(2, (), generator=g))
        loss = mtt.trajectory_loss(student, buffer[e, t], buffer[e, t + 2], syn, labels, syn_lr, 10, len(syn), DSA, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return expert_time, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dm-iterations", type=int, default=30)
    parser.add_argument("--mtt-iterations", type=int, default=20)
    parser.add_argument("--experts", type=int, default=3)
    parser.add_argument("--expert-epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_real_data(DistillDataConfig())
    x, y = data.train_x, data.train_y
    start = time.perf_counter()
    scores.loss_init(x, y, lambda s: seeded_convnet(s, 1, 10, 8, WIDTH, DEPTH), runs=5, epochs=2, seed=0)
    score_time = time.perf_counter() - start
    shipped = json.loads((REPO / "lightning_modules/critical_distill/resources/digits_LossInit.json").read_text())
    pools = {}
    for keep in KEEPS:
        sel = select(y.numpy(), "LossInit_large", torch.tensor(shipped["scores"]).numpy(), keep_ratio=keep)
        kx, ky = x[sel.kept], y[sel.kept]
        pools[keep] = [kx[ky == c] for c in range(10)]
    best: dict[float, list[float]] = {k: [float("inf")] * 3 for k in KEEPS}
    for _ in range(args.repeats):
        for keep in KEEPS:  # interleaved
            dm = dm_seconds(pools[keep], args.dm_iterations)
            experts, match = mtt_seconds(pools[keep], args.experts, args.expert_epochs, args.mtt_iterations)
            best[keep] = [min(a, b) for a, b in zip(best[keep], (dm, experts, match))]
    print(
        f"digits 1257 train images, ConvNet-3 width {WIDTH}, 1 thread; DM {args.dm_iterations} iterations; "
        f"MTT {args.experts} experts x {args.expert_epochs} epochs + {args.mtt_iterations} iterations x 10 steps; "
        f"LossInit scores (5 runs x 2 epochs, full set): {score_time:.1f} s"
    )
    print(
        "| keep | kept images | DM s | DM ratio | DM net ratio (+scores) | MTT experts s | MTT match s | "
        "MTT total ratio | MTT net ratio (+scores) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    dm_full, mtt_full = best[1.0][0], best[1.0][1] + best[1.0][2]
    for keep in KEEPS:
        dm, experts, match = best[keep]
        scored = score_time if keep < 1.0 else 0.0
        print(
            f"| {keep:.0%} | {sum(len(p) for p in pools[keep])} | {dm:.2f} | {dm / dm_full:.2f} | "
            f"{(dm + scored) / dm_full:.2f} | {experts:.2f} | {match:.2f} | {(experts + match) / mtt_full:.2f} | "
            f"{(experts + match + scored) / mtt_full:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
