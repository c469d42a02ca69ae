"""The two Lightning modules: `gan_fingerprint_gan` (train a DCGAN) and `gan_fingerprint` (fingerprint
the composite F = C o G, embed into C, register, verify a suspect population, attack).

`gan_fingerprint` runs the whole protocol in the platform's fixed sequence: `fit` is the embedding
(C0 -> C*, G frozen and hash-checked), `test` is verification over suspects sharded by rank, `export`
writes C*, the fingerprint set and the commitment. The maths lives in the pure-torch files beside this one.
"""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy
from torchmetrics.image.fid import FrechetInceptionDistance

from datamodules.gan_fingerprint import FingerprintDataModule, GanDataModule
from lightning_modules.gan_fingerprint import attacks, commitment, fingerprints, verification
from lightning_modules.gan_fingerprint.classifier import accuracy, build_classifier, random_shift
from lightning_modules.gan_fingerprint.config import Design, FingerprintConfig, GanConfig
from lightning_modules.gan_fingerprint.gan import Discriminator, Generator, discriminator_loss, generator_loss
from lightning_modules.gan_fingerprint.hook import GeneratorHook, InputKind
from lightning_modules.gan_fingerprint.plots import attack_curves_figure
from lightning_modules.gan_fingerprint.suspects import DERIVED, INNOCENT, build_suspect, suspect_list
from tenfold.errors import ConfigError
from tenfold.media import has_media_logger, image_grid, log_image, log_image_grid
from tenfold.method import ExportWriter, MethodModule
from tenfold.optim import build_optimizer, scaled_lr
from tenfold.registry import register_method

DIGIT_SHAPE = (1, 8, 8)  # what the DCGAN generates


def _to_unit(images: Tensor) -> Tensor:
    return (images.detach().cpu() + 1) / 2


# --------------------------------------------------------------------------------------------------
# gan_fingerprint_gan: the DCGAN


class PixelFeatures(nn.Module):
    """Raw pixels as torchmetrics' FID feature network: a quality monitor needing no trained network [R]."""

    num_features = math.prod(DIGIT_SHAPE)

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(1).double()


def _pixel_fid() -> FrechetInceptionDistance:
    return FrechetInceptionDistance(feature=PixelFeatures(), normalize=True, input_img_size=DIGIT_SHAPE)


@register_method("gan_fingerprint_gan", config=GanConfig, datamodule=GanDataModule)
class GanModule(MethodModule):
    """DCGAN with manual optimisation and two optimisers (D, then G, each batch).

    Under DDP (find_unused_parameters=False, the platform default) every backward must reach every
    parameter: the D loss is taken on an un-detached G(z), and G's gradients from it are cleared before
    G's own step. The D optimizer is stepped through its wrapped torch optimizer so that
    `trainer.global_step` counts DCGAN iterations (one per batch), not optimizer calls.
    """
    monitors = ("val/pixel_fid",)

    config_class = GanConfig

    def __init__(self, config: dict, **data_kwargs: Any) -> None:
        super().__init__(config, **data_kwargs)
        if self.cfg.trainer.precision not in ("32-true", "32", "bf16-mixed", "bf16-true"):
            raise ConfigError(
                f"gan_fingerprint_gan: trainer.precision={self.cfg.trainer.precision} is not supported "
                "(the raw D step would bypass a gradient scaler); use 32-true or bf16-mixed"
            )
        self.automatic_optimization = False
        m = self.cfg.model
        self.net = Generator(m.z_dim, m.width)
        self.discriminator = Discriminator(m.width)
        self.val_fid, self.test_fid = _pixel_fid(), _pixel_fid()

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)

    def configure_optimizers(self) -> list:
        cfg = self.cfg
        lr = scaled_lr(cfg.optim, cfg.data.batch_size_per_device * self.trainer.world_size)
        return [build_optimizer(self.net, cfg.optim, lr), build_optimizer(self.discriminator, cfg.optim, lr)]

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        real, _ = batch
        opt_g, opt_d = self.optimizers()
        z = torch.randn(len(real), self.cfg.model.z_dim, device=self.device)
        opt_d.zero_grad()
        loss_d = discriminator_loss(self.discriminator, real, self.net(z))
        self.manual_backward(loss_d)
        opt_d.optimizer.step()
        opt_g.zero_grad()
        loss_g = generator_loss(self.discriminator, self.net(z))
        self.manual_backward(loss_g)
        opt_g.step()
        self.log_train_loss(loss_g, len(real), "train/loss_g")
        self.log_train_loss(loss_d, len(real), "train/loss_d")

    def _fid_step(self, fid: FrechetInceptionDistance, real: Tensor, batch_idx: int) -> Tensor:
        rng = torch.Generator().manual_seed(batch_idx * 1000 + self.global_rank)
        fake = self.net(torch.randn(len(real), self.cfg.model.z_dim, generator=rng).to(self.device))
        fid.update(real, real=True)
        fid.update(fake, real=False)
        return fake

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        fake = self._fid_step(self.val_fid, batch[0], batch_idx)
        self.log("val/pixel_fid", self.val_fid, on_epoch=True)
        if batch_idx == 0 and self.global_rank == 0 and has_media_logger(self.loggers):
            log_image_grid(self.loggers, "val/samples", list(_to_unit(fake[:32])), self.global_step)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._fid_step(self.test_fid, batch[0], batch_idx)
        self.log("test/pixel_fid", self.test_fid, on_epoch=True)

    def export_spec(self) -> dict:
        m = self.cfg.model
        return {
            "target": "lightning_modules.gan_fingerprint.gan:build_generator",
            "kwargs": {"z_dim": m.z_dim, "width": m.width},
        }


