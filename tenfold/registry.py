"""The method registry: `method: <name>` in a config selects everything a run needs.

`lightning_modules/__init__.py` holds one line per method: its name, the module that registers it, the
pip extra it needs and a one-line summary. Only the selected method's module is imported (so a method
whose extra is missing never stops another one), and `--list-methods` imports none. The registering
module uses `@register_method` next to its LightningModule, or `@register_job` for work that is not a
Lightning loop (statistics over released results, LLM prompt generation): a job gets the same config
handling, run directory and loggers.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tenfold.errors import ConfigError

CallbackFactory = Callable[[Any], list]
# (config, run directory, Lightning loggers) -> the job's headline numbers
JobFunction = Callable[[Any, Any, list], dict[str, float]]


@dataclass(frozen=True)
class MethodLocation:
    """One registry line: where a method lives, without importing it."""

    module: str  # the module whose import registers the method
    summary: str
    extra: str | None = None  # the pip extra its imports need (pip install -e .[extra])
    predictor: str | None = None  # "module:function" for predict.py (see tenfold/method.py)


@dataclass(frozen=True)
class MethodSpec:
    name: str
    module_class: type | None  # a tenfold.method.MethodModule subclass
    config_class: type  # an ExperimentConfig (or JobConfig / InferenceConfig) subclass
    datamodule_class: type | None  # a tenfold.method.MethodDataModule subclass taking the `data` config
    callbacks: CallbackFactory  # method config -> default callbacks (curriculum, pruning, reparam)
    inference_only: bool  # no fit/test/export: `trainer.predict` produces the method's outputs
    job: JobFunction | None = None  # set for register_job: runs instead of any Trainer
    # Trainer settings the method needs (e.g. {"max_epochs": 1}); a conflicting user value is an error.
    required_trainer: dict[str, Any] | None = None


_REGISTERED: dict[str, MethodSpec] = {}


def _no_callbacks(cfg: Any) -> list:
    return []


def register_method(
    name: str,
    *,
    config: type,
    datamodule: type,
    callbacks: CallbackFactory = _no_callbacks,
    inference_only: bool = False,
    required_trainer: dict[str, Any] | None = None,
) -> Callable[[type], type]:
    def decorate(module_class: type) -> type:
        _add(MethodSpec(name, module_class, config, datamodule, callbacks, inference_only,
                        required_trainer=required_trainer))
        return module_class

    return decorate


def register_job(name: str, *, config: type) -> Callable[[JobFunction], JobFunction]:
    def decorate(job: JobFunction) -> JobFunction:
        _add(MethodSpec(name, None, config, None, _no_callbacks, inference_only=True, job=job))
        return job

    return decorate


def _add(spec: MethodSpec) -> None:
    if spec.name in _REGISTERED and _REGISTERED[spec.name] != spec:
        raise ValueError(f"method '{spec.name}' is registered twice ({_REGISTERED[spec.name]})")
    _REGISTERED[spec.name] = spec


def locations() -> dict[str, MethodLocation]:
    from lightning_modules import METHODS  # a plain table: imports no method

    return METHODS


def location(name: str) -> MethodLocation:
    table = locations()
    if name not in table:
        raise ConfigError(f"unknown method '{name}'. Known methods: {', '.join(sorted(table))}")
    return table[name]


def get_method(name: str) -> MethodSpec:
    """Import the method's module (only that one) and return what it registered."""
    where = location(name)
    if name not in _REGISTERED:
        try:
            importlib.import_module(where.module)
        except ModuleNotFoundError as exc:
            if where.extra is None or (exc.name or "").split(".")[0] in _OWN_PACKAGES:
                raise
            raise ConfigError(f"method '{name}' needs the '{where.extra}' extra: pip install -e .[{where.extra}]"
                              f" (missing module: {exc.name})") from None
    if name not in _REGISTERED:
        raise ValueError(f"{where.module} was imported but registered no method '{name}'")
    return _REGISTERED[name]


_OWN_PACKAGES = ("tenfold", "lightning_modules", "datamodules", "callbacks")
# (run directory, inputs, options) -> one dict per result (printed as a JSON line)
Predictor = Callable[[Any, list[str], dict[str, str]], Any]


def load_predictor(name: str) -> Predictor:
    """The method's predictor (see tenfold/method.py), or one ConfigError saying it has none."""
    where = location(name)
    if where.predictor is None:
        raise ConfigError(f"method '{name}' has no predictor: its results are the files in its run directory "
                          "(report/, metrics.csv, export/)")
    get_method(name)  # the extra check, with its one-line message
    module_name, _, func = where.predictor.partition(":")
    return getattr(importlib.import_module(module_name), func)
