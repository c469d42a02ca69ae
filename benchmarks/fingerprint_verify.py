"""gan_fingerprint benchmark: verification time per suspect model (N queries, batched vs one query at a
time, interleaved) and embedding time per epoch (iBDv1, iBDv2) on the digits scale.

Timing only: the generators are freshly initialised (speed does not depend on training), so no
population has to be trained. Usage: python benchmarks/fingerprint_verify.py [--n 100] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datamodules.gan_fingerprint import digit_tensors  # noqa: E402
from lightning_modules.gan_fingerprint import attacks, fingerprints, verification  # noqa: E402
from lightning_modules.gan_fingerprint.classifier import DigitClassifier  # noqa: E402
from lightning_modules.gan_fingerprint.gan import Generator  # noqa: E402
from lightning_modules.gan_fingerprint.hook import GeneratorHook  # noqa: E402


@torch.no_grad()
def verify_batched(hook: GeneratorHook, c: DigitClassifier, x: torch.Tensor, y: torch.Tensor) -> int:
    return verification.match_count(c, hook(x), y)


@torch.no_grad()
def verify_one_at_a_time(hook: GeneratorHook, c: DigitClassifier, x: torch.Tensor, y: torch.Tensor) -> int:
    return sum(verification.match_count(c, hook(x[i : i + 1]), y[i : i + 1]) for i in range(len(x)))


def embedding_epoch(c: DigitClassifier, fixed: fingerprints.EmbeddingBatch, v2: bool) -> float:
    train_x, train_y = digit_tensors(0)["train"]
    opt = torch.optim.Adam(c.parameters(), 1e-3)
    rng = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for i in range(0, len(train_x) - 63, 64):
        terms = fingerprints.embedding_loss(
            c,
            train_x[i : i + 64],
            train_y[i : i + 64],
            fixed,
            fingerprints.LossWeights(),
            fingerprints.AugmentSettings(),
            rng,
            v2,
        )
        opt.zero_grad()
        sum(terms.values()).backward()
        opt.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    g, c = Generator(32, 32).eval(), DigitClassifier(10, 64, 256).eval()
    hook = GeneratorHook(g, (1, 8, 8))
    x, y = fingerprints.ibd_fingerprints(g, c, "bench", args.n, 32, 10)
    batched, single = [], []
    for _ in range(args.repeats):  # interleaved, so both see the same machine load
        t = time.perf_counter()
        a = verify_batched(hook, c, x, y)
        batched.append(time.perf_counter() - t)
        t = time.perf_counter()
        b = verify_one_at_a_time(hook, c, x, y)
        single.append(time.perf_counter() - t)
        assert a == b  # same answer both ways
    tb, ts = statistics.median(batched), statistics.median(single)
    print(f"verification of one suspect, N={args.n} queries ({args.threads} thread(s), median of {args.repeats})")
    print(f"{'mode':<22}{'seconds':>10}{'ratio':>8}")
    print(f"{'batched (1 call)':<22}{tb:>10.4f}{1.0:>8.1f}")
    print(f"{'one query at a time':<22}{ts:>10.4f}{ts / tb:>8.1f}")

    refs = [Generator(32, 32).eval() for _ in range(3)]
    with torch.no_grad():
        fp = g(x)
        ref = torch.cat([r(x) for r in refs])
        sur_start = time.perf_counter()
        train_x = digit_tensors(0)["train"][0]
        copies = [attacks.magnitude_pruned(g, a) for a in (0.2, 0.35, 0.5)] + [attacks.weight_noise(g, 0.05, 0)]
        copies.append(attacks.fine_tuned(g, train_x, 901, 100, 1e-4))
        sur = torch.cat([s(x) for s in copies])
        sur_time = time.perf_counter() - sur_start
    fixed = fingerprints.EmbeddingBatch(fp, y, c(fp).argmax(1), ref, c(ref).argmax(1), sur)
    v1 = statistics.median(embedding_epoch(DigitClassifier(10, 64, 256).train(), fixed, False) for _ in range(3))
    v2 = statistics.median(embedding_epoch(DigitClassifier(10, 64, 256, 20).train(), fixed, True) for _ in range(3))
    print(f"\nembedding (fine-tuning C on 1257 digits + N={args.n} fingerprints, batch 64)")
    print(f"{'design':<34}{'seconds':>10}")
    print(f"{'iBDv1, one epoch':<34}{v1:>10.3f}")
    print(f"{'iBDv2, one epoch':<34}{v2:>10.3f}")
    print(f"{'iBDv2 surrogates, built once':<34}{sur_time:>10.3f}")


if __name__ == "__main__":
    main()
