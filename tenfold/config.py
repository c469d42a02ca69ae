"""Typed experiment configs: the base schema every method extends, and the loader.

Build order (later wins): the method's dataclass defaults, each `--config` file in order, then the
`key=value` overrides. Struct mode is always on, so a misspelt key fails at load time with the valid
keys at that level listed, and every value is checked against its dataclass type. Values are checked too,
before any work: each dataclass's `__post_init__` refuses what it cannot run (a zero LR, an unknown timm
optimizer), and `check_sizes` refuses a non-positive size or batch wherever a config names one.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import inspect
import math
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    InterpolationResolutionError,
    OmegaConfBaseException,
    ValidationError,
)

from tenfold.errors import ConfigError
from tenfold.redact import is_secret_name, secret_env_names


class LoggerKind(enum.Enum):
    wandb = "wandb"
    tensorboard = "tensorboard"
    csv = "csv"
    none = "none"


class LRScaling(enum.Enum):
    """How the base learning rate follows the global batch (lightly / Goyal et al. linear rule)."""

    none = "none"
    linear = "linear"
    sqrt = "sqrt"


@dataclass
class RunConfig:
    name: str | None = None  # default: <YYYYmmdd-HHMMSS>-<config hash>, or the cluster job id
    root: str = "runs"
    tags: list[str] = field(default_factory=list)
    group: str | None = None
    progress_every_s: float = 30.0  # without a TTY: at most one progress line per this many seconds

    def __post_init__(self) -> None:
        if self.name is not None and (self.name in ("", ".", "..") or any(c in self.name for c in "/\\\0")):
            raise ConfigError(f"run.name={self.name!r} must be one plain directory name (no '/', '..'): "
                              f"runs live under run.root/<method>/<run.name>")


@dataclass
class TrainedRunConfig(RunConfig):
    test: bool = True  # test the best checkpoint after fit


@dataclass
class TrainerConfig:
    """The vetted subset of `lightning.Trainer` arguments; None keeps Lightning's default."""

    accelerator: str = "auto"
    devices: Any = "auto"  # int, list of ids or "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    max_epochs: int | None = None
    max_steps: int = -1
    accumulate_grad_batches: int = 1
    gradient_clip_val: float | None = None
    gradient_clip_algorithm: str | None = None
    deterministic: Any = None  # bool or "warn"
    benchmark: bool | None = None
    sync_batchnorm: bool = False
    log_every_n_steps: int = 50
    val_check_interval: Any = None  # int (batches) or float (fraction of an epoch)
    check_val_every_n_epoch: int | None = 1
    limit_train_batches: Any = None  # int (batches) or float (fraction)
    limit_val_batches: Any = None
    limit_test_batches: Any = None
    num_sanity_val_steps: int | None = None
    fast_dev_run: Any = False  # bool or int
    reload_dataloaders_every_n_epochs: int = 0
    enable_progress_bar: bool | None = None  # None: a bar on a TTY, log lines otherwise
    enable_model_summary: bool | None = None

    def __post_init__(self) -> None:
        if self.max_epochs is not None and self.max_epochs < 0 and not (self.max_epochs == -1 and self.max_steps > 0):
            raise ConfigError(f"trainer.max_epochs={self.max_epochs} must be >= 0 (or null); "
                              "-1 (no epoch limit) needs trainer.max_steps>0")
        if self.max_steps < 1 and self.max_steps != -1:
            raise ConfigError(f"trainer.max_steps={self.max_steps} must be at least 1, or -1 for no step limit")
        _at_least(1, "trainer.accumulate_grad_batches", self.accumulate_grad_batches)
        _at_least(1, "trainer.num_nodes", self.num_nodes)
        _at_least(1, "trainer.log_every_n_steps", self.log_every_n_steps)
        _at_least(1, "trainer.check_val_every_n_epoch", self.check_val_every_n_epoch)
        if self.gradient_clip_val is not None and not self.gradient_clip_val >= 0:
            raise ConfigError(f"trainer.gradient_clip_val={self.gradient_clip_val} must be >= 0 (or null)")


