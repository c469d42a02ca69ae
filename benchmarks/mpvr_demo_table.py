"""The demo's zero-shot table over seeds: S-TEMP vs DS-TEMP vs MPVR-style descriptions (test top-1, %).

    python benchmarks/mpvr_demo_table.py [--seeds 0 1 2] [--root /tmp/mpvr_table]

Each seed is one full `python train.py --config configs/demo/mpvr.yaml seed=<s> threads=1` run, all seeds
in parallel (the tiny CLIP is trained afresh from the seed; each run has its own LLM cache, so each
calls the stub: the stub's answers are deterministic, so the banks are identical).
Chance is 10% (10 classes, 270 test images).
"""

from __future__ import annotations

import argparse
import csv
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BANKS = ("s_temp", "ds_temp", "mpvr")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--root", default="/tmp/mpvr_table")
    args = parser.parse_args()
    procs = {}
    start = time.time()
    for seed in args.seeds:  # in parallel, one torch thread each
        cmd = [sys.executable, "train.py", "--config", "configs/demo/mpvr.yaml", f"seed={seed}", "threads=1",
               f"run.root={args.root}", f"run.name=seed{seed}", "logger=csv", "trainer.enable_progress_bar=false",
               f"generate.llm.cache_dir={args.root}/llm_cache_{seed}"]
        procs[seed] = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    rows = []
    for seed, proc in procs.items():
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"seed {seed} failed: {err[-2000:]}")
        with open(Path(args.root) / "mpvr" / f"seed{seed}" / "mpvr" / "results.csv") as fh:
            result = {r["bank"]: 100 * float(r["top1"]) for r in csv.DictReader(fh)}
        rows.append((seed, result, time.time() - start))
        print(f"seed {seed}: " + ", ".join(f"{b} {result[b]:.1f}" for b in BANKS), flush=True)
    print("\n| seed | S-TEMP | DS-TEMP | MPVR (stub LLM) | wall s (3 in parallel) |\n|---|---|---|---|---|")
    for seed, result, wall in rows:
        print(f"| {seed} | " + " | ".join(f"{result[b]:.1f}" for b in BANKS) + f" | {wall:.0f} |")
    means = [statistics.mean(r[b] for _, r, _ in rows) for b in BANKS]
    stds = [statistics.stdev(r[b] for _, r, _ in rows) if len(rows) > 1 else 0.0 for b in BANKS]
    print("| mean ± std | " + " | ".join(f"{m:.1f} ± {s:.1f}" for m, s in zip(means, stds)) + " | |")


if __name__ == "__main__":
    main()
