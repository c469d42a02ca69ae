"""Cost of one end-to-end EDoF rendering step (forward + backward to the lens), by implementation choice.

Two choices in `lightning_modules/deeplens_edof/` are about speed, and this prints what they buy:
- convolution: FFT (`render_psf`) against `conv2d` with the flipped kernel, both differentiated with respect
  to the PSF (the lens needs that gradient; conv2d's weight gradient is the slow part on CPU);
- PSFs: every crop's point source traced at once (`psf_rgb_batch`) against one `optics.psf_rgb` call per crop.
Each round times every variant once, starting at a different one each round; `ratio` is the median over
rounds of baseline time / variant time (paired, so drift in machine load cancels).

    python benchmarks/deeplens_edof_render.py [--batch 8] [--patch 64] [--ks 25] [--spp 256] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from lightning_modules.deeplens_edof.module import REPO
from lightning_modules.deeplens_edof.render import render_psf
from lightning_modules.optics import Lens, psf_rgb, psf_rgb_batch

COOKE = REPO / "lightning_modules/optics/prescriptions/cooke_triplet.json"


def conv2d_render(images: torch.Tensor, psfs: torch.Tensor) -> torch.Tensor:
    """The direct form: reflect pad, grouped conv2d with the flipped per-crop kernels."""
    batch, channels = images.shape[:2]
    radius = psfs.shape[-1] // 2
    padded = F.pad(images, (radius,) * 4, mode="reflect")
    padded = padded.reshape(1, batch * channels, *padded.shape[-2:])
    kernels = psfs.flip(-2, -1).reshape(batch * channels, 1, *psfs.shape[-2:])
    return F.conv2d(padded, kernels, groups=batch * channels).reshape(images.shape)


def step_timer(fn: Callable[[], torch.Tensor], params: list[torch.Tensor]) -> Callable[[], float]:
    def run() -> float:
        start = time.perf_counter()
        fn().square().mean().backward()
        for p in params:
            p.grad = None
        return time.perf_counter() - start

    return run


def compare(title: str, variants: dict[str, Callable[[], float]], repeats: int) -> None:
    names = list(variants)
    times: dict[str, list[float]] = {n: [] for n in names}
    for round_ in range(repeats + 1):  # round 0 warms up
        for name in names[round_ % len(names):] + names[: round_ % len(names)]:
            elapsed = variants[name]()
            if round_:
                times[name].append(elapsed)
    base = names[0]
    print(f"\n{title}\n{'variant':<34} {'ms/step (median)':>17} {'ratio vs ' + base:>26}")
    for name in names:
        ratios = [b / t for b, t in zip(times[base], times[name])]
        print(f"{name:<34} {1000 * statistics.median(times[name]):>17.1f} {statistics.median(ratios):>26.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--ks", type=int, default=25)
    parser.add_argument("--spp", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"batch {args.batch}, crops {args.patch} px, PSF {args.ks} px, {args.spp} rays per wavelength, "
          f"{torch.get_num_threads()} threads, Cooke triplet in float64")

    images = torch.rand(args.batch, 3, args.patch, args.patch)
    psfs = torch.rand(args.batch, 3, args.ks, args.ks, requires_grad=True)
    compare("convolution of crops with their PSFs, forward + backward (gradient to the PSFs)", {
        "conv2d, flipped kernel (baseline)": step_timer(lambda: conv2d_render(images, psfs), [psfs]),
        "FFT (render_psf)": step_timer(lambda: render_psf(images, psfs), [psfs]),
    }, args.repeats)

    lens = Lens.from_json(COOKE)
    params = [p for p in lens.parameters() if p.requires_grad]
    fields = torch.rand(args.batch, 2, dtype=torch.float64) - 0.5
    depths = [-float(d) for d in torch.linspace(100, 10000, args.batch)]
    pixel = min(lens.sensor_size_mm) / 128

    def one_call_per_crop() -> torch.Tensor:
        return torch.stack([psf_rgb(lens, tuple(f), d, args.ks, spp=args.spp, pixel_size_mm=pixel)
                            for f, d in zip(fields.tolist(), depths)])

    compare("PSFs of all crops, forward + backward (gradient to the lens)", {
        "psf_rgb per crop (baseline)": step_timer(one_call_per_crop, params),
        "psf_rgb_batch, one trace": step_timer(
            lambda: psf_rgb_batch(lens, fields, depths, args.ks, args.spp, pixel), params),
    }, args.repeats)


if __name__ == "__main__":
    main()
