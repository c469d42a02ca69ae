"""CPU inference throughput of CIFAR ResNet164: baseline, +SE, and ASR(SE) before / after folding.

ASR's claim (digest §2.4, §6.7): once its attention is folded, the network runs at the baseline's
speed, while an input-dependent SE costs time at inference. All models see the same input batch
(32x32, CIFAR) under `torch.inference_mode`. Each round times one forward of every model, starting
at a different model each round; `ratio` is the median over rounds of baseline time / model time,
a paired comparison, so drift in machine load between rounds cancels. `spread` is the
interquartile range of those per-round ratios.

    python benchmarks/asr_speed.py [--batch 64] [--repeats 20] [--warmup 3] [--depth 164]
"""

import argparse
import statistics
import time

import torch
from torch import nn

from lightning_modules.asr.resnet_cifar import resnet_cifar
from tenfold.reparam import reparameterize_model


def build_models(depth: int) -> dict[str, nn.Module]:
    """The compared models, eval mode; the first is the baseline the ratios refer to."""
    asr = resnet_cifar("asr", depth=depth).eval()
    return {
        "baseline": resnet_cifar("baseline", depth=depth).eval(),
        "+SE": resnet_cifar("se", depth=depth).eval(),
        "+ASR(SE), training form": asr,
        "+ASR(SE), exported": reparameterize_model(asr),
    }


@torch.inference_mode()
def seconds_per_batch(
    models: dict[str, nn.Module], x: torch.Tensor, warmup: int, repeats: int
) -> dict[str, list[float]]:
    """Forward times of each model, `repeats` rounds after `warmup` untimed ones."""
    names = list(models)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(warmup + repeats):
        # Rotate the order so no model always runs right after another one (caches, clocks).
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            start = time.perf_counter()
            models[name](x)
            if round_ >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--depth", type=int, default=164)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    models = build_models(args.depth)
    x = torch.randn(args.batch, 3, 32, 32)
    times = seconds_per_batch(models, x, args.warmup, args.repeats)

    print(
        f"ResNet{args.depth}, CIFAR 32x32, batch {args.batch}, {args.threads} threads, "
        f"median of {args.repeats} rounds after {args.warmup} warm-up"
    )
    print(f"{'model':<26}{'params':>11}{'images/s':>11}{'ratio':>8}{'spread':>9}")
    baseline = times[next(iter(models))]
    for name, model in models.items():
        rate = args.batch / statistics.median(times[name])
        ratios = [b / t for b, t in zip(baseline, times[name])]
        q1, ratio, q3 = statistics.quantiles(ratios, n=4)
        params = sum(p.numel() for p in model.parameters())
        print(f"{name:<26}{params:>11,}{rate:>11.1f}{ratio:>8.3f}{q3 - q1:>9.3f}")


if __name__ == "__main__":
    main()
