"""Digits test top-1 of the ASR demo's variants over several seeds, side by side.

Each (variant, seed) is one `train.py --config configs/demo/asr.yaml` run (test on the best
checkpoint, then export: for ASR variants the export is the folded network). Prints a table of
test top-1 per seed and the mean ± std per variant; no threshold, the point is the comparison.

    python benchmarks/asr_digits_accuracy.py --variants baseline asr --seeds 0 1 2 --jobs 2
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

REPO = Path(__file__).resolve().parents[1]


def run_one(variant: str, seed: int, root: Path, threads: int, extra: list[str]) -> float:
    name = f"{variant}-s{seed}"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "WANDB_MODE": "disabled"}
    env.pop("TENFOLD_RUN_DIR", None)
    cmd = [sys.executable, "train.py", "--config", "configs/demo/asr.yaml", f"model.variant={variant}",
           f"seed={seed}", f"run.root={root}", f"run.name={name}", "logger=csv", "export.onnx=false",
           "trainer.enable_progress_bar=false", *extra]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{proc.stderr[-2000:]}")
    with open(root / "asr" / name / "metrics.csv") as fh:
        return [float(r["test/top1"]) for r in csv.DictReader(fh) if r.get("test/top1")][-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=["baseline", "asr"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel (one torch thread each)")
    parser.add_argument("overrides", nargs="*", help="extra key=value for every run")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        grid = [(v, s) for v in args.variants for s in args.seeds]
        with ThreadPoolExecutor(args.jobs) as pool:
            results = dict(zip(grid, pool.map(lambda vs: run_one(*vs, Path(tmp), 1, args.overrides), grid)))

    seeds = "".join(f"{f'seed {s}':>9}" for s in args.seeds)
    print(f"ASR demo (configs/demo/asr.yaml), digits test top-1 (%) {' '.join(args.overrides)}")
    print(f"{'variant':10}{seeds}{'mean ± std':>16}")
    for variant in args.variants:
        accs = [100 * results[(variant, s)] for s in args.seeds]
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        cells = "".join(f"{a:9.2f}" for a in accs)
        print(f"{variant:10}{cells}{statistics.mean(accs):10.2f} ± {std:.2f}")


if __name__ == "__main__":
    main()