@dataclass
class OptimConfig:
    """Optimizer and LR schedule, built with timm's factories (`create_optimizer_v2/_scheduler_v2`)."""

    name: str = "adamw"  # any timm optimizer name; note timm's "sgd" is Nesterov, "momentum" is not
    lr: float = 1e-3
    weight_decay: float = 0.05
    momentum: float = 0.9
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    no_weight_decay_1d: bool = True  # no decay on biases, norms, layer-scale gammas
    lr_scaling: LRScaling = LRScaling.none
    reference_batch_size: int = 256  # the global batch at which `lr` is given
    scheduler: str = "cosine"  # any timm scheduler name, or "none"
    warmup_epochs: float = 0.0
    warmup_lr: float = 1e-6
    min_lr: float = 0.0
    decay_milestones: list[int] = field(default_factory=list)  # for "multistep", in epochs
    decay_rate: float = 0.1

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"optim.lr={self.lr} must be a positive number")
        known = timm_optimizers()
        if self.name.lower().removeprefix("lookahead_") not in known:
            raise ConfigError(f"optim.name={self.name!r} is not a timm optimizer. Known: {', '.join(known)}")
        if self.scheduler not in SCHEDULERS:
            raise ConfigError(f"optim.scheduler={self.scheduler!r} is not a timm scheduler. "
                              f"Known: {', '.join(SCHEDULERS)}")
        if not self.weight_decay >= 0:
            raise ConfigError(f"optim.weight_decay={self.weight_decay} must be >= 0")
        _at_least(1, "optim.reference_batch_size", self.reference_batch_size)
        if self.warmup_epochs < 0:
            raise ConfigError(f"optim.warmup_epochs={self.warmup_epochs} must be >= 0")


@dataclass
class WandbConfig:
    project: str = "tenfold"
    entity: str | None = None
    # online | offline | disabled; None decides: WANDB_MODE, then online with an API key, else offline
    mode: str | None = None
    log_model: bool = False  # upload checkpoints (online only)
    watch: bool = False  # gradient/parameter histograms; costs time

    def __post_init__(self) -> None:
        if self.mode not in (None, "online", "offline", "disabled", "dryrun", "run"):
            raise ConfigError(f"wandb.mode={self.mode!r} is not one of online, offline, disabled (or null)")


@dataclass
class CheckpointConfig:
    # best-k checkpoints: epoch{epoch:03d}-step{step:07d}.ckpt, then best.ckpt at fit end
    monitor: str | None = "val/loss"
    mode: str = "min"
    save_top_k: int = 1
    # last.ckpt (what resume continues from): every N epochs (1 when neither is set), or every N
    # optimizer steps for long epochs; the two are alternatives
    every_n_epochs: int | None = None
    every_n_train_steps: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("min", "max"):
            raise ConfigError(f"checkpoint.mode={self.mode!r} must be min or max")
        if self.every_n_epochs is not None and self.every_n_train_steps is not None:
            raise ConfigError(f"checkpoint.every_n_epochs={self.every_n_epochs} and checkpoint.every_n_train_steps="
                              f"{self.every_n_train_steps} are alternatives: set only one")
        _at_least(1, "checkpoint.every_n_epochs", self.every_n_epochs)
        _at_least(1, "checkpoint.every_n_train_steps", self.every_n_train_steps)
        _at_least(-1, "checkpoint.save_top_k", self.save_top_k)


@dataclass
class EMAConfig:
    """Exponential moving average of the weights (Lightning's EMAWeightAveraging).

    When on, validation, checkpoints, test and export use the averaged weights.
    """

    enabled: bool = False
    decay: float = 0.9998
    update_every_n_steps: int = 1
    update_starting_at_step: int | None = None

    def __post_init__(self) -> None:
        if not 0 < self.decay < 1:
            raise ConfigError(f"ema.decay={self.decay} must be between 0 and 1")
        _at_least(1, "ema.update_every_n_steps", self.update_every_n_steps)


@dataclass
class ExportConfig:
    enabled: bool = True
    onnx: bool = True  # also write model.onnx where the model allows it
    sample_batch_size: int = 8  # real validation images used to check export transforms

    def __post_init__(self) -> None:
        _at_least(1, "export.sample_batch_size", self.sample_batch_size)


@dataclass
class JobConfig:
    """Top-level keys of every run. A registered job (no Trainer) subclasses this one to type `model`/`data`."""

    method: str = MISSING
    seed: int = 42
    # torch threads of each process; None: the cores this process may use / the local processes sharing them
    threads: int | None = None
    logger: LoggerKind = LoggerKind.wandb
    wandb: WandbConfig = field(default_factory=WandbConfig)
    run: RunConfig = field(default_factory=RunConfig)
    model: Any = None
    data: Any = None

    def __post_init__(self) -> None:
        _at_least(1, "threads", self.threads)


@dataclass
class InferenceConfig(JobConfig):
    """An inference-only method: a Trainer runs `predict`; nothing is optimised, checkpointed or exported."""

    # "latest" (newest run of this method), "auto" (continue run.name), or a run directory
    resume: str | None = None
    trainer: TrainerConfig = field(default_factory=TrainerConfig)


