"""`method: mpvr`: zero-shot CLIP classification with S-TEMP, DS-TEMP and MPVR prompt banks (test stage).

    python train.py --config configs/demo/mpvr.yaml        # CPU demo: tiny CLIP + loopback stub LLM
    python train.py --config configs/mpvr.yaml data.root=... model.pretrained=... generate.llm.base_url=...

MPVR trains nothing. The test stage is the method: every bank becomes a (C, D) classifier (ensemble.py)
and the test split is classified by each, giving test/<bank>/top1, top5, per-class accuracy and exact
correct/total counts (summed over DDP ranks, each sample counted once). The fit stage is contrastive
CLIP training on captioned pairs (open_clip's ClipLoss); only the demo uses it, to make its tiny CLIP
(the paper's pretrained CLIP skips it: 0 train batches). LLM calls happen in `prepare_data` (one
process); every process then reads the banks from the cache (cache_only), so none asks twice.
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path
from typing import Any

import open_clip
import torch
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_info
from torchmetrics import MetricCollection, SumMetric
from torchmetrics.classification import MulticlassAccuracy

from datamodules.mpvr import MPVRDataModule
from lightning_modules.mpvr import banks as bank_io
from lightning_modules.mpvr.clip import build_clip, resolve_arch, tokenizer_for
from lightning_modules.mpvr.config import BankKind, MPVRConfig
from lightning_modules.mpvr.ensemble import class_weights, ensemble_weights, zero_shot_logits
from lightning_modules.mpvr.net import ZeroShotClassifier
from lightning_modules.mpvr.sources import check_bank_configs, resolve_bank
from tenfold.method import MethodModule
from tenfold.registry import register_method


@register_method("mpvr", config=MPVRConfig, datamodule=MPVRDataModule)
class MPVRModule(MethodModule):
    monitors = ("val/loss",)
    config_class = MPVRConfig

    def __init__(self, config: dict, class_names: list[str]) -> None:
        super().__init__(config, class_names=class_names)
        cfg = self.cfg
        self.ensembles = {e.name: list(e.members) for e in cfg.ensembles}
        check_bank_configs(cfg.banks, self.ensembles, cfg.primary, cfg.generate)
        self.class_names = list(class_names)
        self.clip = build_clip(cfg.model)
        self.tokenizer = tokenizer_for(cfg.model)
        self.contrastive = open_clip.ClipLoss()
        embed_dim = int(self.clip.visual.output_dim)
        # The primary bank's classifier: what forward(), best.ckpt and the export hold. It is rebuilt from
        # the current text tower after each validation and at test start, so a checkpoint's copy matches it.
        self.register_buffer("class_weights", torch.zeros(len(self.class_names), embed_dim))
        self.evaluated = [b.name for b in cfg.banks] + list(self.ensembles)
        c = len(self.class_names)
        self.test_metrics = torch.nn.ModuleDict({
            name: MetricCollection({
                "top1": MulticlassAccuracy(c, top_k=1, average="micro"),
                "top5": MulticlassAccuracy(c, top_k=min(5, c), average="micro"),
                "per_class": MulticlassAccuracy(c, top_k=1, average="none"),
                "correct": SumMetric(), "total": SumMetric(),
            }, compute_groups=False) for name in self.evaluated
        })
        self.banks: dict[str, dict[str, list[str]]] = {}
        self.llm_counts: dict[str, float] = {}
        self.test_weights: dict[str, torch.Tensor] = {}

    # ---- the classifier

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return zero_shot_logits(self.clip.encode_image(images), self.class_weights, self.cfg.model.logit_scale)

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """open_clip's BPE, truncated at the text tower's context length (77 for CLIP)."""
        return self.tokenizer(list(texts), context_length=self.clip.context_length).to(self.device)

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        return self.clip.encode_text(self.tokenize(texts))

    @torch.no_grad()
    def build_weights(self, names: list[str]) -> dict[str, torch.Tensor]:
        """(C, D) weights of each named bank or ensemble, from the current text tower (eval mode)."""
        was_training = self.clip.training
        self.clip.eval()
        out: dict[str, torch.Tensor] = {}
        for bank in self.cfg.banks:
            if bank.name in names or any(bank.name in self.ensembles.get(n, []) for n in names):
                out[bank.name] = class_weights(self.encode_texts, self.banks[bank.name], self.class_names,
                                               self.cfg.model.text_chunk)
        for name in names:
            if name in self.ensembles:
                out[name] = ensemble_weights([out[m] for m in self.ensembles[name]])
        self.clip.train(was_training)
        return {n: out[n] for n in names}

    # ---- banks: LLM calls once (prepare_data runs in one process per node), then from the cache everywhere

    def prepare_data(self) -> None:
        for i, bank in enumerate(self.cfg.banks):
            if bank.kind is BankKind.generate:
                resolve_bank(i, bank, self.class_names, self.cfg.generate, counts=self.llm_counts)
        if self.llm_counts:
            rank_zero_info("MPVR LLM stages: " + ", ".join(f"{k}={v}" for k, v in self.llm_counts.items()))
            self.log_run_numbers({f"llm/{k}": v for k, v in self.llm_counts.items()})

    def setup(self, stage: str) -> None:
        if not self.banks:
            self.banks = {b.name: resolve_bank(i, b, self.class_names, self.cfg.generate, cache_only=True)
                          for i, b in enumerate(self.cfg.banks)}

    # ---- fit: contrastive CLIP training (the demo's tiny CLIP only)

    def _contrastive_loss(self, batch: tuple[torch.Tensor, list[str]]) -> torch.Tensor:
        images, captions = batch
        f = self.clip.encode_image(images, normalize=True)
        g = self.clip.encode_text(self.tokenize(captions), normalize=True)
        return self.contrastive(f, g, self.clip.logit_scale.exp())

    def configure_optimizers(self) -> Any:
        # Zero-shot evaluation of pretrained weights (0 epochs or 0 train batches) optimises nothing.
        if self.trainer.max_epochs == 0 or self.trainer.limit_train_batches == 0:
            return None
        return super().configure_optimizers()

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = self._contrastive_loss(batch)
        self.log_train_loss(loss, batch_size=len(batch[0]))
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val/loss", self._contrastive_loss(batch), on_epoch=True, sync_dist=True, batch_size=len(batch[0]))

    def on_validation_epoch_end(self) -> None:
        self.class_weights.copy_(self.build_weights([self.cfg.primary])[self.cfg.primary])

    # ---- test: the method

    def on_test_epoch_start(self) -> None:
        self.test_weights = self.build_weights(self.evaluated)
        self.class_weights.copy_(self.test_weights[self.cfg.primary])
        if self.trainer.is_global_zero:
            digest = hashlib.sha256(self.class_weights.cpu().numpy().tobytes()).hexdigest()[:12]
            rank_zero_info(f"MPVR classifiers built for {len(self.class_names)} classes: "
                           f"{', '.join(self.evaluated)} (primary {self.cfg.primary}, W sha256 {digest})")
            self._report_banks()

    def test_step(self, batch: Any, batch_idx: int) -> None:
        images, targets = batch
        features = self.clip.encode_image(images)
        for name, weights in self.test_weights.items():
            logits = zero_shot_logits(features, weights, self.cfg.model.logit_scale)
            metrics = self.test_metrics[name]
            for key in ("top1", "top5", "per_class"):
                metrics[key].update(logits, targets)
            metrics["correct"].update((logits.argmax(-1) == targets).sum().float())
            metrics["total"].update(torch.tensor(float(len(targets)), device=self.device))

    def on_test_epoch_end(self) -> None:
        rows = []
        for name in self.evaluated:
            values = self.test_metrics[name].compute()  # synced over ranks
            for key in ("top1", "top5", "correct", "total"):
                self.log(f"test/{name}/{key}", values[key], sync_dist=False)
            rows.append((name, values))
            self.test_metrics[name].reset()
        primary = dict(rows)[self.cfg.primary]
        self.log("test/top1", primary["top1"])
        if self.trainer.is_global_zero:
            self._write_results(rows)

    # ---- reports (rank 0): bank statistics and per-class accuracy, as files and W&B tables

    def _report_dir(self) -> Path:
        return self.run_dir / "mpvr"

    def _report_banks(self) -> None:
        count = bank_io.open_clip_token_count()
        table = []
        for name, bank in self.banks.items():
            for row in bank_io.bank_statistics(bank, count, self.clip.context_length):
                table.append({"bank": name, **row})
        _write_csv(self._report_dir() / "bank_statistics.csv", table)
        for name in self.banks:
            mine = [r for r in table if r["bank"] == name]
            self.log_run_numbers({f"banks/{name}/prompts": sum(r["prompts"] for r in mine),
                                  f"banks/{name}/unique": sum(r["unique"] for r in mine),
                                  f"banks/{name}/truncated": sum(r["truncated"] for r in mine)})
        self._wandb_table("banks/statistics", table)

    def _write_results(self, rows: list) -> None:
        table = [{"bank": name, "class": cls, "accuracy": float(acc)}
                 for name, values in rows for cls, acc in zip(self.class_names, values["per_class"].tolist())]
        _write_csv(self._report_dir() / "per_class_accuracy.csv", table)
        self._wandb_table("test/per_class_accuracy", table)
        summary = [{"bank": name, "top1": float(v["top1"]), "top5": float(v["top5"]),
                    "correct": int(v["correct"]), "total": int(v["total"])} for name, v in rows]
        _write_csv(self._report_dir() / "results.csv", summary)

    def _wandb_table(self, key: str, table: list[dict]) -> None:
        for logger in self.loggers:
            if isinstance(logger, WandbLogger) and table:
                logger.log_table(key=key, columns=list(table[0]), data=[list(r.values()) for r in table])

    # ---- export: the primary classifier as one network

    def export_model(self) -> ZeroShotClassifier:
        import copy

        model = ZeroShotClassifier(copy.deepcopy(self.clip.visual), len(self.class_names),
                                   self.class_weights.shape[1], self.cfg.model.logit_scale)
        model.class_weights.copy_(self.class_weights)
        return model.float().cpu().eval()

    def export_spec(self) -> dict:
        m = self.cfg.model
        return {"target": "lightning_modules.mpvr.net:build",
                "kwargs": {"arch": resolve_arch(m), "num_classes": len(self.class_names),
                           "embed_dim": int(self.class_weights.shape[1]), "logit_scale": m.logit_scale,
                           "custom": dict(m.custom) if m.arch == "custom" else None}}


def _write_csv(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
