"""Platform overhead on the RDNet demo: tenfold's training step against a plain PyTorch loop, and DDP scaling.

Part 1, in this process (same net, data, batch, optimizer, loss and torch thread count):
  plain     a hand-written loop: `build_rdnet` with the demo's arch, AdamW (timm's no-decay-on-1-D groups, the
            config's lr/betas/eps), label-smoothing cross-entropy, the datamodule's `train_dataloader()`.
  platform  `lightning.Trainer.fit` on `RDNetModule`, built from `load_config` as the runner builds it, with the
            runner's per-step callbacks (RNG state, log lines) but no logger, checkpointing, progress bar or
            validation. It also steps the timm LR schedule, which the plain loop does not (microseconds).
  Each fit runs `--warmup` untimed updates, then `--steps` updates timed with perf_counter (a callback marks the
  start of update `warmup` and the end of the last one); the two alternate A/B for `--rounds`, and the medians
  are compared. ratio = platform / plain: 1.00 is no overhead, 0.95 means 5% of each step goes to Lightning and
  platform code (the goal is >= 0.95). CPU share = CPU time / (wall time x threads): near 1 when the cores were
  ours; well below 1 means other work shared them and the round is noise, not overhead. One thread by default:
  with two intra-op threads on a 2-core machine any other busy process stalls every OpenMP barrier (measured
  20x slower), which buries a few percent of overhead; `--threads 2` measures at torch's default anyway.

Part 2 (`--skip-ddp` leaves it out): `train.py` as a subprocess with `trainer.strategy=ddp` on CPU (gloo), for 1
  process with tenfold's thread count (cores / local ranks, tenfold/threads.py), 1 process x 1 thread, and 2
  processes with tenfold's thread count. Startup and imports are left out by timestamping, here, the progress line
  the run prints after every update (`trainer.log_every_n_steps=1`): images/s = global batch x `--steps` / time from
  the line of update `warmup` to that of update `warmup + steps`. Epoch ends, with the platform's last.ckpt save,
  fall inside that window as in a real run. ratio = 2 processes / 1 process, in global images/s: 2.0 would be linear
  scaling; on 2 cores the ranks share the cores one process could use, so about 1 (or below, under other load) is
  expected.

    python benchmarks/platform_overhead.py [--steps 20] [--warmup 3] [--rounds 3] [--batch 64] [--threads 1]
                                           [--skip-ddp] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from timm.optim import param_groups_weight_decay
from torch import nn
from torch.utils.data import DataLoader

from callbacks.log_lines import LogLinesCallback
from callbacks.rng_state import RNGStateCallback
from lightning_modules.rdnet.net import build_rdnet
from tenfold.cli import load_config
from tenfold.config import to_plain
from tenfold.optim import scaled_lr
from tenfold.registry import get_method
from tenfold.run_dir import RUN_DIR_ENV
from tenfold.threads import available_cores

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "demo" / "rdnet.yaml"
# The line LogLinesCallback prints after an update: "epoch 0/1 step 12/20 lr=... (1.43 steps/s, ETA 0:05)".
STEP_LINE = re.compile(r"\bstep (\d+)/\d+ lr=")


# ---- part 1: one process


@dataclass
class Timing:
    seconds: float  # wall clock of the timed updates
    cpu_seconds: float  # CPU time of this process (all its threads) over the same updates
    threads: int

    @property
    def cpu_share(self) -> float:
        """CPU time / (wall x threads): about 1 on idle cores; well below 1 when other work took the cores."""
        return self.cpu_seconds / (self.seconds * self.threads)


class SteadyStateTimer(L.Callback):
    """Clocks from the start of update `warmup` to the end of the last update."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.start: tuple[float, float] | None = None
        self.end: tuple[float, float] | None = None
        self.threads = 0

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self.start is None and trainer.global_step == self.warmup:
            self.threads = torch.get_num_threads()
            self.start = (time.perf_counter(), time.process_time())

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.end = (time.perf_counter(), time.process_time())

    def timing(self) -> Timing:
        if self.start is None or self.end is None:
            raise RuntimeError(f"the fit ended before update {self.warmup}: nothing was timed")
        return Timing(self.end[0] - self.start[0], self.end[1] - self.start[1], self.threads)


def platform_config(batch: int) -> Any:
    return load_config(
        [str(CONFIG)],
        [
            "logger=none",
            f"data.batch_size_per_device={batch}",
            # the plain loop has neither: keep the work per update identical
            "trainer.accumulate_grad_batches=1",
            "trainer.precision=32-true",
        ],
    )


