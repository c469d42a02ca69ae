"""Saves and restores the Python, NumPy and torch RNG streams, so a resumed run draws the same
augmentations, Mixup coefficients and shuffles as the run it continues."""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch


class RNGStateCallback(L.Callback):
    """Restored with the checkpoint, before the first training iterator is created.

    Lightning runs the sanity check inside `isolate_rng`, so it does not disturb the restored
    streams; the first epoch after resume then draws its shuffle seed exactly as the original run.
    """

    def state_dict(self) -> dict[str, Any]:
        np_state = np.random.get_state()
        return {
            "python": list(random.getstate()[1]),
            "python_pos": random.getstate()[2],
            "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "numpy_pos": int(np_state[2]),
            "torch": torch.random.get_rng_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        random.setstate((3, tuple(state["python"]), state["python_pos"]))
        np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
        torch.random.set_rng_state(state["torch"])
