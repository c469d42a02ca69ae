"""The current official design recipe ([now], `model.recipe`, configs/deeplens*_now.yaml) and the EFL solve."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch

from conftest import QUIET, train_cli
from lightning_modules.deeplens.config import DeepLensExperimentConfig, LensSpec
from lightning_modules.deeplens.design import (
    DesignState,
    Objective,
    meridional_fields,
    refracting,
    ring_arm_fields,
    set_stop_for_aperture,
    solve_last_curvature,
    spot_objective,
)
from lightning_modules.deeplens.module import LensDesignModule, StagedSchedule
from lightning_modules.optics import Lens, pupil_samples
from lightning_modules.optics.spot import rms_spot, trace_fields_multi
from tenfold.cli import load_config
from tenfold.config import to_plain

COOKE_JSON = "lightning_modules/optics/prescriptions/cooke_triplet.json"
COOKE_SPEC = LensSpec(foclen=50.0, fnum=5.0, hfov_deg=20.0, depth_mm=-math.inf, fields=[0.0, 0.7, 1.0])


def _cooke() -> Lens:
    return Lens.from_json(COOKE_JSON, dtype=torch.float64)


# ---- 2-D ring-arm fields


def test_ring_arm_fields_are_the_axis_then_rings_at_sqrt_spaced_angles() -> None:
    hfov = math.radians(40.0)
    fields = ring_arm_fields(rings=5, arms=4, hfov=hfov)
    assert fields.shape == (1 + 4 * 4, 2)
    assert fields[0].tolist() == [0.0, 0.0]
    ring = fields[1:].reshape(4, 4, 2)  # (ring, arm, xy)
    radius = ring.norm(dim=-1)
    torch.testing.assert_close(radius, radius[:, :1].expand(4, 4))  # one radius per ring
    angles = torch.atan(radius[:, 0] * math.tan(hfov))
    torch.testing.assert_close(angles, hfov * torch.tensor([0.25, 0.5, 0.75, 1.0], dtype=torch.float64).sqrt())
    azimuth = torch.atan2(ring[-1, :, 0], ring[-1, :, 1])
    torch.testing.assert_close(azimuth, torch.tensor([0, math.pi / 2, math.pi, -math.pi / 2], dtype=torch.float64))


# ---- stop sizing and the over-filled pupil


# At the full F/5 the real marginal ray meets the stop 1.6 % lower than the paraxial one (the front element's
# pupil aberration), so a little more of the over-fill is clipped than the paraxial area ratio says.
@pytest.mark.parametrize("aperture, tolerance", [(0.25, 0.005), (1.0, 0.035)])
def test_the_stop_clips_the_over_filled_pupil_at_every_ramp_aperture(aperture: float, tolerance: float) -> None:
    """The stop is sized for aperture * f / 2N; the pupil is sampled 5 % wider, so the stop (not the
    sampling) sets the beam: the fraction of rays through is the area ratio 1 / 1.05^2."""
    lens = _cooke()
    set_stop_for_aperture(lens, COOKE_SPEC, aperture)
    pupil = pupil_samples(4096)  # deterministic, uniform in area
    radius = aperture * COOKE_SPEC.foclen / (2 * COOKE_SPEC.fnum)
    with torch.no_grad():
        rays = trace_fields_multi(lens, torch.zeros(1, 2, dtype=torch.float64), -math.inf, [587.5618], pupil,
                                  hfov=0.0, pupil_scale=1.05, pupil_radius_mm=radius)
    assert rays.valid.double().mean().item() == pytest.approx(1 / 1.05**2, abs=tolerance)


# ---- per-field weights and dropout


def _objective_by_hand(result, weights: torch.Tensor, n_rays: int) -> torch.Tensor:
    """The weighted RGB loss rebuilt from the per-(wavelength, field) MSE and ray counts the objective reports."""
    count = result.valid * n_rays
    sq_sum = result.rms**2 * count
    return torch.sqrt((weights * sq_sum).sum(-1) / count.sum(-1)).mean()


def test_first_wavelength_weights_every_colour_and_dropout_zeroes_whole_fields() -> None:
    lens = _cooke()
    set_stop_for_aperture(lens, COOKE_SPEC, 1.0)
    pupil = pupil_samples(256)
    fields = ring_arm_fields(4, 4, math.radians(20.0))
    with torch.no_grad():
        plain = spot_objective(lens, COOKE_SPEC, DesignState(), pupil, Objective(fields, "none"))
        first = spot_objective(lens, COOKE_SPEC, DesignState(), pupil, Objective(fields, "first"))
        dropped = spot_objective(lens, COOKE_SPEC, DesignState(), pupil, Objective(
            fields, "first", dropout=0.3, generator=torch.Generator().manual_seed(5)))
    red = plain.rms[0] ** 2
    weights = (red / red.mean()).expand_as(plain.rms)  # red's weights for red, green and blue alike
    torch.testing.assert_close(first.loss, _objective_by_hand(plain, weights, 256))
    assert first.loss > plain.loss  # the worse (outer) fields pull harder
    keep = torch.rand(len(fields), generator=torch.Generator().manual_seed(5), dtype=torch.float64) >= 0.3
    assert 0 < keep.sum() < len(fields)
    torch.testing.assert_close(dropped.loss, _objective_by_hand(plain, weights * keep, 256))


def test_field_weights_are_detached() -> None:
    """d(loss)/d(c) with the weights is the gradient of the weighted sum with the weights held constant."""
    lens = _cooke()
    set_stop_for_aperture(lens, COOKE_SPEC, 1.0)
    pupil, fields = pupil_samples(128), meridional_fields(COOKE_SPEC)
    weighted = spot_objective(lens, COOKE_SPEC, DesignState(), pupil, Objective(fields, "each"))
    (grad,) = torch.autograd.grad(weighted.loss, [lens.surfaces[1].c])
    plain = spot_objective(lens, COOKE_SPEC, DesignState(), pupil, Objective(fields, "none"))
    mse = plain.rms**2
    weights = (mse / mse.mean(-1, keepdim=True)).detach()
    by_hand = _objective_by_hand(plain, weights, 128)
    (expected,) = torch.autograd.grad(by_hand, [lens.surfaces[1].c])
    torch.testing.assert_close(weighted.loss, by_hand)
    torch.testing.assert_close(grad, expected)


# ---- fine-tuning about the green centroid


def test_centroid_spots_are_the_blur_about_the_green_centroid() -> None:
    lens = _cooke()
    set_stop_for_aperture(lens, COOKE_SPEC, 1.0)
    pupil, fields = pupil_samples(256), meridional_fields(COOKE_SPEC)
    lens.surfaces[1].c.data *= 1.02  # some distortion and colour, so the centres differ
    with torch.no_grad():
        pinhole = spot_objective(lens, COOKE_SPEC, DesignState(), pupil, Objective(fields, "none"))
        centroid = spot_objective(lens, COOKE_SPEC, DesignState(), pupil, Objective(fields, "none", center="centroid"))
        rays = trace_fields_multi(lens, fields, -math.inf, COOKE_SPEC.wavelengths_nm, pupil,
                                  hfov=math.radians(20.0))
    green = 1
    torch.testing.assert_close(centroid.rms[green], rms_spot(rays.o[green, ..., :2], rays.valid[green]))
    assert (centroid.rms[green] <= pinhole.rms[green] + 1e-12).all()
    assert (centroid.rms[green, 1:] < 0.99 * pinhole.rms[green, 1:]).all()  # off axis the pinhole point is off


# ---- the staged learning-rate schedule


def _cfg(*overrides: str, config: str = "configs/deeplens_cooke_now.yaml") -> DeepLensExperimentConfig:
    return load_config([config], list(overrides))


def test_warm_restarts_during_the_ramp_then_warm_up_and_one_cosine_in_fine_tuning() -> None:
    cfg = _cfg("model.recipe.warmup_steps=10")  # ramp 1000 steps, fine-tuning from 1000 to 3000
    schedule = StagedSchedule(cfg, max_steps=3000)
    factors = [schedule(s) for s in range(3000)]
    assert factors[0] == pytest.approx(0.1)  # warm-up
    assert factors[10] == pytest.approx(0.5 * (1 + math.cos(math.pi * 10 / 250)))
    for restart in (250, 500, 750):  # period ramp / 4
        assert factors[restart] == pytest.approx(1.0)
        assert factors[restart - 1] < 1e-3
    assert factors[1000] == pytest.approx(0.1)  # a fresh warm-up at the start of fine-tuning
    assert factors[1009] == pytest.approx(1.0, abs=1e-4)
    tail = factors[1009:]
    assert all(a >= b for a, b in zip(tail, tail[1:])) and tail[-1] < 1e-5


def test_asphere_rates_scale_with_the_surface_radius_in_now_and_decay_by_order_today() -> None:
    cfg = _cfg(config="configs/deeplens_now.yaml")
    module = LensDesignModule(to_plain(cfg))
    now = {g["name"]: g["lr"] for g in module.parameter_groups()}
    surfaces = refracting(module.lens)
    assert max(s.r for s in surfaces) > 2.0  # the rear surfaces' rates are orders of magnitude lower
    for j, surface in enumerate(surfaces):
        for order in (4, 6, 14):
            assert now[f"a{order}_s{j}"] == pytest.approx(cfg.model.lr.a / max(surface.r, 1.0) ** order)
    today = LensDesignModule(to_plain(_cfg(config="configs/deeplens.yaml")))
    groups = {g["name"]: g["lr"] for g in today.parameter_groups()}
    assert [groups[f"a{o}"] for o in (4, 6, 8)] == pytest.approx([1e-4, 1e-5, 1e-6])
    assert groups["c"] == 5e-4 and now["c"] == 1e-3


# ---- end to end: the [now] Cooke run, stage switch, schedule and the EFL solve


def test_last_curvature_solve_gives_the_target_focal_length() -> None:
    lens = _cooke()
    for f in (40.0, 50.0, 65.0):
        lens.surfaces[-1].c.data.copy_(solve_last_curvature(lens, f).detach())
        assert lens.foclen == pytest.approx(f, rel=1e-6)


def test_now_recipe_run_switches_stage_follows_its_schedule_and_holds_the_solved_efl(tmp_path: Path) -> None:
    overrides = [f"run.root={tmp_path}", "run.name=now", "logger=csv", *QUIET, "run.test=false",
                 "export.enabled=false", "data.steps_per_epoch=4", "data.batch_size_per_device=32",
                 "data.eval_batch_size_per_device=64", "model.recipe.rings=3", "model.recipe.finetune_rings=4",
                 "model.recipe.warmup_steps=2", "curriculum.ramp_steps=8", "model.recipe.finetune_from_step=8",
                 "model.shape_control_every=4", "trainer.max_steps=12", "trainer.log_every_n_steps=1"]
    assert train_cli("--config", "configs/deeplens_cooke_now.yaml", *overrides) == 0
    with open(tmp_path / "deeplens" / "now" / "metrics.csv") as fh:
        table = list(csv.DictReader(fh))
    rows = [r for r in table if r.get("train/loss")]
    lr_of_step = {int(r["step"]): float(r["lr-Adam/c"]) for r in table if r.get("lr-Adam/c")}  # LR monitor rows
    assert [int(float(r["step"])) for r in rows] == list(range(12))
    assert [float(r["train/stage_finetune"]) for r in rows] == [0.0] * 8 + [1.0] * 4
    schedule = StagedSchedule(_cfg(*overrides), max_steps=12)
    logged = [lr_of_step[s] for s in range(12)]
    assert logged == pytest.approx([1e-3 * schedule(s) for s in range(12)], rel=1e-6)
    assert logged[2] == pytest.approx(1e-3) and logged[8] == pytest.approx(0.5e-3)  # a restart, a fresh warm-up
    # model.efl_solve: the paraxial EFL is the target at every step, from a flat start
    assert [float(r["train/efl_mm"]) for r in rows] == pytest.approx([50.0] * 12, rel=1e-9)


def test_fine_tuning_stage_traces_more_fields_about_the_green_centroid_and_snaps_the_glasses() -> None:
    module = LensDesignModule(to_plain(_cfg("model.optimize.glass=true")))  # ramp to step 1000, then fine-tuning
    ramp, finetune = module._objective(999), module._objective(1000)
    assert (len(ramp.fields), ramp.center, ramp.weight_from) == (1 + 5 * 4, "pinhole", "first")  # 6 rings x 4
    assert (len(finetune.fields), finetune.center, finetune.weight_from) == (1 + 7 * 4, "centroid", "green")
    glasses = [s.mat2 for s in refracting(module.lens) if not s.mat2.is_air]
    assert all(g.n_d.requires_grad for g in glasses)  # relaxed (n_d, V_d) during the ramp
    with torch.no_grad():
        glasses[0].n_d += 0.004  # drifted a little off N-SK16 ...
    module._snap_glasses()
    snapped = [s.mat2 for s in refracting(module.lens) if not s.mat2.is_air]
    assert [g.name for g in snapped] == ["N-SK16", "F2", "N-SK16"]  # ... and back on the catalogue
    assert not any(p.requires_grad for g in snapped for p in g.parameters())