def platform_fit(cfg: Any, module: L.LightningModule, datamodule: Any, warmup: int, steps: int) -> Timing:
    """`steps` updates of `Trainer.fit`, timed after `warmup` untimed ones."""
    spec = get_method(cfg.method)
    trainer_args = {k: v for k, v in asdict(cfg.trainer).items() if v is not None}
    trainer_args.update(
        accelerator="cpu", devices=1, strategy="auto", max_steps=warmup + steps, limit_val_batches=0,
        num_sanity_val_steps=0, enable_progress_bar=False, enable_model_summary=False,
    )
    timer = SteadyStateTimer(warmup)
    trainer = L.Trainer(
        **trainer_args,
        logger=False,
        enable_checkpointing=False,
        callbacks=[RNGStateCallback(), LogLinesCallback(cfg.trainer.log_every_n_steps), *spec.callbacks(cfg), timer],
    )
    trainer.fit(module, datamodule=datamodule)
    return timer.timing()


def _endless(loader: DataLoader) -> Iterator[Any]:
    while True:  # a new pass (and shuffle) at each epoch end, as Lightning does
        yield from loader


def plain_fit(cfg: Any, net: nn.Module, loader: DataLoader, warmup: int, steps: int) -> Timing:
    """The same updates written by hand: `steps` of them, timed after `warmup` untimed ones."""
    opt = cfg.optim
    lr = scaled_lr(opt, cfg.data.batch_size_per_device)
    optimizer = torch.optim.AdamW(
        param_groups_weight_decay(net, opt.weight_decay), lr=lr, betas=tuple(opt.betas), eps=opt.eps
    )
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.model.label_smoothing)
    net.train()
    batches = _endless(loader)
    start, cpu_start, threads = 0.0, 0.0, 0
    for step in range(warmup + steps):
        images, targets = next(batches)
        if step == warmup:  # after the fetch, as Lightning's timer starts after its (prefetched) batch
            threads = torch.get_num_threads()
            start, cpu_start = time.perf_counter(), time.process_time()
        loss = loss_fn(net(images), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return Timing(time.perf_counter() - start, time.process_time() - cpu_start, threads)


def compare_in_process(batch: int, warmup: int, steps: int, rounds: int) -> dict[str, Any]:
    cfg = platform_config(batch)
    spec = get_method(cfg.method)
    datamodule = spec.datamodule_class(cfg.data)
    datamodule.check()
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    m = cfg.model
    rates: dict[str, list[float]] = {"plain": [], "platform": []}
    shares: dict[str, list[float]] = {"plain": [], "platform": []}
    threads: set[int] = set()
    for round_index in range(rounds):
        L.seed_everything(cfg.seed + round_index, verbose=False)
        module = spec.module_class(config=to_plain(cfg), class_names=datamodule.class_names)
        if module.mixup is not None:
            raise SystemExit(f"{CONFIG} turns Mixup on; the plain loop has none: set model.mixup alphas to 0")
        net = build_rdnet(m.name, module.num_classes, m.drop_path_rate, m.drop_rate, None, dict(m.arch))
        net.load_state_dict(module.net.state_dict())  # both start from the same weights
        for name in ("platform", "plain"):
            if name == "platform":
                timing = platform_fit(cfg, module, datamodule, warmup, steps)
            else:
                timing = plain_fit(cfg, net, loader, warmup, steps)
            rates[name].append(batch * steps / timing.seconds)
            shares[name].append(timing.cpu_share)
            threads.add(timing.threads)
    if len(threads) != 1:
        raise RuntimeError(f"the thread count changed between fits ({sorted(threads)}): the timings are not comparable")
    medians = {name: statistics.median(values) for name, values in rates.items()}
    return {
        "images_per_s": medians,
        "rounds": rates,
        "cpu_share": shares,
        "ratio_platform_over_plain": medians["platform"] / medians["plain"],
        "threads": threads.pop(),
    }


# ---- part 2: DDP subprocesses


def platform_threads(processes: int) -> int:
    """The threads tenfold gives each of `processes` local ranks when `threads=` is not set (tenfold/threads.py)."""
    return max(1, available_cores() // processes)


def train_py_rate(processes: int, threads: int, batch: int, warmup: int, steps: int) -> dict[str, Any]:
    """Global images/s of `train.py` with `processes` DDP ranks on CPU, from its own per-update lines."""
    env = {k: v for k, v in os.environ.items() if k != RUN_DIR_ENV}
    with tempfile.TemporaryDirectory(prefix="tenfold-bench-") as root:
        command = [
            sys.executable, str(REPO / "train.py"), "--config", str(CONFIG),
            "logger=none", f"run.root={root}", "run.name=bench", f"threads={threads}", "export.enabled=false",
            "run.test=false",
            "trainer.accelerator=cpu", "trainer.strategy=ddp", f"trainer.devices={processes}",
            f"trainer.max_steps={warmup + steps}", "trainer.limit_val_batches=0", "trainer.num_sanity_val_steps=0",
            "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
            "trainer.log_every_n_steps=1", "run.progress_every_s=0", f"data.batch_size_per_device={batch}",
        ]
        stamps: dict[int, float] = {}
        tail: deque[str] = deque(maxlen=30)
        with subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, bufsize=1) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                now = time.perf_counter()
                tail.append(line)
                match = STEP_LINE.search(line)
                if match:
                    stamps.setdefault(int(match.group(1)), now)
        if proc.returncode != 0 or warmup not in stamps or warmup + steps not in stamps:
            raise RuntimeError(
                f"train.py with {processes} process(es) exited {proc.returncode} or printed no line for update "
                f"{warmup} and {warmup + steps}; its last output:\n{''.join(tail)}"
            )
    seconds = stamps[warmup + steps] - stamps[warmup]
    return {
        "label": f"{processes} process{'es' if processes > 1 else ''} x {threads} thread{'s' if threads > 1 else ''}",
        "processes": processes,
        "threads_per_process": threads,
        "global_batch": batch * processes,
        "seconds": seconds,
        "images_per_s": batch * processes * steps / seconds,
    }


# ---- report


def print_table(args: argparse.Namespace, result: dict[str, Any]) -> None:
    local, ddp = result["in_process"], result["ddp"]
    print(f"tenfold platform overhead: RDNet demo ({result['config']}), batch {args.batch}/process, "
          f"torch {torch.__version__}, lightning {L.__version__}, {result['cpu_cores']} CPU cores")
    print(f"{args.steps} timed updates after {args.warmup} warm-up; load average {result['load_before']:.2f} "
          f"before, {result['load_after']:.2f} after")
    print()
    title = f"one process, {local['threads']} torch thread(s), median of {args.rounds}"
    print(f"{title:50s} {'images/s':>9s}  {'per round':{8 * args.rounds}s}  {'CPU share':>9s}  {'ratio':>6s}")
    plain = local["images_per_s"]["plain"]
    for name, label in (("plain", "plain PyTorch loop"), ("platform", "tenfold RDNetModule + Trainer.fit")):
        rate = local["images_per_s"][name]
        rounds = "".join(f"{v:8.1f}" for v in local["rounds"][name])
        share = min(local["cpu_share"][name])
        print(f"{label:50s} {rate:9.1f}  {rounds}  {share:9.2f}  {rate / plain:6.3f}")
    ratio = local["ratio_platform_over_plain"]
    print(f"platform / plain (medians) = {ratio:.3f}: {'meets' if ratio >= 0.95 else 'misses'} the >= 0.95 goal")
    if ddp is None:
        return
    print()
    print(f"{'train.py trainer.strategy=ddp, CPU (gloo)':50s} {'images/s':>9s}  {'threads/process':>15s}  "
          f"{'global batch':>12s}  {'ratio':>6s}")
    base = ddp[0]["images_per_s"]
    for row in ddp:
        print(f"{row['label']:50s} {row['images_per_s']:9.1f}  {row['threads_per_process']:15d}  "
              f"{row['global_batch']:12d}  {row['images_per_s'] / base:6.3f}")
    two = ddp[-1]
    for one in ddp[:-1]:
        print(f"2 / 1 processes = {two['images_per_s'] / one['images_per_s']:.3f} against {one['label']} "
              "(2.0 would be linear scaling)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed optimizer updates per fit (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed updates before timing (default 3)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating platform/plain rounds (default 3)")
    parser.add_argument("--batch", type=int, default=64, help="images per step and per process (default 64)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads in the one-process comparison (default 1; see the module docstring)")
    parser.add_argument("--skip-ddp", action="store_true", help="leave out the train.py DDP comparison")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the numbers to FILE")
    args = parser.parse_args(argv)
    if min(args.steps, args.warmup, args.rounds, args.batch, args.threads) < 1:
        parser.error("--steps, --warmup, --rounds, --batch and --threads must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Keep the table readable: Lightning's info lines and hints (both loops use the demo's 0 workers on
    # purpose) say nothing about the comparison.
    logging.getLogger("lightning").setLevel(logging.WARNING)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # Lightning's pytree use, deprecated in torch
    torch.set_num_threads(args.threads)

    load_before = os.getloadavg()[0]
    local = compare_in_process(args.batch, args.warmup, args.steps, args.rounds)
    ddp = None
    if not args.skip_ddp:
        # tenfold's thread counts (cores / local ranks) for 1 and 2 ranks, and 1 process x 1 thread between them:
        # on a few cores that separates the gain from fewer threads per process from the gain of a second rank.
        plan = dict.fromkeys([(1, platform_threads(1)), (1, 1), (2, platform_threads(2))])
        ddp = [train_py_rate(n, threads, args.batch, args.warmup, args.steps) for n, threads in plan]
    result = {
        "config": str(CONFIG.relative_to(REPO)), "batch": args.batch, "steps": args.steps, "warmup": args.warmup,
        "rounds": args.rounds, "cpu_cores": len(os.sched_getaffinity(0)), "load_before": load_before,
        "load_after": os.getloadavg()[0], "in_process": local, "ddp": ddp,
    }
    print_table(args, result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
