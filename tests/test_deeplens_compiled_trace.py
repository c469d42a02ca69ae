"""`Lens.compiled` (torch.compile of the tracer) gives eager's rays, gradients and designs (slow: ~1 min a compile)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from test_deeplens_design import _cooke_tiny

from conftest import train_cli
from lightning_modules.optics import Lens, pupil_samples, rms_spot
from lightning_modules.optics.materials import WAVE_C, WAVE_D, WAVE_F
from lightning_modules.optics.spot import trace_fields_multi
from tenfold.checkpoint_io import load_weights_only

pytestmark = pytest.mark.slow
PRESCRIPTIONS = Path(__file__).resolve().parents[1] / "lightning_modules" / "optics" / "prescriptions"


def aspheric_singlet() -> Lens:
    """The best-form singlet with a4, a6 on both faces: every surface takes the Newton path."""
    data = json.loads((PRESCRIPTIONS / "singlet_best_form.json").read_text())
    for surface, ai in zip(data["surfaces"][1:], ([2e-4, -1e-6], [-3e-4, 2e-6])):
        surface.update(type="aspheric", c=1 / surface.pop("roc"), k=-0.5, ai=ai)
    return Lens.from_dict(data)


def rms_and_grads(lens: Lens, compiled: bool, hfov: float) -> tuple[torch.Tensor, torch.Tensor, list]:
    lens.compiled = compiled
    fields = torch.stack([torch.zeros(4), torch.linspace(0, 1, 4)], dim=1).double()
    rays = trace_fields_multi(lens, fields, -math.inf, (WAVE_C, WAVE_D, WAVE_F), pupil_samples(64), hfov=hfov)
    loss = rms_spot(rays.o[..., :2].reshape(-1, 2), rays.valid.reshape(-1))
    params = [p for p in lens.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return rays.o.detach(), rays.valid, [g for g in grads if g is not None]


def test_compiled_newton_trace_equals_eager() -> None:
    # Spheres (the closed-form path) are compared through a whole design run below.
    lens, hfov = aspheric_singlet(), math.radians(2)
    hits_e, valid_e, grads_e = rms_and_grads(lens, False, hfov)
    hits_c, valid_c, grads_c = rms_and_grads(lens, True, hfov)
    assert valid_e.float().mean() > 0.5
    assert torch.equal(valid_c, valid_e)
    torch.testing.assert_close(hits_c[valid_e], hits_e[valid_e], rtol=0, atol=1e-10)
    assert len(grads_c) == len(grads_e) > 5
    for g_c, g_e in zip(grads_c, grads_e):
        torch.testing.assert_close(g_c, g_e, rtol=1e-8, atol=1e-12)


def test_design_run_with_compile_trace_matches_the_eager_run(tmp_path: Path) -> None:
    """train.py with model.compile_trace=true: the same lens as eager after 12 steps (shape control,
    curriculum and validation included)."""
    for name, flag in (("eager", "false"), ("compiled", "true")):
        assert train_cli(*_cooke_tiny(tmp_path / name, f"run.name={name}", f"model.compile_trace={flag}")) == 0
    eager, compiled = (load_weights_only(tmp_path / run / "deeplens" / run / "checkpoints" / "last.ckpt")
                       for run in ("eager", "compiled"))
    assert compiled["global_step"] == eager["global_step"] == 12
    for key, value in eager["state_dict"].items():
        torch.testing.assert_close(compiled["state_dict"][key], value, rtol=1e-7, atol=1e-10,
                                   msg=lambda m, k=key: f"{k}: {m}")