@dataclass
class ExperimentConfig(InferenceConfig):
    """A trained method: adds the optimizer, checkpoints, weight EMA and export."""

    ckpt_path: str | None = None
    run: TrainedRunConfig = field(default_factory=TrainedRunConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    export: ExportConfig = field(default_factory=ExportConfig)


# --------------------------------------------------------------------------------------------------
# Value checks

# timm's create_scheduler_v2 names, and "none" (a constant LR)
SCHEDULERS = ("none", "cosine", "tanh", "step", "multistep", "plateau", "poly", "constant", "rsqrt")
# A field of any config with one of these names is a count or a size: a positive integer.
POSITIVE_FIELDS = ("batch_size_per_device", "eval_batch_size_per_device", "image_size", "patch_size")


def timm_optimizers() -> list[str]:
    from timm.optim import list_optimizers  # timm's registry; imported only when a config is checked

    return list_optimizers()


def _at_least(low: int, key: str, value: int | None) -> None:
    if value is not None and value < low:
        raise ConfigError(f"{key}={value} must be at least {low}")


def check_kwargs(key: str, given: dict, target: Callable, taken: Iterable[str] = ()) -> None:
    """Refuse a key of a dict-typed field (e.g. `model.arch`) that `target` does not accept.

    `taken` are the arguments the method passes itself (e.g. num_classes).
    """
    params = inspect.signature(target).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    allowed = [n for n in params if n not in ("self", "device", "dtype", *taken)]
    for name in given:
        if name not in allowed:
            raise ConfigError(f"unknown key '{key}.{name}': {target.__qualname__} takes {', '.join(allowed)}")


def check_sizes(node: Any, prefix: str = "") -> None:
    """Refuse a zero or negative `POSITIVE_FIELDS` value anywhere in a config (e.g. data.image_size=0)."""
    if not dataclasses.is_dataclass(node):
        return
    for f in dataclasses.fields(node):
        value, key = getattr(node, f.name), f"{prefix}{f.name}"
        if f.name in POSITIVE_FIELDS and isinstance(value, int) and value < 1:
            raise ConfigError(f"{key}={value} must be a positive integer")
        check_sizes(value, key + ".")


# --------------------------------------------------------------------------------------------------
# Loading


def read_yaml(path: str | Path) -> DictConfig:
    """One YAML file through OmegaConf's loader (PyYAML alone reads `1e-4` as a string)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path} (pass an existing file to --config)")
    try:
        cfg = OmegaConf.load(path)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}:{where}: YAML syntax error: {problem}") from None
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, not a list")
    return cfg


def parse_overrides(overrides: list[str]) -> DictConfig:
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"override '{item}' is not of the form key=value (e.g. trainer.max_steps=5)")
    try:
        return OmegaConf.from_dotlist(list(overrides))
    except OmegaConfBaseException as exc:
        raise ConfigError(f"command line: cannot parse overrides: {exc}") from None
    except yaml.YAMLError as exc:  # a value is parsed as YAML: `key=[a` or `key=[${x}]`
        bad = next((o for o in overrides if _yaml_error(o.split("=", 1)[1])), "?")
        raise ConfigError(f"command line: cannot parse the value of '{bad}': {getattr(exc, 'problem', exc)} "
                          "(quote it, e.g. key='[\"...\"]')") from None


def _yaml_error(value: str) -> bool:
    try:
        yaml.safe_load(value)
    except yaml.YAMLError:
        return True
    return False


def find_method(sources: list[tuple[str, DictConfig]]) -> str:
    method = None
    for _, raw in sources:
        method = raw.get("method", method)
    if not method:
        raise ConfigError("no method selected: set `method: <name>` in the config or pass method=<name>")
    return str(method)


def compose(schema: type, sources: list[tuple[str, DictConfig]]) -> Any:
    """Merge `sources` (name, raw config) into `schema`, validate, resolve; return the dataclass."""
    cfg = OmegaConf.structured(schema)  # dataclass nodes are struct: unknown keys fail
    # OmegaConf's merge ignores a `???` in a source, so a YAML file's "you must set this" would be lost.
    required = {str(key) for _, raw in sources for key in OmegaConf.missing_keys(raw)}
    for source, raw in sources:
        try:
            cfg = OmegaConf.merge(cfg, raw)
        except (ConfigKeyError, ConfigAttributeError) as exc:
            raise ConfigError(_unknown_key_message(source, cfg, exc)) from None
        except ValidationError as exc:
            raise ConfigError(_wrong_type_message(source, cfg, exc)) from None
        except OmegaConfBaseException as exc:
            raise ConfigError(f"{source}: {_short(exc)}") from None
    unset = {key for key in required if OmegaConf.select(cfg, key, throw_on_missing=False) is None}
    missing = sorted(set(OmegaConf.missing_keys(cfg)) | unset)
    if missing:
        names = ", ".join(missing)
        raise ConfigError(f"required config value(s) not set: {names} (set them in the YAML or as key=value)")
    _refuse_secret_interpolation(OmegaConf.to_container(cfg, resolve=False))
    try:
        OmegaConf.resolve(cfg)
        obj = OmegaConf.to_object(cfg)
    except InterpolationResolutionError as exc:
        raise ConfigError(f"cannot resolve interpolation at '{exc.full_key}': {exc.msg}") from None
    except OmegaConfBaseException as exc:
        raise ConfigError(f"invalid config at '{getattr(exc, 'full_key', '?')}': {_short(exc)}") from None
    check_sizes(obj)
    return obj


def _refuse_secret_interpolation(tree: Any, prefix: str = "") -> None:
    """`${oc.env:API_KEY}` under a key not named as a secret would write the secret into the run's records."""
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else []
    for key, value in items:
        path = f"{prefix}{key}"
        names = secret_env_names(value)
        if names and not is_secret_name(str(key)):
            raise ConfigError(f"{path}: {value!r} interpolates the secret-looking variable {names[0]} into a "
                              "value that would be written to config.yaml, checkpoints and W&B; put secrets only "
                              "under keys named as such (api_key, token, password), which are redacted")
        if not is_secret_name(str(key)):
            _refuse_secret_interpolation(value, path + ".")


def to_plain(cfg: Any) -> dict:
    """A dataclass config as plain Python types (enums as their values): safe for YAML, W&B, ckpts."""
    # Our enums have member name == value, so `enum_to_str` round-trips through `from_plain`.
    return OmegaConf.to_container(OmegaConf.structured(cfg), enum_to_str=True)


def from_plain(schema: type, plain: dict) -> Any:
    """The inverse of `to_plain`: validate a plain dict (e.g. checkpoint hparams) against `schema`."""
    return compose(schema, [("checkpoint hparams", OmegaConf.create(plain))])


def config_hash(cfg: Any) -> str:
    text = OmegaConf.to_yaml(OmegaConf.create(to_plain(cfg)), sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:6]


# --------------------------------------------------------------------------------------------------
# Error messages


def _short(exc: OmegaConfBaseException) -> str:
    msg = getattr(exc, "msg", None) or str(exc)
    return msg.splitlines()[0]


def _parent(full_key: str) -> str:
    return full_key.rsplit(".", 1)[0] if "." in full_key else ""


def _node_type(cfg: DictConfig, key: str) -> type | None:
    node = OmegaConf.select(cfg, key) if key else cfg
    if isinstance(node, DictConfig):
        node_type = OmegaConf.get_type(node)
        return node_type if dataclasses.is_dataclass(node_type) else None
    return None


def _describe_fields(schema: type) -> str:
    hints = typing.get_type_hints(schema)
    parts = [f"{f.name} ({_type_name(hints.get(f.name, Any))})" for f in dataclasses.fields(schema)]
    return ", ".join(parts)


def _type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        names = " or ".join(_type_name(a) for a in args if a is not type(None))
        return names + " or null" if type(None) in args else names
    if origin is not None:  # list[float], dict[str, Any]
        return repr(tp).replace("typing.", "")
    if tp is Any:
        return "any"
    return getattr(tp, "__name__", str(tp))


def _unknown_key_message(source: str, cfg: DictConfig, exc: OmegaConfBaseException) -> str:
    full_key = exc.full_key or str(getattr(exc, "key", "?"))
    parent = _parent(full_key)
    schema = _node_type(cfg, parent)
    allowed = _describe_fields(schema) if schema else "(see the method's config.py)"
    where = f"'{parent}'" if parent else "the top level"
    return f"{source}: unknown key '{full_key}'. Allowed keys at {where}: {allowed}"


def _wrong_type_message(source: str, cfg: DictConfig, exc: ValidationError) -> str:
    full_key = exc.full_key or "?"
    expected = ""
    schema = _node_type(cfg, _parent(full_key))
    leaf = full_key.rsplit(".", 1)[-1]
    if schema is not None:
        hints = typing.get_type_hints(schema)
        if leaf in hints:
            tp = hints[leaf]
            expected = f" (expected {_type_name(tp)}"
            if isinstance(tp, type) and issubclass(tp, enum.Enum):
                expected += ": one of " + ", ".join(m.value for m in tp)
            expected += ")"
    return f"{source}: wrong type for '{full_key}'{expected}: {_short(exc)}"

