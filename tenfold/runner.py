"""The fixed sequence of a run: seed, data, model, callbacks, loggers, trainer, fit, test, export.

Under Lightning's `ddp` launcher this function runs once per local rank (the launcher re-executes the
entry point); everything that must happen once per job is guarded by the global rank.
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import EMAWeightAveraging, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info

from callbacks.log_lines import LogLinesCallback
from callbacks.rng_state import RNGStateCallback
from tenfold.checkpoint_io import AtomicCheckpointIO, atomic_copy, load_weights_only
from tenfold.config import ExperimentConfig, LoggerKind, to_plain
from tenfold.errors import CheckpointError, ConfigError
from tenfold.export import export_run
from tenfold.loggers import build_loggers, truncate_metrics
from tenfold.model_summary import summary_callbacks
from tenfold.registry import MethodSpec, get_method
from tenfold.run_dir import RunDir, release, resolve_run_dir, write_run_files
from tenfold.threads import configure_threads

# Lightning 2.6 calls an API that torch 2.14 deprecated, on every batch transfer: noise, not the user's problem.
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
# Inference-only methods write their outputs from predict_step and return None on purpose.
warnings.filterwarnings("ignore", message=r"predict returned None if it was on purpose")


def run(cfg: Any, validate_only: bool = False) -> dict[str, float]:
    run_dir = resolve_run_dir(cfg)  # claims the directory: released below, whatever happens
    try:
        return _run(cfg, run_dir, validate_only)
    finally:
        release(run_dir)
        if cfg.logger is LoggerKind.wandb and "wandb" in sys.modules:
            import wandb

            wandb.finish()  # Lightning leaves the run open; a later run in this process would log into it


def check_resume_checkpoint(path: Path, method: str) -> dict:
    """Fail now, in one line, if the checkpoint is unreadable or another method's (mmap: no full read)."""
    ckpt = load_weights_only(path, mmap=True)
    config = (ckpt.get("hyper_parameters") or {}).get("config") or {}
    if config.get("method") not in (None, method):
        raise CheckpointError(f"{path} is a checkpoint of method '{config['method']}', not of '{method}': "
                              f"resume a {method} run, or set method={config['method']}")
    return ckpt


def _run(cfg: Any, run_dir: RunDir, validate_only: bool) -> dict[str, float]:
    spec = get_method(cfg.method)
    if run_dir.resume_from is not None:
        ckpt = check_resume_checkpoint(run_dir.resume_from, cfg.method)
        if run_dir.owned and run_dir.resume_from.is_relative_to(run_dir.path):
            dropped = truncate_metrics(run_dir.path / "metrics.csv", ckpt)
            if dropped:
                rank_zero_info(f"metrics.csv: dropped {dropped} row(s) logged after {run_dir.resume_from.name}")
    threads = configure_threads(cfg.threads, getattr(cfg, "trainer", None))
    L.seed_everything(cfg.seed, workers=True)
    if spec.job is not None:
        return run_job(spec, cfg, run_dir, validate_only)

    datamodule = spec.datamodule_class(cfg.data)
    datamodule.check()
    # What the model needs to know about the data (e.g. class names) travels into its hparams.
    module = spec.module_class(config=to_plain(cfg), **datamodule.module_kwargs())
    trainer = build_trainer(cfg, spec, run_dir)
    if trainer.is_global_zero:
        write_run_files(run_dir, cfg, trainer.world_size)
    rank_zero_info(f"run directory: {run_dir.path} (world size {trainer.world_size}, seed {cfg.seed}, "
                   f"{threads} torch thread(s) per process)")
    if validate_only:
        rank_zero_info("config, data and model are valid (--validate-only: not training)")
        return {}
    if cfg.wandb.watch:
        for logger in trainer.loggers:
            if hasattr(logger, "watch"):  # WandbLogger: gradient and parameter histograms
                logger.watch(module, log="all", log_freq=cfg.trainer.log_every_n_steps)

    if spec.inference_only:
        # Methods that only score data (pretrained models): predict writes their outputs.
        trainer.predict(module, datamodule=datamodule, return_predictions=False)
        return {}
    overrides_forward = type(module).forward is not L.LightningModule.forward
    if cfg.trainer.enable_model_summary is not False and module.example_input_array is None and overrides_forward:
        # One real input lets the model summary count FLOPs and show in/out sizes (else its FLOPs column reads 0).
        sample = datamodule.export_sample(1)
        if isinstance(sample, torch.Tensor):
            module.example_input_array = sample
    ckpt = str(run_dir.resume_from) if run_dir.resume_from else None
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt)
    best = _keep_best_checkpoint(trainer, run_dir)
    metrics: dict[str, float] = {}
    if cfg.run.test:
        trainer.test(module, datamodule=datamodule, ckpt_path=best, weights_only=True)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    elif best:
        module.load_state_dict(load_weights_only(best)["state_dict"])
    if cfg.export.enabled:
        if trainer.is_global_zero:
            export(module, datamodule, trainer, run_dir, cfg, source=best)
        trainer.strategy.barrier("export")
    return metrics


def run_job(spec: MethodSpec, cfg: Any, run_dir: RunDir, validate_only: bool) -> dict[str, float]:
    """A registered non-Lightning job: one process, the same run directory and loggers as a training run."""
    write_run_files(run_dir, cfg, world_size=1)
    rank_zero_info(f"run directory: {run_dir.path} (job, seed {cfg.seed})")
    if validate_only:
        rank_zero_info("config is valid (--validate-only: not running the job)")
        return {}
    loggers = build_loggers(
        cfg.logger, cfg.wandb, run_dir.path, run_dir.path.name, run_dir.wandb_id, cfg.run.tags, cfg.run.group
    )
    status = "failed"
    try:
        metrics = spec.job(cfg, run_dir, loggers)
        status = "success"
    finally:
        for logger in loggers:
            logger.finalize(status)
    return metrics


