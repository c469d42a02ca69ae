"""CPU threads per process: the cores this process may use, shared by the processes on this machine.

Without this, every DDP rank on a CPU node starts one thread per core, so 2 ranks on 2 cores run 4
busy threads (oversubscription: each step waits on the other rank's threads). `threads=<n>` overrides.
"""

from __future__ import annotations

import os
from typing import Any

import torch


def local_process_count(trainer_cfg: Any | None) -> int:
    """How many processes of this job share this machine's cores."""
    for var in ("LOCAL_WORLD_SIZE", "SLURM_NTASKS_PER_NODE"):  # torchrun, SLURM
        value = os.environ.get(var, "").split("(")[0]
        if value.isdigit():
            return int(value)
    devices = getattr(trainer_cfg, "devices", 1)
    if isinstance(devices, int) and devices > 0:
        return devices
    if isinstance(devices, list):
        return max(1, len(devices))
    return 1


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def configure_threads(requested: int | None, trainer_cfg: Any | None) -> int:
    """Set torch's intra-op thread count; returns it."""
    threads = requested or max(1, available_cores() // local_process_count(trainer_cfg))
    torch.set_num_threads(threads)
    return threads
