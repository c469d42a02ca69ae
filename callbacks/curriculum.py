"""Curriculum: ramp named quantities from an easy start to the target as a pure function of the step.

DeepLens ramps aperture and field of view (digest 3.1); any method can ramp anything it exposes through
`apply_curriculum(values: dict[str, float])`. With `stages > 0` the ramp is a staircase of `stages + 1`
equal steps (s = 0..S, weight = shape(s / S), the official 2023 schedule); with `stages = 0` it is
continuous. After `ramp_steps` every quantity stays at its target. Because the values depend only on the
global step, a resumed run continues the schedule exactly; `state_dict` also keeps the last stage and
values so a checkpoint records where the curriculum stood.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

import lightning as L
from lightning.pytorch.utilities import rank_zero_warn


class RampShape(enum.Enum):
    linear = "linear"
    sine = "sine"  # sin(pi u / 2): fast at first, gentle near the target
    cosine = "cosine"  # (1 - cos(pi u)) / 2: gentle at both ends


@dataclass
class CurriculumConfig:
    enabled: bool = True
    # name -> [start, target]; the method decides what a name means (DeepLens: aperture, fov ratios)
    quantities: dict[str, list[float]] = field(default_factory=dict)
    ramp_steps: int = 1000  # optimizer steps from start to target
    stages: int = 5  # 0: continuous ramp
    shape: RampShape = RampShape.sine


def ramp_weight(u: float, shape: RampShape) -> float:
    u = min(max(u, 0.0), 1.0)
    if shape is RampShape.linear:
        return u
    if shape is RampShape.sine:
        return math.sin(math.pi * u / 2)
    return 0.5 * (1 - math.cos(math.pi * u))


def curriculum_at(step: int, cfg: CurriculumConfig) -> tuple[int, dict[str, float]]:
    """(stage, {name: value}) at optimizer step `step`; stage counts 0..stages (0 when continuous)."""
    progress = min(step / max(cfg.ramp_steps, 1), 1.0)
    if cfg.stages > 0:
        stage = min(int(progress * (cfg.stages + 1)), cfg.stages)
        weight = ramp_weight(stage / cfg.stages, cfg.shape)
    else:
        stage, weight = 0, ramp_weight(progress, cfg.shape)
    values = {name: start + (target - start) * weight for name, (start, target) in cfg.quantities.items()}
    return stage, values


class CurriculumCallback(L.Callback):
    def __init__(self, cfg: CurriculumConfig) -> None:
        self.cfg = cfg
        self.stage, self.values = curriculum_at(0, cfg)

    def _apply(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.stage, self.values = curriculum_at(trainer.global_step, self.cfg)
        pl_module.apply_curriculum(dict(self.values))

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._apply(trainer, pl_module)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        self._apply(trainer, pl_module)
        metrics = {"curriculum/stage": float(self.stage)}
        metrics.update({f"curriculum/{name}": value for name, value in self.values.items()})
        pl_module.log_dict(metrics, on_step=True, on_epoch=False, batch_size=1)

    def state_dict(self) -> dict:
        return {"stage": self.stage, "values": dict(self.values), "ramp_steps": self.cfg.ramp_steps,
                "stages": self.cfg.stages, "shape": self.cfg.shape.value}

    def load_state_dict(self, state: dict) -> None:
        if (state["ramp_steps"], state["stages"], state["shape"]) != (
                self.cfg.ramp_steps, self.cfg.stages, self.cfg.shape.value):
            rank_zero_warn(f"curriculum changed since the checkpoint ({state}); continuing with the new schedule")
        self.stage, self.values = state["stage"], dict(state["values"])
