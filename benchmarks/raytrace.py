"""Ray-tracing throughput of the DeepLens tracer through the Cooke triplet (7 surfaces with the stop).

Rays are a collimated bundle at 0.7 of the 20 deg half field, traced to the sensor; "fwd+bwd" also
back-propagates the RMS spot to every lens parameter. Each (dtype, mode, batch) runs in a fresh
subprocess so `peak MB` (growth of the peak resident memory over the process's idle footprint) belongs
to that configuration alone. The baseline, in the same run, is a naive tracer: the same maths with
Python floats, one ray and one surface at a time; `x naive` = vectorised rays/s / naive rays/s (the
naive one's hits are checked against the vectorised ones). `surf-rays/s` counts ray-surface
interactions (rays/s x 7).

    python benchmarks/raytrace.py [--batches 1000 10000 100000 1000000] [--max-mb 3000] [--threads N]

One thread by default: on a busy 2-core machine, two OpenMP threads stalled at every barrier and made
timings 10-50x slower and erratic.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lightning_modules.optics import Lens, pupil_samples, rms_spot  # noqa: E402
from lightning_modules.optics.materials import WAVE_D  # noqa: E402

COOKE = REPO / "lightning_modules" / "optics" / "prescriptions" / "cooke_triplet.json"
FIELD = (0.0, 0.7)
HFOV = math.radians(20)


def cooke(dtype: torch.dtype) -> Lens:
    return Lens.from_json(COOKE, dtype=dtype)


def bundle(lens: Lens, n: int):
    points = lens.object_points(torch.tensor([FIELD]), -math.inf, HFOV)
    return lens.rays_from_points(points, WAVE_D, pupil_samples(n), pupil_scale=1.0)


def time_vectorised(dtype: torch.dtype, n: int, backward: bool, repeats: int) -> dict:
    lens = cooke(dtype)
    rays = bundle(lens, n)
    idle = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        if backward:
            out = lens.trace_to_sensor(rays)
            rms_spot(out.o[..., :2], out.valid).sum().backward()
        else:
            with torch.no_grad():
                lens.trace_to_sensor(rays)
        if i:  # the first run warms up allocator and caches
            times.append(time.perf_counter() - start)
    peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - idle) / 1024
    return {"seconds": min(times), "peak_mb": max(peak_mb, 0.0)}


# ---- the naive baseline: one ray, one surface, Python floats


def naive_trace(lens: Lens, o: list[float], d: list[float]) -> tuple[list[float], bool]:
    ox, oy, oz = o
    dx, dy, dz = d
    valid = True
    n1 = 1.0
    for surface, (_, behind) in zip(lens.surfaces, lens.media()):
        zv = float(surface.d.detach())
        t = (zv - oz) / dz
        if surface.is_stop:
            ox, oy, oz = ox + t * dx, oy + t * dy, zv
            valid &= ox * ox + oy * oy <= surface.r**2
            continue
        c, k, ai = float(surface.c.detach()), float(surface.k.detach()), [float(a.detach()) for a in surface.ai]
        for _ in range(10):
            x, y, z = ox + t * dx, oy + t * dy, oz + t * dz
            r2 = x * x + y * y
            s = math.sqrt(max(1 - (1 + k) * c * c * r2, 1e-12))
            sag = c * r2 / (1 + s) + sum(a * r2 ** (i + 2) for i, a in enumerate(ai))
            g = c * (1 + s + (1 + k) * c * c * r2 / (2 * s)) / (1 + s) ** 2
            g += sum((i + 2) * a * r2 ** (i + 1) for i, a in enumerate(ai))
            f = sag + zv - z
            if abs(f) < 5e-11:
                break
            t -= f / (2 * g * (x * dx + y * dy) - dz)
        ox, oy, oz = ox + t * dx, oy + t * dy, oz + t * dz
        valid &= ox * ox + oy * oy <= surface.r**2
        nx, ny, nz = 2 * ox * g, 2 * oy * g, -1.0
        norm = math.sqrt(nx * nx + ny * ny + nz * nz)
        nx, ny, nz = nx / norm, ny / norm, nz / norm
        n2 = float(behind.n(WAVE_D))
        eta = n1 / n2
        cos_i = -(nx * dx + ny * dy + nz * dz)
        kk = 1 - eta * eta * (1 - cos_i * cos_i)
        valid &= kk > 0
        root = math.sqrt(max(kk, 0.0))
        dx, dy, dz = (eta * dx + (eta * cos_i - root) * nx, eta * dy + (eta * cos_i - root) * ny,
                      eta * dz + (eta * cos_i - root) * nz)
        n1 = n2
    t = (float(lens.d_sensor.detach()) - oz) / dz
    return [ox + t * dx, oy + t * dy], valid


def time_naive(n: int) -> tuple[float, float]:
    """(rays/s, max |hit difference| in mm against the vectorised float64 tracer)."""
    lens = cooke(torch.float64)
    rays = bundle(lens, n)
    with torch.no_grad():
        traced = lens.trace_to_sensor(rays)
    o, d = rays.o[0].tolist(), rays.d[0].tolist()
    start = time.perf_counter()
    naive = [naive_trace(lens, o[i], d[i]) for i in range(n)]
    seconds = time.perf_counter() - start
    hits = torch.tensor([hit for hit, _ in naive], dtype=torch.float64)
    valid = torch.tensor([ok for _, ok in naive])
    assert torch.equal(valid, traced.valid[0]), "the naive and vectorised tracers vignette different rays"
    return n / seconds, float((hits - traced.o[0, :, :2])[valid].abs().max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1000, 10000, 100000, 1000000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--naive-rays", type=int, default=2000)
    parser.add_argument("--max-mb", type=float, default=3000, help="skip configurations estimated above this")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--one", nargs=3, metavar=("DTYPE", "MODE", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.one:  # child process: one configuration, JSON on stdout
        dtype = {"float64": torch.float64, "float32": torch.float32}[args.one[0]]
        print(json.dumps(time_vectorised(dtype, int(args.one[2]), args.one[1] == "fwd+bwd", args.repeats)))
        return

    naive_rate, naive_error = time_naive(args.naive_rays)
    print(f"Cooke triplet, 7 surfaces, {args.threads} threads. Naive Python per-ray loop: "
          f"{naive_rate:,.0f} rays/s (agrees with the vectorised tracer to {naive_error:.1e} mm)\n")
    print(f"{'dtype':8} {'mode':8} {'batch':>9} {'ms':>9} {'rays/s':>12} {'surf-rays/s':>12} {'peak MB':>8} "
          f"{'x naive':>8}")
    # Peak-memory growth per ray seen at 1e5 rays guards the 1e6 runs against the --max-mb budget.
    mb_per_ray: dict[tuple[str, str], float] = {}
    for dtype in ("float64", "float32"):
        for mode in ("fwd", "fwd+bwd"):
            for batch in args.batches:
                estimate = mb_per_ray.get((dtype, mode), 0.0) * batch
                if estimate > args.max_mb:
                    print(f"{dtype:8} {mode:8} {batch:>9,}   skipped: estimated {estimate:.0f} MB > --max-mb")
                    continue
                out = subprocess.run([sys.executable, __file__, "--one", dtype, mode, str(batch),
                                      "--threads", str(args.threads), "--repeats", str(args.repeats)],
                                     capture_output=True, text=True, check=True)
                result = json.loads(out.stdout.strip().splitlines()[-1])
                rate = batch / result["seconds"]
                if batch >= 10000:
                    mb_per_ray[(dtype, mode)] = result["peak_mb"] / batch
                print(f"{dtype:8} {mode:8} {batch:>9,} {result['seconds'] * 1000:9.1f} {rate:12,.0f} "
                      f"{rate * 7:12,.0f} {result['peak_mb']:8.0f} {rate / naive_rate:8.0f}", flush=True)


if __name__ == "__main__":
    main()
