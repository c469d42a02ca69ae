"""The one image path every method logs through: layouts, upsampling, and what W&B and TensorBoard store."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tenfold.media import MIN_SIDE, image_grid, log_image, to_uint8_chw


@pytest.fixture
def levels() -> torch.Tensor:
    """A (3, 8, 8) uint8 image with many distinct grey levels per channel."""
    return torch.randint(0, 256, (3, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


def test_every_accepted_layout_gives_the_same_pixels(levels: torch.Tensor) -> None:
    unit = levels.float() / 255
    layouts = {
        "float CHW tensor in [0, 1]": unit,
        "float HWC array in [0, 1]": unit.permute(1, 2, 0).numpy(),
        "uint8 HWC array": levels.permute(1, 2, 0).numpy(),
        "uint8 CHW tensor": levels,
        "RGBA uint8 HWC": np.concatenate([levels.permute(1, 2, 0).numpy(), np.full((8, 8, 1), 255, np.uint8)], 2),
    }
    for name, image in layouts.items():
        assert torch.equal(to_uint8_chw(image), levels), name
    grey = levels[0]
    for image in (grey, grey.float() / 255, grey[None], grey.numpy()[..., None]):
        assert torch.equal(to_uint8_chw(image), grey.expand(3, -1, -1))


def test_out_of_range_floats_are_clamped_not_wrapped() -> None:
    image = torch.tensor([[-0.5, 0.0], [1.0, 7.0]])
    assert to_uint8_chw(image)[0].tolist() == [[0, 0], [255, 255]]


def test_bad_shape_names_it() -> None:
    with pytest.raises(ValueError, match=r"shape \(2, 3, 4, 5\)"):
        to_uint8_chw(torch.zeros(2, 3, 4, 5))


def test_grid_upsamples_tiny_tiles_with_nearest_neighbours(levels: torch.Tensor) -> None:
    factor = -(-MIN_SIDE // 8)
    grid = np.asarray(image_grid([levels, 255 - levels], nrow=2)).astype(int)
    side = 8 * factor
    assert grid.shape == (side + 4, 2 * side + 6, 3)  # make_grid: 2-px padding around and between
    for col, tile in enumerate((levels, 255 - levels)):
        expected = tile.repeat_interleave(factor, 1).repeat_interleave(factor, 2).permute(1, 2, 0).numpy()
        x0 = 2 + col * (side + 2)
        assert np.array_equal(grid[2:2 + side, x0:x0 + side], expected)


def test_captions_add_a_text_strip_under_each_tile(levels: torch.Tensor) -> None:
    plain = np.asarray(image_grid([levels]))
    captioned = np.asarray(image_grid([levels], ["seven"]))
    assert captioned.shape[0] == plain.shape[0] + 14
    strip = captioned[2 + plain.shape[0] - 4: -2]
    assert (strip < 128).any() and (strip == 255).mean() > 0.5  # dark text on white


def test_wandb_and_tensorboard_store_the_exact_pixels(levels: torch.Tensor, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("WANDB_MODE", "offline")
    wandb_logger = WandbLogger(save_dir=str(tmp_path), project="media-test")
    tb_logger = TensorBoardLogger(str(tmp_path), name="tb")
    expected = np.asarray(image_grid([levels.float() / 255], ["a"]))
    log_image([wandb_logger, tb_logger], "val/grid", image_grid([levels.float() / 255], ["a"]), step=3)
    wandb_logger.experiment.finish()
    tb_logger.experiment.flush()

    (png,) = tmp_path.glob("wandb/offline-run-*/files/media/images/val/grid_*.png")
    assert np.array_equal(np.asarray(Image.open(png).convert("RGB")), expected)
    events = EventAccumulator(str(Path(tb_logger.log_dir)), size_guidance={"images": 0})
    events.Reload()
    (event,) = events.Images("val/grid")
    assert event.step == 3
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB")), expected)
