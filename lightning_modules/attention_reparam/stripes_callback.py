"""Log the Stripe Observation during validation: how input-independent channel attention has become.

The premise of ASR (§2.2) is that, as training proceeds, the attention vectors of different inputs
approach one constant vector per layer. This callback records the vectors of every input-dependent
attention module on the first `max_samples` validation inputs and logs the stripe ratio per layer
(low = stripes) and a heat map (inputs x channels) of one layer.
"""

from functools import partial

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from lightning_modules.attention_reparam.stripes import input_dependent_attentions, stripe_statistic
from tenfold.errors import ConfigError
from tenfold.media import log_image


class AttentionStripes(pl.Callback):
    """Stripe ratio `attn/stripe_ratio/<layer>` and its mean `attn/stripe_ratio` per val epoch.

    `image_layer` names the layer drawn as a heat map (default: the deepest one), logged through the
    platform's image helper (W&B / TensorBoard); other loggers get metrics only.
    """

    def __init__(self, max_samples: int = 512, image_layer: str | None = None) -> None:
        self.max_samples = max_samples
        self.image_layer = image_layer
        self._rows: dict[str, list[torch.Tensor]] = {}
        self._handles: list[RemovableHandle] = []

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        modules = input_dependent_attentions(pl_module)
        if self.image_layer is not None and self.image_layer not in modules:
            raise ConfigError(
                f"AttentionStripes image_layer {self.image_layer!r} is not an input-dependent "
                f"attention module; valid: {sorted(modules)}"
            )

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._rows = {}
        for name, module in input_dependent_attentions(pl_module).items():
            self._handles.append(module.register_forward_hook(partial(self._record, name)))

    def _record(
        self, name: str, module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor
    ) -> None:
        rows = self._rows.setdefault(name, [])
        missing = self.max_samples - sum(len(r) for r in rows)
        if missing > 0:
            rows.append(output.detach().flatten(1)[:missing].float().cpu())  # (B, C)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._remove_hooks()
        if not self._rows:
            return
        ratios = []
        for name, rows in self._rows.items():
            ratio = stripe_statistic(torch.cat(rows))["ratio"]
            pl_module.log(f"attn/stripe_ratio/{name}", ratio, sync_dist=True)
            ratios.append(ratio)
        pl_module.log("attn/stripe_ratio", sum(ratios) / len(ratios), sync_dist=True)
        if trainer.is_global_zero:
            layer = self.image_layer or list(self._rows)[-1]
            self._log_heat_map(trainer, layer, torch.cat(self._rows[layer]))
        self._rows = {}

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._remove_hooks()

    def _remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _log_heat_map(self, trainer: pl.Trainer, layer: str, attn: torch.Tensor) -> None:
        # Attention values lie in [0, 1]: one grey level per value, rows = inputs, cols = channels.
        log_image(trainer.loggers, f"attn/stripes/{layer}", attn.clamp(0, 1), trainer.global_step)
