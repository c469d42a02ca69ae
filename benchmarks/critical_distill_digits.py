"""The digits orderings of the pruning paper: DM IPC 1 from the easiest / a random / the hardest subset.

    python benchmarks/critical_distill_digits.py [--seeds 0 1 2] [--iterations 300] [--root /tmp/cd_bench]

Each row is the demo config (configs/demo/critical_distill.yaml) with one selection, run through train.py for
every seed; a cell is the mean +- std over seeds of each run's mean over its 5 evaluators (the spread
over evaluators of one run is in that run's evaluation.json).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCORES = "lightning_modules/critical_distill/resources/digits_LossInit.json"
LI, KEEP = "data.selection.criterion=LossInit", "data.selection.keep_ratio"
ROWS = [
    ("full training set", ["data.selection.criterion=none"]),
    ("easiest 10% (LossInit_large, keep 0.1)", [f"{LI}_large", f"{KEEP}=0.1"]),
    ("random 10% (keep 0.1)", ["data.selection.criterion=random", f"{KEEP}=0.1"]),
    ("hardest 10% (LossInit_small, keep 0.1)", [f"{LI}_small", f"{KEEP}=0.1"]),
    ("easiest 20% (LossInit_large, keep 0.2)", [f"{LI}_large", f"{KEEP}=0.2"]),
    ("random 20% (keep 0.2)", ["data.selection.criterion=random", f"{KEEP}=0.2"]),
    ("hardest 20% (LossInit_small, keep 0.2)", [f"{LI}_small", f"{KEEP}=0.2"]),
    ("easiest 2 per class (keep 0.015)", [f"{LI}_large", f"{KEEP}=0.015"]),
    ("random 2 per class (keep 0.015)", ["data.selection.criterion=random", f"{KEEP}=0.015"]),
    ("hardest 2 per class (keep 0.015)", [f"{LI}_small", f"{KEEP}=0.015"]),
]


def run(name: str, overrides: list[str], seed: int, args: argparse.Namespace) -> float:
    run_name = f"{name.split(' (')[0].replace(' ', '_').replace('%', 'pct')}-s{seed}"
    out = Path(args.root) / "critical_distill" / run_name / "evaluation.json"
    if not out.is_file():
        cmd = [
            sys.executable,
            "train.py",
            "--config",
            "configs/demo/critical_distill.yaml",
            f"run.root={args.root}",
            f"run.name={run_name}",
            f"seed={seed}",
            f"data.selection.seed={seed}",
            "logger=csv",
            f"model.iterations={args.iterations}",
            f"data.selection.scores={SCORES}",
            f"{KEEP}=null",
            *overrides,
        ]
        subprocess.run(cmd, cwd=REPO, check=True, capture_output=True)
    return json.loads(out.read_text())["mean"] * 100


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--root", default="/tmp/cd_bench")
    args = parser.parse_args()
    print(
        f"digits, DM IPC 1, ConvNet-3 (width 64), {args.iterations} iterations, 5 evaluators x 300 epochs, "
        f"seeds {args.seeds}"
    )
    print("| real data used by DM | test top-1 % (mean +- std over seeds) | per seed |")
    print("|---|---|---|")
    for name, overrides in ROWS:
        accs = [run(name, overrides, s, args) for s in args.seeds]
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        print(
            f"| {name} | {statistics.mean(accs):.1f} +- {std:.1f} | {', '.join(f'{a:.1f}' for a in accs)} |", flush=True
        )


if __name__ == "__main__":
    main()