# --------------------------------------------------------------------------------------------------
# gan_fingerprint: fingerprint, embed, register, verify, attack


@register_method("gan_fingerprint", config=FingerprintConfig, datamodule=FingerprintDataModule)
class FingerprintModule(MethodModule):
    monitors = ("val/loss", "val/acc", "val/r_protected", "val/select")
    config_class = FingerprintConfig

    def __init__(self, config: dict, **data_kwargs: Any) -> None:
        super().__init__(config, **data_kwargs)
        m = self.cfg.model
        # The task's shape (FingerprintDataModule.module_kwargs); the defaults are the digits demo's.
        self.class_names = list(data_kwargs.get("class_names") or [str(d) for d in range(10)])
        self.num_classes = len(self.class_names)
        self.image_shape = tuple(data_kwargs.get("image_shape", DIGIT_SHAPE))
        self.input_kind = InputKind(data_kwargs.get("input_kind", InputKind.latent.value))
        self.query_shape = tuple(data_kwargs.get("query_shape") or (self.cfg.data.population.z_dim,))
        if m.design is Design.ae and self.input_kind is InputKind.image:
            raise ConfigError(
                "model.design=ae searches adversarial latent codes and is built for latent generators only; "
                "use model.design=ibd_v1 or ibd_v2 with an image-to-image task (data.source=i2i)"
            )
        if m.verify.p0 is not None:
            verification.binomial_threshold(m.num_fingerprints, m.verify.p0, m.verify.alpha)
        else:  # fail now if N cannot reach alpha even at the chance rate 1/K
            verification.binomial_threshold(m.num_fingerprints, 1 / self.num_classes, m.verify.alpha)
        self.v2 = m.design is Design.ibd_v2
        self.net = build_classifier(**self._classifier_kwargs())
        # The fingerprint set travels in the checkpoint (the key itself is redacted there).
        self.register_buffer("fp_x", torch.zeros(m.num_fingerprints, *self.query_shape))
        self.register_buffer("fp_y", torch.zeros(m.num_fingerprints, dtype=torch.long))
        self.val_acc = MulticlassAccuracy(self.num_classes, average="micro")
        self._population = None
        self._summary: dict | None = None
        self._results: dict[int, tuple[float, float]] = {}

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images)

    # ---- setup: population, fingerprints, the fixed embedding tensors

    def setup(self, stage: str) -> None:
        dm = self.trainer.datamodule
        pop = self._population = dm.population
        self._task = dm.task
        if stage == "fit":
            missing, _ = self.net.load_state_dict(pop.classifier.state_dict(), strict=False)  # C* starts as C0
            assert all(k.startswith("fine_head") for k in missing), missing
        x, y = self._derive_fingerprints()
        self.fp_x.copy_(x)
        self.fp_y.copy_(y)
        digest = fingerprints.fingerprint_set_hash(x, y)
        # Every rank derived the set from the key with a local generator: it must be the same set everywhere.
        if self.trainer.strategy.broadcast(digest, src=0) != digest:
            raise RuntimeError(f"rank {self.global_rank} derived another fingerprint set ({digest[:12]})")
        self._g_hash = commitment.weights_hash(pop.protected)
        dm.suspects = self._suspects = suspect_list(self.cfg.model.attack, pop)
        if stage == "fit":
            self._fixed = self._embedding_tensors(x, y)

    def _derive_fingerprints(self) -> tuple[Tensor, Tensor]:
        m, pop = self.cfg.model, self._population
        g, c0, z_dim, k = pop.protected.cpu(), pop.classifier.cpu(), self.cfg.data.population.z_dim, self.num_classes
        if self.input_kind is InputKind.image:
            inputs = self._task.inputs["train"]
            return fingerprints.i2i_fingerprints(g, c0, m.secret_key, inputs, m.num_fingerprints, k, m.trigger_eps)
        if m.design is Design.ae:
            a = m.ae
            s = fingerprints.PGDSettings(
                a.eps, a.steps, a.step_size, a.l2_weight, a.confidence, a.candidates_per_fingerprint
            )
            return fingerprints.cfp_ae(g, c0, m.secret_key, m.num_fingerprints, z_dim, k, s)
        return fingerprints.ibd_fingerprints(g, c0, m.secret_key, m.num_fingerprints, z_dim, k)

    @torch.no_grad()
    def _embedding_tensors(self, x: Tensor, y: Tensor) -> fingerprints.EmbeddingBatch:
        pop, e = self._population, self.cfg.model.embed
        fp_images = pop.protected(x)
        natural, _ = fingerprints.natural_labels(pop.classifier, fp_images)
        refs = torch.cat([g(x) for g in pop.references.values()])
        ref_labels, _ = fingerprints.natural_labels(pop.classifier, refs)
        sur = None
        if self.v2:
            copies = [attacks.magnitude_pruned(pop.protected, a) for a in e.surrogate_prune]
            copies += [attacks.weight_noise(pop.protected, s, seed=i) for i, s in enumerate(e.surrogate_weight_noise)]
            copies += [
                self._task.fine_tune(pop.protected, seed, e.surrogate_finetune_iterations, 1e-4)
                for seed in e.surrogate_finetune_seeds
            ]
            sur = torch.cat([c(x) for c in copies])
        return fingerprints.EmbeddingBatch(fp_images, y, natural, refs, ref_labels, sur)

    # ---- fit = embedding

    def on_fit_start(self) -> None:
        self._population.to(self.device)
        f = self._fixed
        for name in ("fp_images", "fp_labels", "fp_natural", "ref_images", "ref_labels", "sur_images"):
            if getattr(f, name) is not None:
                setattr(f, name, getattr(f, name).to(self.device))
        self._rng = torch.Generator().manual_seed(self.cfg.seed * 1000 + self.global_rank)
        if self.global_rank == 0 and has_media_logger(self.loggers):
            captions = [f"y={self.class_names[int(v)]}" for v in f.fp_labels[:32]]
            log_image_grid(self.loggers, "fingerprints/G(x_i)", list(_to_unit(f.fp_images[:32])), 0, captions)

    def optimizer_parameters(self) -> nn.Module:
        return self.net

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        real, labels = batch
        m = self.cfg.model
        if m.design is Design.ae:
            # CFP-AE fine-tunes nothing (C* = C0): a zero loss keeps the loop, checkpoints and DDP uniform,
            # and Adam moves no weight on an all-zero gradient (C* stays bit-identical, tested).
            loss = 0.0 * F.cross_entropy(self.net(real), labels)
            self.log_train_loss(loss, len(real))
            return loss
        e = m.embed
        weights = fingerprints.LossWeights(
            e.lambda_fp, e.lambda_neg, e.lambda_sur, e.lambda_tri, e.lambda_fine, e.margin, e.lambda_distill
        )
        augment = fingerprints.AugmentSettings(
            e.augment_noise, e.augment_blur_prob, e.augment_quant_prob, e.augment_quant_levels
        )
        terms = fingerprints.embedding_loss(
            self.net, random_shift(real, self._rng), labels, self._fixed, weights, augment, self._rng, self.v2,
            teacher=self._population.classifier,
        )
        loss = sum(terms.values())
        for name, value in terms.items():
            self.log(f"train/{name}", value, on_step=False, on_epoch=True, sync_dist=True, batch_size=len(real))
        self.log_train_loss(loss, len(real))
        return loss

    def on_fit_end(self) -> None:
        after = commitment.weights_hash(self._population.protected)
        if after != self._g_hash:
            raise RuntimeError("the protected generator's weights changed during embedding")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        images, labels = batch
        logits = self.net(images)
        self.val_acc.update(logits, labels)
        self.log("val/loss", F.cross_entropy(logits, labels), on_epoch=True, sync_dist=True, batch_size=len(images))
        self.log("val/acc", self.val_acc, on_epoch=True)

    def on_validation_epoch_end(self) -> None:
        # Every rank holds G, X and Y: the same number everywhere, no collective needed.
        r = self._match_rate(self._population.protected.to(self.device))
        self.log("val/r_protected", r, sync_dist=True)
        # Early stopping on clean accuracy [R]: the checkpoint kept (and tested, exported) is the one of best
        # validation accuracy among those whose fingerprint is in (r >= model.embed.select_min_r); ties go to
        # the later epoch, whose fingerprint has been reinforced longer.
        acc = float(self.val_acc.compute())  # synced over ranks; Lightning logs the same value
        select = acc + 1e-4 * self.current_epoch - (0.0 if r >= self.cfg.model.embed.select_min_r else 1.0)
        self.log("val/select", select, sync_dist=True)

    # ---- test = verification over the suspect population

    @torch.no_grad()
    def _match_rate(self, generator: nn.Module, name: str = "protected") -> float:
        hook = GeneratorHook(generator, self.image_shape, self.input_kind, name)
        return verification.match_count(self.net, hook(self.fp_x), self.fp_y) / len(self.fp_y)

    def on_test_start(self) -> None:
        self._population.to(self.device)
        self._results = {}
        self._fid_real = self._task.clean["test"][0].to(self.device)

    def test_step(self, batch: Tensor, batch_idx: int) -> None:
        index = int(batch[0])
        s = self._suspects[index]
        with torch.inference_mode(False), torch.enable_grad():
            suspect = build_suspect(s, self._population, self.cfg.model.attack, self._task)
        suspect.to(self.device).eval()
        r = self._match_rate(suspect, s.name)
        fid = float("nan")
        if s.group in ("protected", "prune", "finetune"):
            queries = self._task.fid_queries(self.cfg.model.attack.fid_samples).to(self.device)
            with torch.no_grad():
                fid = attacks.digits_fid(self._population.classifier, self._fid_real, suspect(queries))
        self._results[index] = (r, fid)

    def on_test_epoch_end(self) -> None:
        table = torch.full((len(self._suspects), 2), float("nan"), device=self.device, dtype=torch.float64)
        for index, (r, fid) in self._results.items():
            table[index] = torch.tensor([r, fid], dtype=torch.float64)
        gathered = self.all_gather(table)
        if gathered.dim() == 3:  # (world, S, 2): each suspect was verified on one rank (padding may repeat one)
            gathered = torch.stack([_first_finite(gathered[:, i]) for i in range(gathered.shape[1])])
        summary = self._summarise(gathered.cpu())
        for key, value in summary["metrics"].items():
            self.log(f"test/{key}", float(value), sync_dist=True)  # the same value on every rank
        if self.global_rank == 0:
            self._write_report(summary)

    def _summarise(self, table: Tensor) -> dict:
        m, n = self.cfg.model, len(self.fp_y)
        rows = [
            {"name": s.name, "group": s.group, "param": s.param, "r": float(table[i, 0]), "fid": float(table[i, 1])}
            for i, s in enumerate(self._suspects)
        ]
        # Suspects not run (fast_dev_run, limit_test_batches) have r = NaN and are left out.
        ran = [row for row in rows if not math.isnan(row["r"])]
        innocent = [row for row in ran if row["group"] in INNOCENT]
        derived = [row["r"] for row in ran if row["group"] in DERIVED]
        if innocent:
            matches = round(sum(row["r"] * n for row in innocent))
            p0 = verification.estimate_p0(matches, n * len(innocent), m.verify.ci_level)
        else:
            p0 = verification.P0Estimate(math.nan, math.nan, 1 / self.num_classes, m.verify.ci_level)
        p0_used = m.verify.p0 if m.verify.p0 is not None else p0.high
        tau = verification.threshold_rate(n, p0_used, m.verify.alpha)
        for row in rows:
            row["verified"] = bool(row["r"] >= tau)
        auc = verification.roc_auc(derived, [row["r"] for row in innocent]) if derived and innocent else math.nan
        test_x, test_y = self._task.clean["test"]
        net_cpu, c0 = copy.deepcopy(self.net).cpu().eval(), copy.deepcopy(self._population.classifier).cpu().eval()
        with torch.no_grad():
            c0_r = float(
                (c0(self._population.protected.cpu()(self.fp_x.cpu())).argmax(1) == self.fp_y.cpu()).float().mean()
            )
        self._population.to(self.device)
        metrics = {
            "tau": tau,
            "p0": p0.value,
            "p0_low": p0.low,
            "p0_high": p0.high,
            "p0_used": p0_used,
            "auc": auc,
            "false_positives": sum(row["verified"] for row in innocent),
            "max_r_independent": max((row["r"] for row in innocent), default=math.nan),
            "acc_clean": accuracy(net_cpu, test_x, test_y),
            "acc_clean_c0": accuracy(c0, test_x, test_y),
            "r_c0_on_fingerprints": c0_r,
            "g_hash_unchanged": float(commitment.weights_hash(self._population.protected) == self._g_hash),
        }
        metrics["acc_drop"] = metrics["acc_clean_c0"] - metrics["acc_clean"]
        for row in ran:
            metrics[f"r/{row['name']}"] = row["r"]
            if not math.isnan(row["fid"]):
                metrics[f"fid/{row['name']}"] = row["fid"]
        return {"metrics": metrics, "rows": rows, "alpha": m.verify.alpha, "n": n, "design": m.design.value}

    def _write_report(self, summary: dict) -> None:
        self._summary = summary  # the export records the p0 it measured in the registration
        path = self.run_dir / "verification.json"
        path.write_text(json.dumps(summary, indent=1, default=float))
        rank_zero_info(
            "gan_fingerprint verification: "
            + ", ".join(f"{row['name']} r={row['r']:.2f}{'*' if row['verified'] else ''}" for row in summary["rows"])
            + f" (tau={summary['metrics']['tau']:.2f}; * = verified)"
        )
        step = self.global_step
        if has_media_logger(self.loggers):
            log_image(self.loggers, "test/attack_curves", attack_curves_figure(summary), step)
        for logger in self.loggers:
            if hasattr(logger, "log_table"):  # W&B: one row per suspect, its r next to the threshold
                columns = ["name", "group", "param", "r", "tau", "verified", "fid"]
                data = [
                    [
                        row["name"],
                        row["group"],
                        row["param"],
                        row["r"],
                        summary["metrics"]["tau"],
                        row["verified"],
                        row["fid"],
                    ]
                    for row in summary["rows"]
                ]
                logger.log_table("test/suspects", columns=columns, data=data, step=step)

    # ---- export: C*, the fingerprint set, the registration

    def _classifier_kwargs(self) -> dict:
        width = self.cfg.data.population.classifier_width
        return {
            "num_classes": self.num_classes,
            "width": width,
            "embed_dim": 4 * width,
            "fine_classes": 2 * self.num_classes if self.v2 else 0,
            "in_channels": self.image_shape[0],
        }

    def export_spec(self) -> dict:
        return {"target": "lightning_modules.gan_fingerprint.classifier:build_classifier",
                "kwargs": self._classifier_kwargs()}

    def export_artifacts(self, model: nn.Module, writer: ExportWriter) -> None:
        x, y = self.fp_x.detach().cpu().clone(), self.fp_y.detach().cpu().clone()
        generator = self._population.protected.cpu()
        c = commitment.commit(x, y, model, generator, nonce=self.cfg.model.nonce)
        writer.file("fingerprints.pt", lambda tmp: torch.save({"x": x, "y": y}, tmp), what="fingerprints")
        p0 = None
        if self._summary is not None:  # the test stage ran: the owner's p0 from its held-out independents
            m = self._summary["metrics"]
            p0 = {"value": m["p0"], "low": m["p0_low"], "high": m["p0_high"], "used": m["p0_used"]}
        registration = commitment.registration_record(
            c, x, y, self.num_classes, self.image_shape, self.input_kind.value, self.cfg.model.design.value, p0
        )
        writer.text("registration.json", json.dumps(registration, indent=1), what="registration")
        with torch.no_grad():
            samples = generator(x[:32])
        writer.image(
            "fingerprint_samples.png",
            image_grid(list(_to_unit(samples)), [f"y={self.class_names[int(v)]}" for v in y[:32]]),
            what="fingerprint_samples",
        )
        self.log_run_numbers({"registration/commitment": c.digest, "registration/generator_hash": c.generator_hash})


def _first_finite(rows: Tensor) -> Tensor:
    """The first rank's row that holds a result (others are NaN)."""
    finite = ~torch.isnan(rows[:, 0])
    return rows[finite.nonzero()[0, 0]] if finite.any() else rows[0]
