"""MPVR classifier build: the official per-class loop vs the batched segment mean; stage-2 cache reruns.

    python benchmarks/mpvr_classifier.py [--classes 1000] [--prompts 300] [--dim 512] [--repeats 3]

1. 1000 classes x 300 prompts (ViT-B/32's D = 512) with a lookup "encoder" (each prompt's embedding is a
   fixed row of a table), so the times measure the ensembling itself: per-class encode calls, normalise,
   mean, renormalise (official `zeroshot_classifier_gpt`) against one flattened pass + `index_add_`.
   Variable counts: class c has 300 - (c mod 50) prompts. Interleaved repeats; the median is reported.
2. The same two builders through a real (tiny, random) open_clip text tower, 100 classes x 30 prompts.
3. Stage 2 over the loopback stub LLM (10 classes x 30 queries x n=10): first run, then a second run
   answered from the cache.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightning_modules.mpvr.ensemble import class_weights, class_weights_per_class_loop  # noqa: E402


def lookup_encoder(table: torch.Tensor, index: dict[str, int]):
    return lambda texts: table[torch.tensor([index[t] for t in texts])]


def timed(fn, repeats: int) -> tuple[float, torch.Tensor]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def compare(name: str, encode, bank: dict, names: list[str], repeats: int, chunk: int = 1024) -> None:
    loop_times, batched_times, w_loop, w_batched = [], [], None, None
    for _ in range(repeats):  # interleaved, so load changes hit both
        t, w_loop = timed(lambda: class_weights_per_class_loop(encode, bank, names), 1)
        loop_times.append(t)
        t, w_batched = timed(lambda: class_weights(encode, bank, names, chunk), 1)
        batched_times.append(t)
    loop, batched = statistics.median(loop_times), statistics.median(batched_times)
    prompts = sum(len(v) for v in bank.values())
    print(f"| {name}, chunk {chunk} | {len(names)} x {prompts // len(names)} avg ({prompts} prompts) | "
          f"{loop:.3f} | {batched:.3f} | {loop / batched:.2f}x | {(w_loop - w_batched).abs().max().item():.2e} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--prompts", type=int, default=300)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"torch threads: {torch.get_num_threads()}\n")
    print("| encoder | classes x prompts | per-class loop s | batched s | loop / batched | max abs dW |")
    print("|---|---|---|---|---|---|")

    names = [f"class {c}" for c in range(args.classes)]
    bank = {n: [f"{n} prompt {i}" for i in range(args.prompts - (c % 50))] for c, n in enumerate(names)}
    index = {t: i for i, t in enumerate(t for v in bank.values() for t in v)}
    table = torch.randn(len(index), args.dim) * torch.rand(len(index), 1) * 3
    compare("lookup table (ensembling only)", lookup_encoder(table, index), bank, names, args.repeats)

    import open_clip

    model = open_clip.CLIP(64, {"layers": 2, "width": 64, "head_width": 32, "patch_size": 8, "image_size": 32},
                           {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}).eval()
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    small = {n: bank[n][:30] for n in names[:100]}
    with torch.no_grad():
        for chunk in (1024, 256):
            compare("tiny open_clip text tower", lambda t: model.encode_text(tokenizer(list(t))), small, names[:100],
                    args.repeats, chunk)

    from lightning_modules.mpvr import stages, world
    from lightning_modules.mpvr.config import GenerateConfig, LLMBackend

    with tempfile.TemporaryDirectory() as cache:
        gen = GenerateConfig()
        gen.queries.dataset_name = "Shapes World"
        gen.llm.backend, gen.llm.model = LLMBackend.openai_chat, "stub"
        gen.llm.serve_stub, gen.llm.cache_dir = True, cache
        print("\n| stage-2 run | LLM calls | cache hits | wall s |\n|---|---|---|---|")
        walls = []
        for run in ("first", "second"):
            start = time.perf_counter()
            _, counts = stages.generate_bank(gen, world.CLASS_NAMES)
            walls.append(time.perf_counter() - start)
            print(f"| {run} | {counts['llm_calls']} | {counts['cache_hits']} | {walls[-1]:.2f} |")
        print(f"\nsecond / first wall time: {walls[1] / walls[0]:.3f}")


if __name__ == "__main__":
    main()
