"""`method: critical_distill`: dataset distillation (DM, DC, DSA or MTT) from the critically selected real subset.

    python train.py --config configs/demo/critical_distill.yaml [data.selection.criterion=LossInit_large ...]

The synthetic images are the module's parameters (`self.net`, a SyntheticSet); the DataModule has already
applied the selection, so the algorithms are unchanged (the paper's point). One training step is one image
update. The test stage is the official evaluation: `model.eval_networks` fresh ConvNets trained on the
synthetic set only, their test accuracies as mean +- std.

Processes: DM and DC/DSA objectives are sums of per-class terms; process r computes the classes
c = r, r + W, ... with the same per-step network seed and real/augmentation streams as one process would, and
DDP's gradient average (times W) is exactly the one-process gradient of the whole sum. MTT's experts are split
between processes (expert e by process e mod W) and gathered; its matching step is not split: every process
computes the same step (their gradients are identical, so the average changes nothing). Evaluation networks
are split between processes and gathered before testing.
"""

from __future__ import annotations

import json
import math
import time

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from torch.nn.utils import parameters_to_vector, vector_to_parameters
from torchmetrics.classification import MulticlassAccuracy

from datamodules.critical_distill import CriticalDistillDataModule
from lightning_modules.critical_distill import matching, mtt
from lightning_modules.critical_distill.augment import parse_strategy
from lightning_modules.critical_distill.config import Algorithm, CriticalDistillConfig, InitMode
from lightning_modules.critical_distill.evaluate import train_classifier, train_on_synthetic
from lightning_modules.critical_distill.matching import generator, stream_seed
from lightning_modules.critical_distill.net import ConvNet, SyntheticSet, seeded_convnet
from tenfold.errors import ConfigError, DataError
from tenfold.media import has_media_logger, image_grid, log_image, log_image_grid
from tenfold.method import ExportWriter, MethodModule
from tenfold.registry import register_method

# Stream tags: every random draw is generator(seed, TAG, ...), independent of process and call order.
INIT, NET, REAL, INNER, MTT_STEP, VAL, EVAL, EXPERT = range(8)


