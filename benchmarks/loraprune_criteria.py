"""Test perplexity of the LoRAPrune LM demo after pruning with each criterion, at equal sparsity.

One dense model is trained first (the demo's from-scratch LLaMA, `--warmup-steps` plain AdamW steps on
the grammar corpus) and saved with `save_pretrained`; every run then starts from it
(`model.base_path`) and is the demo's LoRAPrune run (one epoch of LoRA fine-tuning with the cubic
schedule) with only the criterion, the final sparsity and the seed changed. Criteria: lora (the paper),
grad (true W0 gradients), magnitude, random. The "dense" row is the same LoRA fine-tuning without
pruning. Prints mean ± std of the test perplexity (fixed 64-token windows) over the seeds.

    python benchmarks/loraprune_criteria.py --sparsities 0.3 0.5 --seeds 0 1 2 --jobs 2
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEMO = "configs/demo/loraprune_lm.yaml"


def pretrain_base(target: Path, steps: int, cache_dir: Path) -> float:
    """The demo's dense warm-up, once, saved as a transformers checkpoint with its tokenizer."""
    from datamodules.causal_lm import CausalLMDataModule
    from lightning_modules.lora_pruning.warmup import dense_warmup
    from lightning_modules.loraprune.lm import causal_lm_loss, load_or_build_llama
    from tenfold.cli import load_config

    cfg = load_config([str(REPO / DEMO)], [f"data.cache_dir={cache_dir}"])
    torch.manual_seed(cfg.seed)
    data = CausalLMDataModule(cfg.data)
    data.setup("fit")
    model = load_or_build_llama(None, cfg.model.build, data.tokenizer, "float32")
    losses = dense_warmup(model, data.train_dataloader(), steps, cfg.model.dense_warmup_lr, causal_lm_loss)
    model.save_pretrained(target)
    data.tokenizer.save_pretrained(target)
    return losses[-1]


def run_one(criterion: str, sparsity: float, seed: int, base: Path, root: Path, extra: list[str]) -> float:
    name = f"{criterion}-p{sparsity}-s{seed}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    env.pop("TENFOLD_RUN_DIR", None)
    cmd = [sys.executable, "train.py", "--config", DEMO, f"model.base_path={base}", f"data.vocabulary={base}",
           "model.dense_warmup_steps=0", f"model.prune.criterion={criterion}", f"model.prune.final_sparsity={sparsity}",
           f"model.prune.seed={seed}", f"seed={seed}", f"run.root={root}", f"run.name={name}", "logger=csv",
           "export.enabled=false", "trainer.enable_progress_bar=false", f"data.cache_dir={root / 'cache'}",
           "trainer.val_check_interval=1.0", *extra]  # one validation per epoch, as when the table was measured
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{proc.stderr[-2000:]}")
    with open(root / "loraprune" / name / "metrics.csv") as fh:
        return [float(r["test/ppl"]) for r in csv.DictReader(fh) if r.get("test/ppl")][-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--criteria", nargs="+", default=["lora", "grad", "magnitude", "random"])
    parser.add_argument("--sparsities", nargs="+", type=float, default=[0.3, 0.5])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--warmup-steps", type=int, default=300)
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel (one torch thread each)")
    parser.add_argument("overrides", nargs="*", help="extra key=value for every run")
    args = parser.parse_args()

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root, base = Path(tmp), Path(tmp) / "base"
        final_loss = pretrain_base(base, args.warmup_steps, root / "cache")
        grid = [("lora", 0.0, s) for s in args.seeds]
        grid += [(c, p, s) for p in args.sparsities for c in args.criteria for s in args.seeds]
        with ThreadPoolExecutor(args.jobs) as pool:
            ppl = dict(zip(grid, pool.map(lambda g: run_one(*g, base, root, args.overrides), grid)))

    print(f"LoRAPrune demo LM ({DEMO}), dense base: {args.warmup_steps} steps, last train loss {final_loss:.3f}; "
          f"test perplexity, mean ± std over seeds {args.seeds} {' '.join(args.overrides)}")
    header = "".join(f"{f'{p:.0%} pruned':>18}" for p in args.sparsities)
    print(f"{'criterion':12}{header}")
    dense = [ppl[("lora", 0.0, s)] for s in args.seeds]
    print(f"{'dense+LoRA':12}{_cell(dense):>18}")
    for criterion in args.criteria:
        cells = "".join(f"{_cell([ppl[(criterion, p, s)] for s in args.seeds]):>18}" for p in args.sparsities)
        print(f"{criterion:12}{cells}")


def _cell(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {std:.3f}"


if __name__ == "__main__":
    main()
