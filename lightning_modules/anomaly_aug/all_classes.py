"""One model per MVTec AD class, all 15 classes, then the per-class table and the uniform mean (the paper's).

    python -m lightning_modules.anomaly_aug.all_classes --config configs/anomaly_aug.yaml data.root=/data/mvtec \
        [--classes bottle cable ...] [any key=value override]

Each class is an ordinary `train.py` run named `<group>-<class>` under `run.root` (a finished class is not
re-run); `per_class.md` and `per_class.csv` are written next to the runs.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

from lightning_modules.anomaly_aug.config import MVTEC_CLASSES

METRICS = ("image_auroc", "image_ap", "pixel_auroc", "pixel_ap", "aupro")


def read_test_metrics(run_dir: Path) -> dict[str, float]:
    with open(run_dir / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    return {m: float([r[f"test/{m}"] for r in rows if r.get(f"test/{m}")][-1]) for m in METRICS}


def table(results: dict[str, dict[str, float]]) -> str:
    lines = ["| class | " + " | ".join(METRICS) + " |", "|---|" + "---|" * len(METRICS)]
    for name, values in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{100 * values[m]:.1f}" for m in METRICS) + " |")
    mean = {m: sum(v[m] for v in results.values()) / len(results) for m in METRICS}
    lines.append("| **mean** | " + " | ".join(f"**{100 * mean[m]:.1f}**" for m in METRICS) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from tenfold.cli import main as train

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", action="append", required=True)
    parser.add_argument("--classes", nargs="+", default=list(MVTEC_CLASSES))
    parser.add_argument("--root", default="runs", help="run.root of the class runs")
    parser.add_argument("--group", default=time.strftime("mvtec-%Y%m%d-%H%M%S"))
    args, overrides = parser.parse_known_args(argv)
    configs = [a for c in args.config for a in ("--config", c)]
    results = {}
    for name in args.classes:
        run_dir = Path(args.root) / "anomaly_aug" / f"{args.group}-{name}"
        if not (run_dir / "metrics.csv").is_file() or "test/" not in (run_dir / "metrics.csv").read_text():
            os.environ.pop("TENFOLD_RUN_DIR", None)  # left by the previous in-process run
            code = train([*configs, *overrides, f"data.category={name}", f"run.root={args.root}",
                          f"run.name={args.group}-{name}", f"run.group={args.group}"])
            if code != 0:
                return code
        results[name] = read_test_metrics(run_dir)
    text = table(results)
    out = Path(args.root) / "anomaly_aug" / args.group
    out.mkdir(parents=True, exist_ok=True)
    (out / "per_class.md").write_text(text + "\n")
    with open(out / "per_class.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["class", *METRICS])
        writer.writerows([name, *(v[m] for m in METRICS)] for name, v in results.items())
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
