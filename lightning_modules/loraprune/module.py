"""LoRAPrune on a LLaMA-layout causal LM: LoRA fine-tuning while `LoRAPruneCallback` prunes heads and
FFN channels; the export is the LoRA-merged, physically sliced model (also saved with `save_pretrained`)."""

from __future__ import annotations

import copy

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy
from torchmetrics.text import Perplexity

from datamodules.causal_lm import CausalLMDataModule, load_tokenizer
from lightning_modules.lora_pruning.callbacks import LoRAPruneCallback
from lightning_modules.lora_pruning.groups import llama_blocks, protected_layers_for
from lightning_modules.lora_pruning.lora_layers import linear_parts, wrap_with_lora
from lightning_modules.lora_pruning.masks import at_final_sparsity, attach_masks
from lightning_modules.lora_pruning.scoring import Criterion
from lightning_modules.lora_pruning.slicing import block_keeps, merged_copy, slice_blocks
from lightning_modules.lora_pruning.warmup import dense_warmup
from lightning_modules.loraprune.config import LoRAPruneConfig
from lightning_modules.loraprune.lm import causal_lm_loss, load_or_build_llama
from lightning_modules.loraprune.pruned_llama import layer_shapes, pruned_llama_from_sliced, save_hf
from tenfold.errors import ExportError
from tenfold.method import ExportWriter, MethodModule
from tenfold.registry import register_method


def _callbacks(cfg: LoRAPruneConfig) -> list:
    return [LoRAPruneCallback(cfg.model.prune)]


@register_method(
    "loraprune",
    config=LoRAPruneConfig,
    datamodule=CausalLMDataModule,
    callbacks=_callbacks,
)
class LoRAPruneLM(MethodModule):
    monitors = ("val/loss", "val/ppl", "val/loss_at_target")
    config_class = LoRAPruneConfig
    curve_metric = "val/ppl"  # plotted against sparsity (lora_pruning/panels.py)

    def __init__(self, config: dict, vocabulary: str | None) -> None:
        super().__init__(config, vocabulary=vocabulary)
        m = self.cfg.model
        self.tokenizer = load_tokenizer(vocabulary)
        base = load_or_build_llama(m.base_path, m.build, self.tokenizer, m.dtype)
        self.model = wrap_with_lora(base, m.lora.targets, m.lora.rank, m.lora.alpha, m.lora.dropout, [])
        self.blocks = llama_blocks(base.config, protected_layers_for(m.prune, base.config.num_hidden_layers))
        attach_masks(base, self.blocks)
        if m.prune.criterion is Criterion.grad:
            # The comparison criterion: true dL/dW0 needs W0 gradients (not optimised: see configure_optimizers).
            for block in self.blocks:
                for member in block.members:
                    linear_parts(base.get_submodule(member.path)).weight.requires_grad_(True)
        vocab = base.config.vocab_size
        self.val_ppl, self.test_ppl = Perplexity(), Perplexity()
        self.test_top1 = MulticlassAccuracy(vocab, top_k=1, average="micro")

    def prunable_model(self) -> nn.Module:
        return self.model.get_base_model()

    # ---- steps

    def forward(self, input_ids: Tensor) -> Tensor:
        return self.model(input_ids=input_ids).logits

    def setup(self, stage: str) -> None:
        m = self.cfg.model
        trainer = self.trainer
        if stage == "fit" and m.dense_warmup_steps > 0 and not trainer.fast_dev_run and trainer.ckpt_path is None:
            losses = dense_warmup(self.model, trainer.datamodule.train_dataloader(), m.dense_warmup_steps,
                                  m.dense_warmup_lr, causal_lm_loss)
            rank_zero_info(f"dense warm-up: {len(losses)} steps, loss {losses[0]:.3f} -> {losses[-1]:.3f}")

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        input_ids, labels = batch
        loss = self.model(input_ids=input_ids, labels=labels).loss
        self.log_train_loss(loss, input_ids.shape[0])
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        logits, targets = self._shifted(batch)
        self.val_ppl.update(logits, targets)

    def on_validation_epoch_end(self) -> None:
        ppl = self.val_ppl.compute()  # synced over ranks: sums of NLL and token counts
        self.val_ppl.reset()
        loss = ppl.log()
        at_target = at_final_sparsity(self.prunable_model(), self.blocks, self.cfg.model.prune.final_sparsity)
        self.log_dict({"val/ppl": ppl, "val/loss": loss,
                       "val/loss_at_target": loss if at_target else torch.full_like(loss, float("inf"))},
                      prog_bar=True)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        logits, targets = self._shifted(batch)
        self.test_ppl.update(logits, targets)
        self.test_top1.update(logits.flatten(0, 1), targets.flatten())
        self.log("test/top1", self.test_top1, batch_size=targets.shape[0])

    def on_test_epoch_end(self) -> None:
        ppl = self.test_ppl.compute()
        self.test_ppl.reset()
        self.log_dict({"test/ppl": ppl, "test/loss": ppl.log()})

    def _shifted(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        input_ids, labels = batch
        logits = self(input_ids).float()
        return logits[:, :-1], labels[:, 1:]

    # ---- optimisation: LoRA factors only

    def optimizer_parameters(self) -> nn.Module:
        return nn.ParameterList([p for name, p in self.model.named_parameters() if "lora_" in name])

    # ---- export: the pruned dense model

    def sliced_model(self) -> nn.Module:
        """LoRA merged into W0 and the pruned heads/channels physically removed (float32, CPU, eval)."""
        masked = copy.deepcopy(self.model).float().cpu().eval()
        keeps = block_keeps(masked.get_base_model(), self.blocks)
        dense = merged_copy(masked)
        slice_blocks(dense, self.blocks, keeps)
        return pruned_llama_from_sliced(dense, layer_shapes(dense.config, self.blocks, keeps))

    @torch.no_grad()
    def export_model(self, atol: float = 1e-4) -> nn.Module:
        """The sliced model, checked to give the masked model's logits (float32) on a fixed batch."""
        dense = self.sliced_model()
        masked = copy.deepcopy(self.model).float().cpu().eval()
        tokens = torch.randint(0, dense.config.vocab_size, (2, 32), generator=torch.Generator().manual_seed(0))
        diff = (masked(input_ids=tokens).logits - dense(input_ids=tokens).logits).abs().max().item()
        if not diff <= atol:
            raise ExportError(f"the sliced model's logits differ from the masked model's by {diff:.3g} > {atol}")
        return dense

    def export_spec(self) -> dict:
        base = self.prunable_model()
        shapes = layer_shapes(base.config, self.blocks, block_keeps(base, self.blocks))
        return {"target": "lightning_modules.loraprune.pruned_llama:build_pruned_llama",
                "kwargs": {"config": {**base.config.to_dict(), "layer_shapes": shapes}}}

    def export_artifacts(self, model: nn.Module, writer: ExportWriter) -> None:
        """export/hf/: the sliced model and its tokenizer through `save_pretrained` (pruned_llama.py says which
        class: a stock LlamaForCausalLM when every layer has one shape, else the modeling file + auto_map)."""
        writer.directory("hf", lambda folder: save_hf(model, self.tokenizer, folder), what="transformers")
