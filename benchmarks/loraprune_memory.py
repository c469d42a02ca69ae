"""Memory and time of LoRA-guided vs true-gradient importance, and what slicing buys at inference.

Part 1: the same LLaMA-layout model (built from a config, `--hidden`/`--layers`/...), one LoRAPrune
training step repeated `--steps` times (forward, backward, group scores of every prunable block,
optimizer step on the LoRA factors) with `--criterion lora` (the paper: only LoRA gradients exist) and
`--criterion grad` (full dL/dW0 for every pruned matrix). Each criterion runs in its own process, so
peak memory is that process's alone: CUDA's max_memory_allocated on a GPU, else the peak resident set
size (RSS) growth, sampled after forward, during backward and after scoring. Also reported: the
bytes held by gradient tensors. The default micro-batch is small, as in LLM fine-tuning (7B weights dwarf
the activations of 2 x 512 tokens); with large batches activations dominate both criteria.

Part 2: parameter count and greedy generation speed of the unpruned model vs the same model with 50% of
the KV-head groups and FFN channels of the prunable layers removed (merged and sliced).

    python benchmarks/loraprune_memory.py                      # ~25M-parameter model on CPU
    python benchmarks/loraprune_memory.py --hidden 2048 --layers 16 --intermediate 5504 --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lightning_modules.lora_pruning.config import LLAMA_LORA_TARGETS  # noqa: E402
from lightning_modules.lora_pruning.groups import llama_blocks, protected_layers  # noqa: E402
from lightning_modules.lora_pruning.importance import ImportancePower  # noqa: E402
from lightning_modules.lora_pruning.lora_layers import linear_parts, wrap_with_lora  # noqa: E402
from lightning_modules.lora_pruning.masks import attach_masks, set_group_keep  # noqa: E402
from lightning_modules.lora_pruning.scoring import Criterion, block_scores  # noqa: E402
from lightning_modules.lora_pruning.slicing import block_keeps, merged_copy, slice_blocks  # noqa: E402
from lightning_modules.loraprune.pruned_llama import layer_shapes, pruned_llama_from_sliced  # noqa: E402


def build(args: argparse.Namespace, criterion: Criterion):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=args.hidden, intermediate_size=args.intermediate, num_hidden_layers=args.layers,
                         num_attention_heads=args.heads, num_key_value_heads=args.kv_heads, vocab_size=args.vocab,
                         max_position_embeddings=max(args.seq, 256) + args.new_tokens)
    model = wrap_with_lora(LlamaForCausalLM(config), LLAMA_LORA_TARGETS, 8, 16, 0.0, [])
    base = model.get_base_model()
    blocks = llama_blocks(config, protected_layers(args.layers, None, True))
    attach_masks(base, blocks)
    if criterion is Criterion.grad:
        for block in blocks:
            for member in block.members:
                linear_parts(base.get_submodule(member.path)).weight.requires_grad_(True)
    return model.to(args.device), base, blocks, config


class MemoryProbe:
    """Peak memory during the steps: CUDA's counter on a GPU; on CPU the resident set size sampled after
    forward, after each decoder layer's backward, and after scoring (the child process runs with a fixed
    glibc mmap threshold, so freed
    tensors leave the RSS and it follows the live tensors)."""

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self.start = torch.cuda.memory_allocated() if self.cuda else _rss()
        self.peak = self.start

    def sample(self) -> None:
        if not self.cuda:
            self.peak = max(self.peak, _rss())

    def growth_mb(self) -> float:
        peak = torch.cuda.max_memory_allocated() if self.cuda else self.peak
        return (peak - self.start) / 2**20


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure_criterion(args: argparse.Namespace) -> dict:
    criterion = Criterion(args.criterion)
    model, base, blocks, _ = build(args, criterion)
    lora = [p for n, p in model.named_parameters() if "lora_" in n]
    optimizer = torch.optim.AdamW(lora, lr=1e-4)
    tokens = torch.randint(0, args.vocab, (args.batch, args.seq), device=args.device)
    times, grad_bytes, probe = [], 0, None
    for layer in base.model.layers:  # sample inside backward too, where activations and gradients overlap
        layer.register_full_backward_hook(lambda *_: probe and probe.sample())
    for step in range(args.steps + 1):
        if step == 1:  # step 0 touches every weight page and allocates the optimizer state: not counted
            probe = MemoryProbe(args.device)
        start = time.perf_counter()
        loss = model(input_ids=tokens, labels=tokens).loss
        probe and probe.sample()
        loss.backward()
        probe and probe.sample()
        grad_bytes = sum(p.grad.numel() * p.grad.element_size() for p in model.parameters() if p.grad is not None)
        for block in blocks:
            block_scores(base, block, criterion, ImportancePower.abs)
        probe and probe.sample()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        for p in model.parameters():
            p.grad = None
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        if step > 0:  # the first step allocates optimizer state
            times.append(time.perf_counter() - start)
    return {"step_s": sum(times) / len(times), "peak_mb": probe.growth_mb(),
            "grad_mb": grad_bytes / 2**20}


@torch.no_grad()
def generation_speed(model: torch.nn.Module, args: argparse.Namespace) -> float:
    prompt = torch.randint(0, args.vocab, (1, 16), device=args.device)
    kwargs = dict(attention_mask=torch.ones_like(prompt), max_new_tokens=args.new_tokens,
                  min_new_tokens=args.new_tokens, do_sample=False, pad_token_id=0)
    model.generate(prompt, **kwargs)  # warm-up
    start = time.perf_counter()
    for _ in range(args.repeats):
        model.generate(prompt, **kwargs)
    return args.repeats * args.new_tokens / (time.perf_counter() - start)


def compare_sliced(args: argparse.Namespace) -> None:
    model, base, blocks, config = build(args, Criterion.lora)
    model.eval()
    dense = merged_copy(model).eval()
    generator = torch.Generator().manual_seed(0)
    for block in blocks:
        keep = torch.ones(block.n_groups, dtype=torch.bool)
        keep[torch.randperm(block.n_groups, generator=generator)[: block.n_groups // 2]] = False
        set_group_keep(base, block, keep)
    keeps = block_keeps(base, blocks)
    sliced = merged_copy(model)
    slice_blocks(sliced, blocks, keeps)
    sliced = pruned_llama_from_sliced(sliced, layer_shapes(config, blocks, keeps)).to(args.device)
    rows = [("unpruned", dense), ("50% sliced", sliced)]
    print(f"\nsliced model (50% of KV groups and FFN channels in layers {blocks[0].layer}-{blocks[-1].layer} "
          f"of {args.layers}; greedy generation, batch 1, {args.new_tokens} new tokens, {args.device})")
    print(f"{'model':12}{'parameters':>14}{'ratio':>8}{'tokens/s':>12}{'speed-up':>10}")
    reference = None
    for name, net in rows:
        params = sum(p.numel() for p in net.parameters())
        speed = generation_speed(net, args)
        reference = reference or (params, speed)
        print(f"{name:12}{params:>14,}{params / reference[0]:>8.3f}{speed:>12.1f}{speed / reference[1]:>10.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--intermediate", type=int, default=1376)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--kv-heads", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--criterion", help=argparse.SUPPRESS)  # internal: measure one criterion and exit
    args = parser.parse_args()

    if args.criterion:
        print(json.dumps(measure_criterion(args)))
        return
    results = {}
    for criterion in ("lora", "grad"):
        proc = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--criterion", criterion],
                              capture_output=True, text=True, env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"})
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-2000:])
        results[criterion] = json.loads(proc.stdout.strip().splitlines()[-1])
    params = sum(p.numel() for p in build(args, Criterion.lora)[0].parameters())
    memory = "CUDA max allocated" if args.device.startswith("cuda") else "peak RSS growth"
    print(f"importance criterion, one LoRAPrune step (model {params / 1e6:.1f}M parameters, batch {args.batch} x "
          f"{args.seq} tokens, {args.device}, memory = {memory} during the steps)")
    print(f"{'criterion':12}{'step (s)':>10}{'peak (MiB)':>12}{'grads (MiB)':>13}")
    for name, r in results.items():
        print(f"{name:12}{r['step_s']:>10.3f}{r['peak_mb']:>12.1f}{r['grad_mb']:>13.1f}")
    lora, grad = results["lora"], results["grad"]
    print(f"{'lora/grad':12}{lora['step_s'] / grad['step_s']:>10.2f}{lora['peak_mb'] / grad['peak_mb']:>12.2f}"
          f"{lora['grad_mb'] / grad['grad_mb']:>13.3f}")
    compare_sliced(args)


if __name__ == "__main__":
    main()
