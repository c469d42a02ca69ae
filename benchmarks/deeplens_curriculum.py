"""The paper's central claim, measured: Cooke triplet from flat with the curriculum vs without it.

Every seed runs `configs/examples/deeplens_cooke.yaml` twice through train.py (same seed, so the same
random starting curvatures and rays): with the aperture/FoV ramp, and with `curriculum.enabled=false`
(the full F/5, 20 deg specification from step 0). Each run's exported lens is scored by the
evaluator the module uses (1024 rays per field and wavelength, fields {0, 0.7, 1}, full specification),
and so is the classic Cooke triplet. A run fails when its RGB spot is above 1.5x the classic one, its
EFL is off by more than 1 %, fewer than half the rays get through, or two surfaces overlap.

    python benchmarks/deeplens_curriculum.py [--seeds 0 1 2 3 4] [--steps 3000] [--workers 2]
"""

from __future__ import annotations

import argparse
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

CONFIG = REPO / "configs" / "examples" / "deeplens_cooke.yaml"
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


def design(seed: int, curriculum: bool, steps: int, root: Path) -> tuple[Path, float]:
    name = f"seed{seed}-{'ramp' if curriculum else 'flat'}"
    start = time.perf_counter()
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="disabled")
    proc = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "--config", str(CONFIG), f"seed={seed}", f"run.root={root}",
         f"run.name={name}", "logger=csv", "trainer.enable_progress_bar=false", f"trainer.max_steps={steps}",
         f"curriculum.ramp_steps={2 * steps // 3}", f"curriculum.enabled={str(curriculum).lower()}",
         "model.visuals_every_n_steps=0", "run.test=false"],
        cwd=REPO, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{proc.stderr[-2000:]}")
    return root / "deeplens" / name / "export" / "prescription.json", time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--root", type=Path, default=None, help="keep the runs here (default: a temp dir)")
    args = parser.parse_args()
    spec = compose(DeepLensExperimentConfig, [("cooke", read_yaml(CONFIG))]).model.spec
    classic = evaluate(Lens.from_json(CLASSIC), spec)
    root = args.root or Path(tempfile.mkdtemp(prefix="deeplens_curriculum_"))
    jobs = [(seed, ramp) for seed in args.seeds for ramp in (True, False)]
    with ThreadPoolExecutor(args.workers) as pool:
        results = list(pool.map(lambda job: design(job[0], job[1], args.steps, root), jobs))

    def failed(m: dict) -> bool:
        return (m["spot_um"] > 1.5 * classic["spot_um"] or m["efl_err_pct"] > 1 or m["valid"] < 0.5
                or m["min_gap_mm"] < 0)

    print(f"Cooke triplet from flat, {args.steps} steps per run (curriculum over the first {2 * args.steps // 3}), "
          f"runs in {root}")
    print(f"classic Cooke triplet, same evaluator: RGB spot {classic['spot_um']:.1f} um, RMS to the pinhole "
          f"points {classic['rms_target_um']:.1f} um, EFL error {classic['efl_err_pct']:.2f} %\n")
    print(f"{'seed':>4} {'curriculum':>10} {'spot um':>8} {'rms->ideal um':>13} {'EFL err %':>9} {'valid':>6} "
          f"{'min gap mm':>10} {'failed':>6} {'minutes':>7}")
    table: dict[bool, list[dict]] = {True: [], False: []}
    for (seed, ramp), (path, seconds) in zip(jobs, results):
        m = evaluate(Lens.from_json(path), spec)
        table[ramp].append(m)
        print(f"{seed:>4} {'yes' if ramp else 'no':>10} {m['spot_um']:8.1f} {m['rms_target_um']:13.1f} "
              f"{m['efl_err_pct']:9.3f} {m['valid']:6.3f} {m['min_gap_mm']:10.3f} {'yes' if failed(m) else 'no':>6} "
              f"{seconds / 60:7.1f}")
    print()
    for ramp in (True, False):
        rows = table[ramp]
        spots = [m["spot_um"] for m in rows]
        failures = sum(failed(m) for m in rows)
        print(f"curriculum {'yes' if ramp else 'no '}: median spot {statistics.median(spots):.1f} um "
              f"(best {min(spots):.1f}, worst {max(spots):.1f}), median / classic "
              f"{statistics.median(spots) / classic['spot_um']:.2f}, failures {failures}/{len(rows)}")


if __name__ == "__main__":
    main()
