"""DeepLens lens design as a LightningModule: the lens is the model, each training step one design step."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor

from callbacks.curriculum import CurriculumCallback
from datamodules.design_steps import DesignStepsDataModule
from lightning_modules.deeplens.callbacks import LensExportCallback, LensVisualsCallback
from lightning_modules.deeplens.config import DeepLensExperimentConfig
from lightning_modules.deeplens.design import (
    DesignState,
    Objective,
    chief_ray_angle_term,
    constraint_terms,
    distortion,
    initial_lens,
    meridional_fields,
    prune_apertures,
    refocus,
    refracting,
    ring_arm_fields,
    set_stop_for_aperture,
    solve_last_curvature,
    spot_objective,
    spot_rms_rgb,
    substituted,
)
from lightning_modules.optics import Lens, pupil_samples
from lightning_modules.optics.materials import material_from_name, nearest_catalogue_glass
from tenfold.errors import ConfigError
from tenfold.method import MethodModule
from tenfold.optim import build_optimizer
from tenfold.registry import register_method

FULL_SPEC = DesignState(aperture=1.0, fov=1.0)


def _efl(power: Tensor) -> Tensor:
    return torch.where(power.abs() > 1e-9, 1 / power, torch.full_like(power, 1e9))  # 1e9: no power (flat)


class StagedSchedule:
    """[now] learning-rate factor of the step: `warmup_steps` of linear warm-up, cosine warm restarts of period
    ramp/4 while the curriculum ramps, then a fresh warm-up and one cosine decay over the fine-tuning stage."""

    def __init__(self, cfg: DeepLensExperimentConfig, max_steps: int) -> None:
        r = cfg.model.recipe
        self.warmup = max(r.warmup_steps, 1)
        self.ramp = cfg.curriculum.ramp_steps if cfg.curriculum.enabled else 0
        self.finetune = r.finetune_from_step if r.finetune_from_step is not None else max_steps
        self.end = max(max_steps, self.finetune + 1)

    def __call__(self, step: int) -> float:
        if step < self.finetune:
            warm = min(1.0, (step + 1) / self.warmup)
            if step < self.ramp:
                period = max(self.ramp // 4, 1)
                return warm * 0.5 * (1 + math.cos(math.pi * (step % period) / period))
            span = max(self.finetune - self.ramp, 1)
            return warm * 0.5 * (1 + math.cos(math.pi * (step - self.ramp) / span))
        i = step - self.finetune
        warm = min(1.0, (i + 1) / self.warmup)
        return warm * 0.5 * (1 + math.cos(math.pi * i / max(self.end - self.finetune, 1)))


def _callbacks(cfg: DeepLensExperimentConfig) -> list:
    callbacks: list = [LensVisualsCallback(cfg.model.visuals_every_n_steps), LensExportCallback()]
    if cfg.curriculum.enabled:
        callbacks.insert(0, CurriculumCallback(cfg.curriculum))
    return callbacks


@register_method(
    "deeplens",
    config=DeepLensExperimentConfig,
    datamodule=DesignStepsDataModule,
    callbacks=_callbacks,
)
class LensDesignModule(MethodModule):
    monitors = ("val/rms_um", "val/rms_worst_um", "val/spot_rms_um", "val/valid_frac", "val/efl_mm",
                "val/efl_err_pct")
    config_class = DeepLensExperimentConfig

    def __init__(self, config: dict) -> None:
        super().__init__(config)
        self.lens = initial_lens(self.cfg.model, self.cfg.seed)
        self.lens.compiled = self.cfg.model.compile_trace
        self._freeze_fixed_quantities()
        # Without a curriculum callback the design runs at the full specification from the start.
        self.state = DesignState()

    def apply_curriculum(self, values: dict[str, float]) -> None:
        self.state = DesignState(aperture=values.get("aperture", 1.0), fov=values.get("fov", 1.0))

    # ---- steps

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        m = self.cfg.model
        step = self.global_step
        finetune = self.in_finetune(step)
        if finetune:
            self._snap_glasses()
        with self._efl_solved():
            pass  # apply the solve to the last optimizer step before shape control looks at the lens
        if m.shape_control_every and step % m.shape_control_every == 0:
            set_stop_for_aperture(self.lens, m.spec, self.state.aperture)
            prune_apertures(self.lens, m.spec, self.state)
            if m.refocus:
                refocus(self.lens, m.spec)
        set_stop_for_aperture(self.lens, m.spec, self.state.aperture)
        with self._efl_solved():
            result = spot_objective(self.lens, m.spec, self.state, self._train_pupil(step), self._objective(step))
            terms = constraint_terms(self.lens, m.spec, m.constraints)
            terms["chief_ray_angle"] = chief_ray_angle_term(result, m.constraints)
            extra = {}
            if m.recipe.focus_weight:
                extra["focus"] = m.recipe.focus_weight * result.rms[:, 0].mean()  # field 0 is the axis
            if finetune and m.recipe.distortion_weight:
                limit = m.recipe.distortion_max
                extra["distortion"] = m.recipe.distortion_weight * torch.relu(
                    (distortion(result).abs() - limit) / limit).max()
        loss = result.loss + m.constraints.weight * sum(terms.values()) + sum(extra.values())
        self.log_dict({"train/loss": loss, "train/spot_loss": result.loss, "train/rms_um": result.rms.mean() * 1000,
                       "train/valid_frac": result.valid.mean(), "train/stage_finetune": float(finetune),
                       "train/efl_mm": _efl(self.lens.paraxial_power().detach()),
                       **{f"train/reg_{name}": value for name, value in terms.items()},
                       **{f"train/loss_{name}": value for name, value in extra.items()},
                       # The logged step, explicitly: Lightning's own counter is one ahead after a resume from
                       # an end-of-epoch checkpoint (its loop adds 1 on restart), shifting metrics.csv.
                       "step": float(step)},
                      on_step=True, on_epoch=False, prog_bar=False, batch_size=1)
        return loss

    def in_finetune(self, step: int) -> bool:
        start = self.cfg.model.recipe.finetune_from_step
        return start is not None and step >= start

    def _objective(self, step: int) -> Objective:
        """The recipe's fields, weighting and centre for this step (curriculum or fine-tuning stage)."""
        m, r = self.cfg.model, self.cfg.model.recipe
        finetune = self.in_finetune(step)
        if r.fields == "ring_arm":
            rings, arms = (r.finetune_rings, r.finetune_arms) if finetune else (r.rings, r.arms)
            fields = ring_arm_fields(rings, arms, self.state.hfov(m.spec))
        else:
            fields = meridional_fields(m.spec)
        weight_from = "none" if not m.field_weighting else ("green" if finetune and r.field_weight_from == "first"
                                                            else r.field_weight_from)
        generator = torch.Generator().manual_seed(self.cfg.seed * 7_368_787 + step)
        return Objective(fields, weight_from=weight_from, dropout=r.field_dropout, generator=generator,
                         center="centroid" if finetune else "pinhole")

    def _snap_glasses(self) -> None:
        """At the start of fine-tuning, every relaxed (n_d, V_d) glass becomes its nearest catalogue glass."""
        for surface in refracting(self.lens):
            glass = surface.mat2
            if getattr(glass, "n_d", None) is not None and glass.n_d.requires_grad:
                surface.mat2 = material_from_name(nearest_catalogue_glass(float(glass.n_d), float(glass.v_d)))

    @contextmanager
    def _efl_solved(self) -> Iterator[None]:
        """With `model.efl_solve`, the last curvature is a function of the others inside the block."""
        if not self.cfg.model.efl_solve:
            yield
            return
        last = refracting(self.lens)[-1]
        solved = solve_last_curvature(self.lens, self.cfg.model.spec.foclen)
        with torch.no_grad():
            last.c.copy_(solved)  # the stored lens (and shape control) always satisfies the solve
        with substituted(last, "c", solved):
            yield

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate("val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate("test")

    def _evaluate(self, stage: str) -> None:
        """The design at the full specification (whatever the curriculum stage), deterministic rays."""
        m = self.cfg.model
        lens = copy.deepcopy(self.lens)  # apertures sized for the full spec, not the curriculum's current one
        set_stop_for_aperture(lens, m.spec, 1.0)
        with torch.no_grad():
            if m.shape_control_every:
                prune_apertures(lens, m.spec, FULL_SPEC)
            pupil = pupil_samples(self.cfg.data.eval_batch_size_per_device)
            result = spot_objective(lens, m.spec, FULL_SPEC, pupil, Objective(meridional_fields(m.spec), "none"))
            rms, valid = result.rms, result.valid
            spot = spot_rms_rgb(lens, m.spec, pupil)
            efl = lens.foclen
            dist = distortion(result)
        metrics = {
            f"{stage}/rms_um": rms.mean() * 1000,  # about the ideal image points, all fields and wavelengths
            f"{stage}/rms_worst_um": rms.max() * 1000,
            f"{stage}/spot_rms_um": spot.mean() * 1000,  # about each field's RGB centroid: blur, not distortion
            f"{stage}/valid_frac": valid.mean(),
            f"{stage}/efl_mm": torch.tensor(efl if efl != float("inf") else 1e9),
            f"{stage}/efl_err_pct": torch.tensor(min(abs(efl - m.spec.foclen) / m.spec.foclen * 100, 1e9)),
            f"{stage}/distortion_max_pct": dist.abs().max() * 100,
            f"{stage}/ttl_mm": (lens.d_sensor - lens.surfaces[0].d).detach(),
            **{f"{stage}/spot_um_field{f:.2f}": v * 1000 for f, v in zip(m.spec.fields, spot)},
        }
        if stage == "val" and self._trainer is not None and not self.trainer.sanity_checking:
            metrics["step"] = torch.tensor(float(max(self.global_step - 1, 0)))  # the last design step's row
        self.log_dict({k: v.float() for k, v in metrics.items()}, sync_dist=True, batch_size=1)

    def _train_pupil(self, step: int) -> Tensor:
        """Random pupil points, a pure function of (seed, step, rank): a resumed run draws the same rays."""
        m = self.cfg.model
        draw = step // max(m.resample_rays_every, 1)
        generator = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + draw * 7919 + self.global_rank)
        return pupil_samples(self.cfg.data.batch_size_per_device, "random", generator)

    # ---- optimisation

    def _freeze_fixed_quantities(self) -> None:
        o = self.cfg.model.optimize
        for surface in self.lens.surfaces:
            surface.d.requires_grad_(o.d and not surface.is_stop)
            if surface.is_stop:
                continue
            surface.c.requires_grad_(o.c and not (self.cfg.model.efl_solve and surface is refracting(self.lens)[-1]))
            surface.k.requires_grad_(o.k)
            for a in surface.ai:
                a.requires_grad_(o.ai)
        self.lens.d_sensor.requires_grad_(o.d_sensor)

    def parameter_groups(self) -> list[dict]:
        """One Adam group per quantity with the official learning rates (digest 3.3)."""
        lr = self.cfg.model.lr
        surfaces = refracting(self.lens)
        groups = [
            {"name": "c", "params": [s.c for s in surfaces], "lr": lr.c},
            {"name": "d", "params": [s.d for s in surfaces], "lr": lr.d},
            {"name": "k", "params": [s.k for s in surfaces], "lr": lr.k},
            {"name": "d_sensor", "params": [self.lens.d_sensor], "lr": lr.d_sensor},
        ]
        n_terms = max((len(s.ai) for s in surfaces), default=0)
        if self.cfg.model.recipe.a_lr_scaling == "radius":
            # [now]: lr(a_2n) = a / max(r, 1)^(2n) per surface, so every order moves the sag by a similar amount.
            for j, s in enumerate(surfaces):
                for i, a in enumerate(s.ai):
                    order = 2 * i + 4
                    groups.append({"name": f"a{order}_s{j}", "params": [a], "lr": lr.a / max(s.r, 1.0) ** order})
            n_terms = 0
        for i in range(n_terms):
            # a_{2i+4} moves the sag by rho^(2i+4): each higher order gets a rate a_decay times smaller.
            params = [s.ai[i] for s in surfaces if len(s.ai) > i]
            groups.append({"name": f"a{2 * i + 4}", "params": params, "lr": lr.a * lr.a_decay**i})
        glasses = [s.mat2 for s in surfaces if s.mat2.n_d.requires_grad] if self.cfg.model.optimize.glass else []
        groups += [{"name": "glass_n", "params": [g.n_d for g in glasses], "lr": lr.glass_n},
                   {"name": "glass_v", "params": [g.v_d for g in glasses], "lr": lr.glass_v}]
        return [g for g in groups if any(p.requires_grad for p in g["params"])]

    def optimizer_parameters(self) -> list[dict]:
        if self.cfg.optim.name not in ("adam", "adamw"):
            raise ConfigError(f"optim.name={self.cfg.optim.name}: lens design supports optim.name=adam or adamw")
        groups = self.parameter_groups()
        for g in groups:
            g["lr"] *= self.cfg.optim.lr  # optim.lr scales every group (1.0: the official rates)
        return groups

    def configure_optimizers(self) -> Any:
        if self.cfg.model.recipe.schedule == "platform":
            return super().configure_optimizers()
        if self.cfg.model.recipe.schedule != "restarts":
            raise ConfigError(f"model.recipe.schedule={self.cfg.model.recipe.schedule}: use platform or restarts")
        optimizer = build_optimizer(self.optimizer_parameters(), self.cfg.optim, self.cfg.optim.lr)
        factor = StagedSchedule(self.cfg, int(self.trainer.max_steps))
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": torch.optim.lr_scheduler.LambdaLR(optimizer, factor), "interval": "step"}}

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        if isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
            scheduler.step(self.global_step)  # a pure function of the step: exact on resume
        else:
            super().lr_scheduler_step(scheduler, metric)

    def updates_per_epoch(self, total_updates: int) -> int:
        return self.cfg.data.steps_per_epoch  # an epoch is `steps_per_epoch` design steps

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # The stop radius follows the curriculum each step; a stored lens always has the target aperture.
        set_stop_for_aperture(self.lens, self.cfg.model.spec, 1.0)
        checkpoint["state_dict"] = {**checkpoint["state_dict"], **{
            f"lens.{k}": v for k, v in self.lens.state_dict().items() if k.endswith("clear_radius")}}

    # ---- export

    def export_model(self) -> Lens:
        lens = copy.deepcopy(self.lens).cpu().eval()
        lens.compiled = False  # the export's few one-off traces would each cost a compile
        set_stop_for_aperture(lens, self.cfg.model.spec, 1.0)
        return lens

    def export_spec(self) -> dict:
        return {"target": "lightning_modules.optics.lens:lens_from_prescription",
                "kwargs": {"prescription": self.export_model().to_dict()}}
