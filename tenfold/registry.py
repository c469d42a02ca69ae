"""The method registry: `method: <name>` in a config selects everything a run needs.

Each method registers once, with a decorator next to its LightningModule. A job that is not a Lightning
loop (statistics over released results, e.g. `face_emotion_analysis`) registers a function with `register_job`:
it gets the same config handling, run directory and loggers. `lightning_modules/methods.py`
imports every method explicitly (no directory scan); the registry imports it on first lookup.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tenfold.errors import ConfigError

CallbackFactory = Callable[[Any], list]
# (config, run directory, Lightning loggers) -> the job's headline numbers
JobFunction = Callable[[Any, Any, list], dict[str, float]]


@dataclass(frozen=True)
class MethodSpec:
    name: str
    module_class: type | None  # LightningModule taking (config: dict, **datamodule.module_kwargs())
    config_class: type  # an ExperimentConfig subclass with the paper's defaults
    datamodule_class: type | None  # LightningDataModule taking the `data` config
    callbacks: CallbackFactory  # method config -> default callbacks (curriculum, pruning, reparam)
    summary: str
    inference_only: bool  # no fit/test/export: `trainer.predict` produces the method's outputs
    job: JobFunction | None = None  # set for register_job: runs instead of any Trainer


_METHODS: dict[str, MethodSpec] = {}


def _no_callbacks(cfg: Any) -> list:
    return []


def register_method(
    name: str,
    *,
    config: type,
    datamodule: type,
    callbacks: CallbackFactory = _no_callbacks,
    summary: str = "",
    inference_only: bool = False,
) -> Callable[[type], type]:
    def decorate(module_class: type) -> type:
        _add(MethodSpec(name, module_class, config, datamodule, callbacks, summary, inference_only))
        return module_class

    return decorate


def register_job(name: str, *, config: type, summary: str = "") -> Callable[[JobFunction], JobFunction]:
    def decorate(job: JobFunction) -> JobFunction:
        _add(MethodSpec(name, None, config, None, _no_callbacks, summary, inference_only=True, job=job))
        return job

    return decorate


def _add(spec: MethodSpec) -> None:
    if spec.name in _METHODS:
        raise ValueError(f"method '{spec.name}' is registered twice ({_METHODS[spec.name]})")
    _METHODS[spec.name] = spec


def _load_methods() -> None:
    import lightning_modules.methods  # noqa: F401  (registers every method on import)


def get_method(name: str) -> MethodSpec:
    _load_methods()
    if name not in _METHODS:
        known = ", ".join(sorted(_METHODS))
        raise ConfigError(f"unknown method '{name}'. Known methods: {known}")
    return _METHODS[name]


def list_methods() -> list[MethodSpec]:
    _load_methods()
    return [_METHODS[name] for name in sorted(_METHODS)]