@register_method(
    "critical_distill",
    config=CriticalDistillConfig,
    datamodule=CriticalDistillDataModule,
    required_trainer={"max_epochs": 1},
)
class CriticalDistillModule(MethodModule):
    monitors = ("val/loss", "val/acc")
    config_class = CriticalDistillConfig

    def __init__(
        self,
        config: dict,
        class_names: list[str],
        image_shape: list[int],
        mean: list[float],
        std: list[float],
        kept_per_class: list[int],
        subset_hash: str,
    ) -> None:
        super().__init__(
            config,
            class_names=class_names,
            image_shape=image_shape,
            mean=mean,
            std=std,
            kept_per_class=kept_per_class,
            subset_hash=subset_hash,
        )
        m = self.cfg.model
        self.class_names, self.image_shape = list(class_names), list(image_shape)
        self.mean, self.std, self.subset_hash = list(mean), list(std), subset_hash
        self.num_classes = len(class_names)
        if m.ipc < 1:
            raise ConfigError(f"model.ipc={m.ipc}: at least one synthetic image per class")
        if m.init is InitMode.real and min(kept_per_class) < m.ipc:
            c = min(range(self.num_classes), key=lambda i: kept_per_class[i])
            raise DataError(
                f"data.selection keeps {kept_per_class[c]} real image(s) of class {class_names[c]} but "
                f"model.ipc={m.ipc} with model.init=real draws {m.ipc}: keep more or set model.init=noise"
            )
        self.algorithm = m.algorithm
        self.dsa_strategy = None if m.algorithm is Algorithm.dc else m.dsa_strategy
        if self.dsa_strategy:
            try:
                parse_strategy(self.dsa_strategy)
            except ValueError as exc:
                raise ConfigError(f"model.dsa_strategy: {exc}") from None
        self.outer_loop, self.inner_loop = (
            matching.dc_loops(m.ipc, m.dc_outer_loop, m.dc_inner_loop)
            if m.algorithm in (Algorithm.dc, Algorithm.dsa)
            else (1, 0)
        )
        self.eval_epochs = m.eval_epochs if m.eval_epochs is not None else (1000 if self.dsa_strategy else 300)
        if m.algorithm is Algorithm.mtt and m.mtt.buffer is not None:  # refuse another subset's experts now
            probe = ConvNet(image_shape[0], self.num_classes, image_shape[1], m.net_width, m.net_depth)
            mtt.load_buffer(m.mtt.buffer, subset_hash, sum(p.numel() for p in probe.parameters()))
        learn_lr = m.mtt.lr_teacher if m.algorithm is Algorithm.mtt else None
        self.net = SyntheticSet(self.num_classes, m.ipc, self.image_shape, learn_lr)
        self.automatic_optimization = False  # DC takes inner network steps between image steps
        self.val_acc = MulticlassAccuracy(self.num_classes, average="micro")
        # Not submodules: per-step networks, the evaluators, the real pools (set at fit start).
        self._pools: list[Tensor] | None = None
        self._dc_net: ConvNet | None = None
        self._val_net: ConvNet | None = None
        self._test_nets: list[ConvNet] = []
        self._experts: Tensor | None = None
        self._student: ConvNet | None = None
        self._fit_started = 0.0

    # ---- sizes and networks

    def evaluation_budget(self) -> tuple[int, int, int]:
        """(evaluators, their epochs, validation epochs); a fast_dev_run smoke test trains 2 networks x 2 epochs."""
        m = self.cfg.model
        if self._trainer is not None and self.trainer.fast_dev_run:
            return min(2, m.eval_networks), min(2, self.eval_epochs), min(2, m.val_epochs)
        return m.eval_networks, self.eval_epochs, m.val_epochs

    def distill_steps(self) -> int:
        return self.cfg.model.iterations * self.outer_loop

    def fresh_net(self, *stream: int) -> ConvNet:
        m = self.cfg.model
        return seeded_convnet(
            stream_seed(self.cfg.seed, *stream),
            self.image_shape[0],
            self.num_classes,
            self.image_shape[1],
            m.net_width,
            m.net_depth,
            self.device,
        )

    def my_classes(self) -> range:
        return range(self.global_rank, self.num_classes, self.trainer.world_size)

    def configure_optimizers(self):
        m = self.cfg.model
        images = torch.optim.SGD([self.net.images], lr=m.lr_img, momentum=m.momentum_img)
        if self.algorithm is not Algorithm.mtt:
            return images
        return [images, torch.optim.SGD([self.net.syn_lr], lr=m.mtt.lr_lr, momentum=0.5)]

    # ---- fit start: pools, initial images, selection record, MTT experts

    def on_fit_start(self) -> None:
        self._fit_started = time.perf_counter()
        datamodule = self.trainer.datamodule
        self._pools = [p.to(self.device) for p in datamodule.class_pools]
        if not bool(self.net.initialised):
            self._initialise_images()
        if self.trainer.is_global_zero:
            self._record_selection(datamodule)
        if self.algorithm is Algorithm.mtt:
            self._experts = self._load_or_train_experts(datamodule)
            self._student = self.fresh_net(EXPERT, -1)

    @torch.no_grad()
    def _initialise_images(self) -> None:
        ipc = self.cfg.model.ipc
        for c in range(self.num_classes):
            g = generator(self.cfg.seed, INIT, c)
            if self.cfg.model.init is InitMode.real:
                block = matching.sample_real(self._pools[c], ipc, g)
            else:
                block = torch.randn(ipc, *self.image_shape, generator=g).to(self.device)
            self.net.images[c * ipc : (c + 1) * ipc] = block
        self.net.initialised.fill_(True)

    def _record_selection(self, datamodule: CriticalDistillDataModule) -> None:
        sel = datamodule.selection
        record = {
            "criterion": sel.criterion,
            "subset_hash": self.subset_hash,
            "dataset_fingerprint": datamodule.data.fingerprint,
            "kept_fraction": sel.kept_fraction,
            "per_class_total": sel.per_class_total,
            "per_class_kept": sel.per_class_kept,
            "kept_indices": [int(i) for i in sel.kept],
        }
        path = self.run_dir / "selection.json"
        path.write_text(json.dumps(record))
        numbers = {"selection/kept": len(sel.kept), "selection/kept_fraction": sel.kept_fraction}
        numbers.update({f"selection/kept_class_{c}": k for c, k in enumerate(sel.per_class_kept)})
        self.log_run_numbers(numbers)
        rank_zero_info(
            f"selection {sel.criterion}: kept {len(sel.kept)} of {sum(sel.per_class_total)} "
            f"({sel.kept_fraction:.4%}), per class {sel.per_class_kept}; indices in {path}"
        )
        if has_media_logger(self.loggers):
            log_image(self.loggers, "selection/kept_fraction_curve", kept_fraction_figure(sel, self.class_names), 0)

    def _load_or_train_experts(self, datamodule: CriticalDistillDataModule) -> Tensor:
        m = self.cfg.model.mtt
        num_params = sum(p.numel() for p in self.fresh_net(EXPERT, -1).parameters())
        path = m.buffer
        if path is None:
            path = str(self.run_dir / "mtt_buffer.pt")
            start = time.perf_counter()
            trajectories = self.train_experts(num_params)  # every process trains its share
            seconds = time.perf_counter() - start
            if self.trainer.is_global_zero:
                mtt.save_buffer(
                    path,
                    trajectories,
                    {
                        "subset_hash": self.subset_hash,
                        "dataset_fingerprint": datamodule.data.fingerprint,
                        "num_experts": m.num_experts,
                        "train_epochs": m.train_epochs,
                        "lr_teacher": m.lr_teacher,
                        "net_width": self.cfg.model.net_width,
                        "net_depth": self.cfg.model.net_depth,
                        "seconds": seconds,
                    },
                )
                self.log_run_numbers({"mtt/expert_seconds": seconds})
                rank_zero_info(
                    f"MTT: {m.num_experts} experts x {m.train_epochs} epochs on the kept subset in "
                    f"{seconds:.1f} s on {self.trainer.world_size} process(es) -> {path}"
                )
            self.trainer.strategy.barrier("mtt-experts")
        return mtt.load_buffer(path, self.subset_hash, num_params).to(self.device)

    def train_experts(self, num_params: int) -> Tensor:
        """(experts, epochs + 1, P) trajectories. Expert e depends only on (seed, e); round j trains expert
        j * W + rank in each process and one all_gather hands every process the round's experts, in order."""
        m = self.cfg.model.mtt
        x = torch.cat(self._pools)
        y = torch.cat([torch.full((len(p),), c, device=self.device) for c, p in enumerate(self._pools)])
        world, shape = self.trainer.world_size, (m.train_epochs + 1, num_params)
        trajectories: list[Tensor] = []
        for first in range(0, m.num_experts, world):
            e = first + self.global_rank
            mine = (
                mtt.train_expert(
                    self.fresh_net(EXPERT, e),
                    x,
                    y,
                    m.train_epochs,
                    m.lr_teacher,
                    self.cfg.model.batch_train,
                    self.dsa_strategy,
                    generator(self.cfg.seed, EXPERT, e),
                )
                if e < m.num_experts
                else torch.zeros(shape)
            )  # padding: every process gathers the same shape
            gathered = self.all_gather(mine.to(self.device)).reshape(-1, *shape).cpu()
            trajectories.extend(gathered[: min(world, m.num_experts - first)])
        return torch.stack(trajectories)

    # ---- one image update

    def training_step(self, batch: Tensor, batch_idx: int) -> Tensor:
        step = int(batch)
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        if self.algorithm is Algorithm.mtt:
            loss, scale = self.mtt_loss(step), 1.0
        else:
            loss = self.dm_loss(step) if self.algorithm is Algorithm.dm else self.dc_loss(step)
            scale = float(self.trainer.world_size)  # DDP averages; the objective is the sum over classes
        for opt in optimizers:
            opt.zero_grad()
        self.manual_backward(loss * scale)
        for opt in optimizers:
            opt.step()
        # The total objective: a sum over the classes of all processes (MTT: identical in every process).
        self.log(
            "train/loss",
            loss.detach(),
            prog_bar=True,
            on_step=True,
            on_epoch=False,
            sync_dist=True,
            reduce_fx="mean" if self.algorithm is Algorithm.mtt else "sum",
            batch_size=1,
        )
        if self.algorithm is Algorithm.mtt:
            self.log("train/syn_lr", self.net.syn_lr.detach(), on_step=True, on_epoch=False, batch_size=1)
        return loss

    def dm_loss(self, step: int) -> Tensor:
        """DM: one frozen random ConvNet per step; per class ||mean psi(real) - mean psi(syn)||^2."""
        net = self.fresh_net(NET, step).requires_grad_(False)
        loss = self.net.images.new_zeros(())
        for c in self.my_classes():
            g = generator(self.cfg.seed, REAL, step, c)
            real = matching.sample_real(self._pools[c], self.cfg.data.batch_size_per_device, g)
            real, syn = matching.siamese(real, self.net.class_images(c), self.dsa_strategy, g)
            loss = loss + matching.dm_class_loss(net.embed, real, syn)
        return loss

    def dc_loss(self, step: int) -> Tensor:
        """DC/DSA outer step `ol` of iteration `it`: a new ConvNet at ol = 0, else `inner_loop` epochs on S first."""
        it, ol = divmod(step, self.outer_loop)
        m = self.cfg.model
        if ol == 0 or self._dc_net is None:
            self._dc_net = self.fresh_net(NET, it)
        else:
            images, labels = self.net()
            train_classifier(
                self._dc_net,
                images.detach(),
                labels,
                self.inner_loop,
                generator(self.cfg.seed, INNER, step),
                lr=m.lr_net,
                momentum=0.0,
                batch=m.batch_train,
                dsa_strategy=self.dsa_strategy,
            )
        net = self._dc_net.train()
        loss = self.net.images.new_zeros(())
        for c in self.my_classes():
            g = generator(self.cfg.seed, REAL, step, c)
            real = matching.sample_real(self._pools[c], self.cfg.data.batch_size_per_device, g)
            real, syn = matching.siamese(real, self.net.class_images(c), self.dsa_strategy, g)
            loss = loss + matching.dc_class_loss(net, real, syn, c)
        return loss

    def mtt_loss(self, step: int) -> Tensor:
        m = self.cfg.model.mtt
        g = generator(self.cfg.seed, MTT_STEP, step)
        experts, epochs = self._experts.shape[0], self._experts.shape[1] - 1
        if m.max_start_epoch + m.expert_epochs > epochs + 1 or m.max_start_epoch < 1:
            raise ConfigError(
                f"model.mtt.max_start_epoch={m.max_start_epoch} + expert_epochs={m.expert_epochs} "
                f"exceeds the {epochs} epochs of the expert buffer"
            )
        e = int(torch.randint(experts, (), generator=g))
        t = int(torch.randint(m.max_start_epoch, (), generator=g))
        images, labels = self.net()
        return mtt.trajectory_loss(
            self._student,
            self._experts[e, t],
            self._experts[e, t + m.expert_epochs],
            images,
            labels,
            self.net.syn_lr,
            m.syn_steps,
            m.batch_syn or len(images),
            self.dsa_strategy,
            g,
        )

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        step, every = int(batch), self.cfg.model.image_log_every
        last = step == self.distill_steps() - 1
        if self.trainer.is_global_zero and has_media_logger(self.loggers) and (step % every == 0 or last):
            self.log_synthetic_grid(step)

    def on_train_end(self) -> None:
        self.log_run_numbers({"time/distill_seconds": time.perf_counter() - self._fit_started})

    def log_synthetic_grid(self, step: int) -> None:
        images = self.denormalise(self.net.images.detach()).cpu()
        captions = [self.class_names[int(c)] for c in self.net.labels]
        log_image_grid(
            self.loggers,
            "distill/synthetic",
            list(images),
            step,
            captions,
            nrow=max(self.cfg.model.ipc, self.num_classes if self.cfg.model.ipc == 1 else 1),
        )

    def denormalise(self, x: Tensor) -> Tensor:
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        return (x * std + mean).clamp(0, 1)

    # ---- validation: one evaluator on the current synthetic set

    def on_validation_epoch_start(self) -> None:
        images, labels = self.net()
        with torch.inference_mode(False), torch.enable_grad():  # Lightning evaluates under inference mode
            self._val_net = train_on_synthetic(
                self.fresh_net(VAL, 0),
                images,
                labels,
                self.evaluation_budget()[2],
                generator(self.cfg.seed, VAL, 0),
                lr=self.cfg.model.eval_lr,
                batch=self.cfg.model.batch_train,
                dsa_strategy=self.dsa_strategy,
            )

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        with torch.no_grad():
            logits = self._val_net(x)
        self.val_acc.update(logits, y)
        self.log("val/loss", F.cross_entropy(logits, y), sync_dist=True, batch_size=len(y))
        self.log("val/acc", self.val_acc, prog_bar=True, on_step=False, on_epoch=True, batch_size=len(y))

    # ---- test: the official protocol, N fresh evaluators split between processes

    def on_test_epoch_start(self) -> None:
        m = self.cfg.model
        world, rank = self.trainer.world_size, self.global_rank
        networks, epochs, _ = self.evaluation_budget()
        per = math.ceil(networks / world)
        images, labels = self.net()
        template = self.fresh_net(EVAL, -1)
        vectors = []
        for j in range(per):
            n = rank * per + j
            if n < networks:
                with torch.inference_mode(False), torch.enable_grad():  # Lightning tests under inference mode
                    net = train_on_synthetic(
                        self.fresh_net(EVAL, n),
                        images.clone(),
                        labels.clone(),
                        epochs,
                        generator(self.cfg.seed, EVAL, n),
                        lr=m.eval_lr,
                        batch=m.batch_train,
                        dsa_strategy=self.dsa_strategy,
                    )
                vectors.append(parameters_to_vector(net.parameters()).detach())
            else:  # padding so every process gathers the same shape
                vectors.append(torch.zeros_like(parameters_to_vector(template.parameters())))
        gathered = self.all_gather(torch.stack(vectors)).reshape(-1, vectors[0].numel())[:networks]
        self._test_nets = []
        for vec in gathered:
            net = self.fresh_net(EVAL, -1)
            vector_to_parameters(vec, net.parameters())
            self._test_nets.append(net.eval())
        self._correct = torch.zeros(len(self._test_nets), device=self.device)
        self._total = torch.zeros((), device=self.device)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        with torch.no_grad():
            for n, net in enumerate(self._test_nets):
                self._correct[n] += (net(x).argmax(-1) == y).sum()
        self._total += len(y)

    def on_test_epoch_end(self) -> None:
        correct = self.trainer.strategy.reduce(self._correct, reduce_op="sum")
        total = self.trainer.strategy.reduce(self._total, reduce_op="sum")
        accs = correct / total  # (N,) each network on the whole test split
        # np.std (ddof 0), as the official evaluation reports
        self.log("test/acc_mean", accs.mean(), sync_dist=True)
        self.log("test/acc_std", accs.std(unbiased=False), sync_dist=True)
        if self.trainer.is_global_zero:
            record = {
                "accuracies": [float(a) for a in accs],
                "mean": float(accs.mean()),
                "std": float(accs.std(unbiased=False)),
                "epochs": self.evaluation_budget()[1],
                "dsa": self.dsa_strategy,
                "subset_hash": self.subset_hash,
            }
            (self.run_dir / "evaluation.json").write_text(json.dumps(record))
            rank_zero_info(
                f"test: {len(accs)} evaluators, accuracy {100 * float(accs.mean()):.2f} +- "
                f"{100 * float(accs.std(unbiased=False)):.2f} %"
            )

    # ---- export: model.pt holds the synthetic images and labels

    def export_spec(self) -> dict:
        learn_lr = self.cfg.model.mtt.lr_teacher if self.algorithm is Algorithm.mtt else None
        return {
            "target": "lightning_modules.critical_distill.net:build_synthetic_set",
            "kwargs": {
                "num_classes": self.num_classes,
                "ipc": self.cfg.model.ipc,
                "image_shape": self.image_shape,
                "learn_lr": learn_lr,
            },
        }

    def export_artifacts(self, model: SyntheticSet, writer: ExportWriter) -> None:
        images = list(self.denormalise(model.images.detach()))
        captions = [self.class_names[int(c)] for c in model.labels]
        writer.image("synthetic.png", image_grid(images, captions, nrow=max(self.cfg.model.ipc, 10)))


def kept_fraction_figure(sel, class_names: list[str]):
    """Per class, the fraction of its real samples the selection kept (a PIL image)."""
    import matplotlib

    matplotlib.use("Agg")
    import io

    import matplotlib.pyplot as plt
    from PIL import Image

    fractions = [k / n for k, n in zip(sel.per_class_kept, sel.per_class_total)]
    fig, ax = plt.subplots(figsize=(max(4, 0.4 * len(fractions)), 3), dpi=100)
    ax.plot(range(len(fractions)), fractions, marker="o")
    ax.set_xticks(range(len(fractions)), class_names if len(class_names) <= 20 else None)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("class")
    ax.set_ylabel("kept fraction")
    ax.set_title(f"{sel.criterion}: kept {len(sel.kept)} ({sel.kept_fraction:.2%})")
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
