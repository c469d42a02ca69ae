"""DeepLens callbacks: lens pictures for the loggers during design, prescription + layout at export."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
from PIL import Image

from lightning_modules.deeplens.design import set_stop_for_aperture
from lightning_modules.deeplens.plots import layout_image, spot_diagrams_image
from lightning_modules.optics import Lens
from lightning_modules.optics.formats import save_deeplens_json, save_zmx
from tenfold.media import has_media_logger, log_image
from tenfold.method import ExportWriter

PICTURE_FIELDS = (0.0, 0.5, 0.7, 1.0)


def _pictures(lens: Lens, spec, title: str) -> dict[str, Image.Image]:
    hfov = math.radians(spec.hfov_deg)
    fields = [f for f in PICTURE_FIELDS if f <= max(spec.fields)] or [0.0]
    return {
        "layout": layout_image(lens, fields, hfov, spec.depth_mm, title=title),
        "spots": spot_diagrams_image(lens, fields, hfov, spec.depth_mm, spec.wavelengths_nm, title=title),
    }


class LensVisualsCallback(L.Callback):
    """Every `every_n_steps` (at the next validation) and at the last step: layout with rays and spot diagrams at
    the target specification, to W&B / TensorBoard, and as PNGs under <run dir>/visuals/ for every other logger."""

    def __init__(self, every_n_steps: int) -> None:
        self.every_n_steps = every_n_steps
        self.last_logged: int | None = None

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        step = trainer.global_step
        if trainer.sanity_checking or not trainer.is_global_zero or not trainer.loggers or self.every_n_steps <= 0:
            return
        final = trainer.max_steps is not None and 0 < trainer.max_steps <= step  # the finished design
        if self.last_logged is not None and step - self.last_logged < self.every_n_steps and not final:
            return
        self.last_logged = step
        spec = pl_module.cfg.model.spec
        set_stop_for_aperture(pl_module.lens, spec, 1.0)
        stage = getattr(pl_module, "state", None)
        title = f"step {step}" + (f", curriculum aperture {stage.aperture:.2f} fov {stage.fov:.2f}" if stage else "")
        pictures = _pictures(pl_module.lens, spec, title)
        set_stop_for_aperture(pl_module.lens, spec, stage.aperture if stage else 1.0)
        for name, image in pictures.items():
            log_image(trainer.loggers, f"lens/{name}", image, step)
        if not has_media_logger(trainer.loggers):
            folder = Path(trainer.default_root_dir) / "visuals"
            folder.mkdir(parents=True, exist_ok=True)
            for name, image in pictures.items():
                image.save(folder / f"step{step:07d}_{name}.png")


class LensExportCallback(L.Callback):
    """Writes export/prescription.json (tenfold), lens_deeplens.json (official DeepLens `GeoLens`), lens.zmx
    (Zemax), layout.png and spots.png beside the platform's model.pt."""

    def __init__(self) -> None:
        self.spec = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.spec = pl_module.cfg.model.spec

    def export_artifacts(self, model: Lens, writer: ExportWriter) -> None:
        writer.file("prescription.json", model.save_json, what="prescription")
        writer.file("lens_deeplens.json", lambda path: save_deeplens_json(model, path), what="DeepLens JSON")
        writer.file("lens.zmx", lambda path: save_zmx(model, path), what="Zemax lens")
        pictures = _pictures(model, self.spec, title=f"EFL {model.foclen:.3f} mm, F/{model.fnum:.2f}")
        writer.image("layout.png", pictures["layout"])
        writer.image("spots.png", pictures["spots"])
