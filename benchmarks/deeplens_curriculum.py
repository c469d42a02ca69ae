"""The paper's central claim, measured: Cooke triplet from flat with the curriculum vs without it, and ablations.

Every seed runs the config (default `configs/deeplens_cooke_now.yaml`, the current official recipe) through
train.py once per variant, same seed, so the same random starting curvatures and rays:

    ramp        the config as it is (stop-radius ramp, then fine-tuning)
    no_ramp     curriculum.enabled=false: the full F/5, 20 deg specification from step 0
    and, with --ablations, one recipe ingredient switched back to today's choice at a time:
    list_fields (3 meridional fields), no_weighting (no per-field weights, no dropout; no_weighting_no_ramp
    also without the ramp), no_dropout,
    platform_schedule (one cosine instead of warm restarts), no_finetune (no centroid fine-tuning stage),
    no_overfill (pupil_scale 1.0), today (configs/examples/deeplens_cooke.yaml, the original recipe)

Each run's exported lens is scored by the evaluator the module uses (1024 rays per field and wavelength,
fields {0, 0.7, 1}, full specification), and so is the classic Cooke triplet. A run fails when its RGB spot
is above 1.5x the classic one, its EFL is off by more than 1 %, fewer than half the rays get through, or two
surfaces overlap. Rows are printed (and appended to <root>/results.jsonl) as runs finish.

    nice -n 10 python benchmarks/deeplens_curriculum.py [--seeds 0 1 2 3 4] [--variants ramp no_ramp]
        [--ablations] [--steps N] [--workers 2] [--root DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lightning_modules.deeplens.config import DeepLensExperimentConfig  # noqa: E402
from lightning_modules.deeplens.design import (  # noqa: E402
    DesignState,
    prune_apertures,
    refracting,
    set_stop_for_aperture,
    spot_loss,
    spot_rms_rgb,
)
from lightning_modules.optics import Lens, pupil_samples  # noqa: E402
from tenfold.config import compose, read_yaml  # noqa: E402

CONFIG = REPO / "configs" / "deeplens_cooke_now.yaml"
TODAY = REPO / "configs" / "examples" / "deeplens_cooke.yaml"
VARIANTS = {
    "ramp": [],
    "no_ramp": ["curriculum.enabled=false"],
    "list_fields": ["model.recipe.fields=list"],
    "no_weighting": ["model.field_weighting=false", "model.recipe.field_dropout=0.0"],
    "no_weighting_no_ramp": [
        "model.field_weighting=false", "model.recipe.field_dropout=0.0", "curriculum.enabled=false"
    ],
    "no_dropout": ["model.recipe.field_dropout=0.0"],
    "platform_schedule": ["model.recipe.schedule=platform", "optim.scheduler=cosine"],
    "no_finetune": ["model.recipe.finetune_from_step=null"],
    "no_overfill": ["model.spec.pupil_scale=1.0"],
    "today": [],  # the original recipe's own config
}
ABLATIONS = ["list_fields", "no_weighting", "no_dropout", "platform_schedule", "no_finetune", "no_overfill", "today"]
CLASSIC = REPO / "lightning_modules" / "optics" / "prescriptions" / "cooke_triplet.json"


def evaluate(lens: Lens, spec) -> dict[str, float]:
    set_stop_for_aperture(lens, spec, 1.0)
    with torch.no_grad():
        prune_apertures(lens, spec, DesignState())
        pupil = pupil_samples(1024)
        _, rms, valid = spot_loss(lens, spec, DesignState(), pupil, field_weighting=False)
        spot = spot_rms_rgb(lens, spec, pupil)
        gaps = []
        for front, back in zip(refracting(lens)[:-1], refracting(lens)[1:]):
            rho2 = torch.linspace(0, min(front.r, back.r), 20, dtype=lens.dtype) ** 2
            gaps.append(float(((back.d + back.sag(rho2)) - (front.d + front.sag(rho2))).min()))
    return {"spot_um": float(spot.mean()) * 1000, "rms_target_um": float(rms.mean()) * 1000,
            "efl_err_pct": abs(lens.foclen - spec.foclen) / spec.foclen * 100, "valid": float(valid.mean()),
            "min_gap_mm": min(gaps)}


def design(seed: int, variant: str, config: Path, steps: int | None, root: Path) -> tuple[Path, float]:
    name = f"seed{seed}-{variant}"
    start = time.perf_counter()
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="disabled")
    extra = [f"trainer.max_steps={steps}"] if steps else []
    if variant == "today" and steps:
        extra.append(f"curriculum.ramp_steps={2 * steps // 3}")
    proc = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "--config", str(TODAY if variant == "today" else config),
         f"seed={seed}", f"run.root={root}", f"run.name={name}", "logger=csv", "trainer.enable_progress_bar=false",
         "model.visuals_every_n_steps=0", "run.test=false", *extra, *VARIANTS[variant]],
        cwd=REPO, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{proc.stderr[-2000:]}")
    return root / "deeplens" / name / "export" / "prescription.json", time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--variants", nargs="+", default=["ramp", "no_ramp"], choices=list(VARIANTS))
    parser.add_argument("--ablations", action="store_true", help="add every single-ingredient ablation")
    parser.add_argument("--steps", type=int, default=None, help="override trainer.max_steps (default: the config's)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--root", type=Path, default=None, help="keep the runs here (default: a temp dir)")
    args = parser.parse_args()
    variants = args.variants + (ABLATIONS if args.ablations else [])
    spec = compose(DeepLensExperimentConfig, [("cooke", read_yaml(args.config))]).model.spec
    classic = evaluate(Lens.from_json(CLASSIC), spec)
    root = args.root or Path(tempfile.mkdtemp(prefix="deeplens_curriculum_"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"Cooke triplet from flat, {args.config.name}, steps {args.steps or 'as configured'}, runs in {root}; "
          f"machine: 2 CPU cores shared with other jobs (load {os.getloadavg()[0]:.1f})")
    print(f"classic Cooke triplet, same evaluator: RGB spot {classic['spot_um']:.1f} um, RMS to the pinhole "
          f"points {classic['rms_target_um']:.1f} um, EFL error {classic['efl_err_pct']:.2f} %\n")
    print(f"{'seed':>4} {'variant':>17} {'spot um':>8} {'rms->ideal um':>13} {'EFL err %':>9} {'valid':>6} "
          f"{'min gap mm':>10} {'failed':>6} {'minutes':>7}", flush=True)

    def failed(m: dict) -> bool:
        return (m["spot_um"] > 1.5 * classic["spot_um"] or m["efl_err_pct"] > 1 or m["valid"] < 0.5
                or m["min_gap_mm"] < 0)

    table: dict[str, list[dict]] = {v: [] for v in variants}

    def run(job: tuple[int, str]) -> None:
        seed, variant = job
        try:
            path, seconds = design(seed, variant, args.config, args.steps, root)
        except RuntimeError as exc:
            print(f"{seed:>4} {variant:>17} run failed: {str(exc).splitlines()[-1]}", flush=True)
            return
        m = evaluate(Lens.from_json(path, strict=False), spec)
        m.update(seed=seed, variant=variant, minutes=seconds / 60, failed=failed(m))
        table[variant].append(m)
        with open(root / "results.jsonl", "a") as fh:
            fh.write(json.dumps(m) + "\n")
        print(f"{seed:>4} {variant:>17} {m['spot_um']:8.1f} {m['rms_target_um']:13.1f} {m['efl_err_pct']:9.3f} "
              f"{m['valid']:6.3f} {m['min_gap_mm']:10.3f} {'yes' if m['failed'] else 'no':>6} "
              f"{m['minutes']:7.1f}", flush=True)

    jobs = [(seed, v) for seed in args.seeds for v in variants]
    with ThreadPoolExecutor(args.workers) as pool:
        list(pool.map(run, jobs))
    print()
    for variant, rows in table.items():
        if not rows:
            continue
        spots = [m["spot_um"] for m in rows]
        failures = sum(m["failed"] for m in rows)
        print(f"{variant:>17}: median spot {statistics.median(spots):.1f} um (best {min(spots):.1f}, worst "
              f"{max(spots):.1f}), median / classic {statistics.median(spots) / classic['spot_um']:.2f}, "
              f"failures {failures}/{len(rows)}, passes {len(rows) - failures}/{len(rows)}")


if __name__ == "__main__":
    main()
