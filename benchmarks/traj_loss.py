"""ssl_trajectory costs, each against its baseline in the same run (variants interleaved, median of reps):

1. the trajectory loss at B=256, D=8192 (flattened layer4 of ResNet-18 at 32 px), forward + backward:
   the row-wise form against the released B×B form diag(U1 U2ᵀ): time and the bytes the op allocates;
2. one training step, VICReg alone against VICReg + trajectory (5 images per sample instead of 2);
3. pybullet TinyRenderer throughput, images/s (render only, and render + PNG).

    OMP_NUM_THREADS=1 python benchmarks/traj_loss.py [--threads 1] [--reps 7]
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightning_modules.ssl_trajectory.trajectory_loss import official_pose_loss, trajectory_loss  # noqa: E402


def timed(fn, reps: int) -> list[float]:
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def allocated_bytes(fn) -> int:
    """CPU bytes allocated while `fn` runs (torch profiler), a proxy for its peak extra memory."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    return sum(max(e.self_cpu_memory_usage, 0) for e in prof.key_averages())


def loss_forms(reps: int) -> None:
    g = torch.Generator().manual_seed(0)
    feats = [torch.randn(256, 8192, generator=g).requires_grad_(True) for _ in range(3)]

    def rowwise() -> None:
        trajectory_loss(*feats).backward()

    def official() -> None:
        official_pose_loss(*feats).backward()

    times = {"row-wise (ours)": [], "B×B diag(U1 U2ᵀ) (release)": []}
    for _ in range(reps):  # interleaved
        times["row-wise (ours)"] += timed(rowwise, 1)
        times["B×B diag(U1 U2ᵀ) (release)"] += timed(official, 1)
    memory = {"row-wise (ours)": allocated_bytes(rowwise), "B×B diag(U1 U2ᵀ) (release)": allocated_bytes(official)}
    base = statistics.median(times["row-wise (ours)"])
    print("\n1. trajectory loss, B=256, D=8192, forward + backward")
    print("| form | median ms | ratio | allocated MB |")
    print("|---|---|---|---|")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"| {name} | {med * 1e3:.2f} | {med / base:.2f}x | {memory[name] / 2**20:.1f} |")


def step_time(reps: int, batch: int, width: int, size: int) -> None:
    from omegaconf import OmegaConf

    from lightning_modules.ssl_trajectory.config import SSLTrajectoryConfig
    from lightning_modules.ssl_trajectory.module import SSLTrajectoryModule
    from tenfold.config import compose, to_plain

    overrides = OmegaConf.from_dotlist(
        [
            f"model.backbone.width={width}",
            "model.projector_hidden_dim=2048",
            "model.projector_out_dim=2048",
            f"data.batch_size_per_device={batch}",
        ]
    )
    cfg = compose(SSLTrajectoryConfig, [("bench", overrides)])
    module = SSLTrajectoryModule(
        to_plain(cfg), categories=["a"], ood_categories=[], n_poses=50, val_sets=[], test_sets=[]
    ).train()
    views = [torch.randn(batch, 3, size, size) for _ in range(5)]

    def vicreg() -> None:
        module.zero_grad()
        module.semantic_loss(views[0], views[1])[0].backward()

    def with_traj() -> None:
        module.zero_grad()
        (module.semantic_loss(views[0], views[1])[0] + 0.2 * module.trajectory_term(*views[2:])).backward()

    vicreg(), with_traj()  # warm-up
    times = {"VICReg": [], "VICReg + trajectory (λ=0.2)": []}
    for _ in range(reps):
        times["VICReg"] += timed(vicreg, 1)
        times["VICReg + trajectory (λ=0.2)"] += timed(with_traj, 1)
    base = statistics.median(times["VICReg"])
    print(
        f"\n2. training step (forward + backward), batch {batch}, ResNet-18 width {width}, {size}x{size}, "
        "projector 2048³"
    )
    print("| objective | median s | ratio |")
    print("|---|---|---|")
    for name, ts in times.items():
        print(f"| {name} | {statistics.median(ts):.3f} | {statistics.median(ts) / base:.2f}x |")


def render_rate(n: int) -> None:
    from lightning_modules.ssl_trajectory.poses import fibonacci_sphere
    from lightning_modules.ssl_trajectory.render import Instance, MeshRenderer

    print("\n3. pybullet TinyRenderer, Fib poses, one process")
    print("| mesh | size | render images/s | render + PNG images/s |")
    print("|---|---|---|---|")
    for category in ("duck", "bunny"):
        for size in (64, 128):
            renderer = MeshRenderer(size)
            renderer.load(Instance(category))
            poses = fibonacci_sphere(n)
            t = time.perf_counter()
            images = [renderer.render(p) for p in poses]
            render_s = time.perf_counter() - t
            t = time.perf_counter()
            for image in images:
                Image.fromarray(image).save(io.BytesIO(), format="PNG", compress_level=1)
            png_s = time.perf_counter() - t
            renderer.close()
            print(f"| {category} | {size} | {n / render_s:.0f} | {n / (render_s + png_s):.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--size", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s)")
    loss_forms(args.reps)
    step_time(max(3, args.reps // 2), args.batch, args.width, args.size)
    render_rate(200)


if __name__ == "__main__":
    main()