def required_trainer_settings(cfg: Any, spec: MethodSpec) -> dict[str, Any]:
    """The trainer settings: the user's, plus those the method requires where the user left them unset."""
    tcfg = {k: v for k, v in asdict(cfg.trainer).items() if v is not None}
    defaults = asdict(type(cfg.trainer)())
    for key, needed in (spec.required_trainer or {}).items():
        if key in tcfg and tcfg[key] != needed and tcfg[key] != defaults.get(key):
            raise ConfigError(f"method '{cfg.method}' requires trainer.{key}={needed}, but the config sets "
                              f"trainer.{key}={tcfg[key]}: remove that setting")
        if tcfg.get(key) != needed:
            rank_zero_info(f"trainer.{key}={needed} (required by method '{cfg.method}')")
        tcfg[key] = needed
    return tcfg


class StepNamedCheckpoint(ModelCheckpoint):
    """Names checkpoint files by the steps done (trainer.global_step), also for a method that logs its own
    `step` (Lightning's x-axis key, which ModelCheckpoint would otherwise put in the file name)."""

    def _monitor_candidates(self, trainer: L.Trainer) -> dict[str, torch.Tensor]:
        candidates = super()._monitor_candidates(trainer)
        candidates["step"] = torch.tensor(trainer.global_step)
        return candidates


def build_trainer(cfg: Any, spec: MethodSpec, run_dir: RunDir) -> L.Trainer:
    tcfg = required_trainer_settings(cfg, spec)
    show_bar = tcfg.pop("enable_progress_bar", sys.stderr.isatty())
    trained = isinstance(cfg, ExperimentConfig)
    callbacks: list[L.Callback] = [RNGStateCallback(), *spec.callbacks(cfg)]
    if trained:
        # last.ckpt, rewritten on every save point (Lightning's save_last only follows top-k saves,
        # which would leave a stale file to resume from once the metric stops improving).
        callbacks.insert(1, ModelCheckpoint(
            dirpath=run_dir.checkpoints,
            filename="last",
            enable_version_counter=False,
            every_n_epochs=cfg.checkpoint.every_n_epochs,
            every_n_train_steps=cfg.checkpoint.every_n_train_steps,
        ))
    if trained and cfg.checkpoint.monitor:
        # Best-k by the monitored metric, named by epoch and step; first, so it is the trainer's
        # `checkpoint_callback` that best.ckpt is taken from.
        callbacks.insert(1, StepNamedCheckpoint(
            dirpath=run_dir.checkpoints,
            filename="epoch{epoch:03d}-step{step:07d}",
            auto_insert_metric_name=False,
            monitor=cfg.checkpoint.monitor,
            mode=cfg.checkpoint.mode,
            save_top_k=cfg.checkpoint.save_top_k,
        ))
    if trained and cfg.ema.enabled:
        callbacks.append(EMAWeightAveraging(
            decay=cfg.ema.decay,
            update_every_n_steps=cfg.ema.update_every_n_steps,
            update_starting_at_step=cfg.ema.update_starting_at_step,
        ))
    # Ours replaces Lightning's default summary (which would print a FLOPs column of zeros).
    callbacks += summary_callbacks(tcfg.pop("enable_model_summary", None))
    if not show_bar:
        callbacks.append(LogLinesCallback(cfg.trainer.log_every_n_steps, cfg.run.progress_every_s))
    loggers = build_loggers(
        cfg.logger, cfg.wandb, run_dir.path, run_dir.path.name, run_dir.wandb_id, cfg.run.tags, cfg.run.group
    )
    if loggers:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    try:
        return L.Trainer(
            **tcfg,
            enable_progress_bar=show_bar,
            enable_model_summary=False,
            default_root_dir=run_dir.path,
            logger=loggers or False,
            callbacks=callbacks,
            plugins=[AtomicCheckpointIO()],
        )
    except (MisconfigurationException, ValueError, TypeError, ModuleNotFoundError) as exc:
        # Lightning validates accelerator/devices/strategy/precision values itself.
        raise ConfigError(f"invalid trainer.* setting: {exc}") from None


def _keep_best_checkpoint(trainer: L.Trainer, run_dir: RunDir) -> str | None:
    """Copy the best checkpoint to checkpoints/best.ckpt (rank 0); return its path for test/export."""
    callback = trainer.checkpoint_callback
    best = getattr(callback, "best_model_path", "") or getattr(callback, "last_model_path", "")
    if not best:
        return None  # fast_dev_run writes no checkpoints
    target = run_dir.checkpoints / "best.ckpt"
    if trainer.is_global_zero:
        atomic_copy(best, target)
    trainer.strategy.barrier("best-checkpoint")
    return str(target)


def export(module: Any, datamodule: Any, trainer: L.Trainer, run_dir: RunDir, cfg: Any,
           source: str | None) -> None:
    meta = {"method": cfg.method, "source_checkpoint": source, "run_dir": str(run_dir.path)}
    written = export_run(module, datamodule, trainer.callbacks, run_dir.export, meta,
                         cfg.export.sample_batch_size, onnx=cfg.export.onnx)
    rank_zero_info("exported to " + str(run_dir.export) + ": " + ", ".join(written.values()))
