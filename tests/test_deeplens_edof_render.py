"""EDoF image simulation, restoration network and patch data, checked against analytic references."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.transforms.functional import gaussian_blur

from datamodules.image_patches import ImagePatchesDataConfig, ImagePatchesDataModule, PatchSource, patch_field
from lightning_modules.deeplens_edof.render import render_psf, render_psf_map, tile_bounds
from lightning_modules.deeplens_edof.restoration_net import NAFNet, build_restoration_net
from tenfold.errors import DataError


def gaussian_psf(ks: int, sigma: float, channels: int = 3) -> torch.Tensor:
    x = torch.arange(ks, dtype=torch.float64) - ks // 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = torch.outer(g, g)
    return (kernel / kernel.sum()).expand(channels, ks, ks).clone()


@pytest.fixture
def image() -> torch.Tensor:
    return torch.rand(2, 3, 40, 52, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def test_delta_psf_is_the_identity(image: torch.Tensor) -> None:
    delta = torch.zeros(3, 7, 7, dtype=torch.float64)
    delta[:, 3, 3] = 1
    torch.testing.assert_close(render_psf(image, delta), image, rtol=0, atol=1e-12)
    torch.testing.assert_close(render_psf_map(image, delta.expand(3, 4, 3, 7, 7)), image, rtol=0, atol=1e-12)


def test_gaussian_psf_equals_torchvision_gaussian_blur(image: torch.Tensor) -> None:
    psf = gaussian_psf(9, 1.7)
    torch.testing.assert_close(render_psf(image, psf), gaussian_blur(image, [9, 9], [1.7, 1.7]), rtol=0, atol=1e-12)


def test_an_off_centre_delta_shifts_the_image_the_way_a_lens_does(image: torch.Tensor) -> None:
    # PSF energy one pixel right of centre: the image of every point moves one pixel right (a true
    # convolution; a cross-correlation would move it left).
    shift = torch.zeros(3, 5, 5, dtype=torch.float64)
    shift[:, 2, 3] = 1
    out = render_psf(image, shift)
    torch.testing.assert_close(out[..., 1:], image[..., :-1], rtol=0, atol=1e-12)


def test_fft_rendering_equals_conv2d_with_the_flipped_kernel(image: torch.Tensor) -> None:
    psf = torch.rand(3, 7, 7, generator=torch.Generator().manual_seed(1), dtype=torch.float64)  # asymmetric
    padded = F.pad(image, (3, 3, 3, 3), mode="reflect")
    expected = F.conv2d(padded, psf.flip(-2, -1).unsqueeze(1), groups=3)
    torch.testing.assert_close(render_psf(image, psf), expected, rtol=0, atol=1e-12)


def test_per_image_psfs_apply_to_their_own_image(image: torch.Tensor) -> None:
    psfs = torch.stack([gaussian_psf(7, 0.8), gaussian_psf(7, 2.0)])  # (B, C, ks, ks)
    out = render_psf(image, psfs)
    for b in range(2):
        torch.testing.assert_close(out[b : b + 1], render_psf(image[b : b + 1], psfs[b]), rtol=0, atol=1e-12)


def test_psf_map_with_identical_psfs_equals_one_global_convolution(image: torch.Tensor) -> None:
    psf = gaussian_psf(11, 2.5)
    expected = render_psf(image, psf)
    for grid in [(1, 1), (3, 3), (4, 5)]:
        got = render_psf_map(image, psf.expand(*grid, 3, 11, 11))
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


def test_psf_map_uses_each_tiles_own_psf(image: torch.Tensor) -> None:
    sharp, blurry = gaussian_psf(5, 0.3), gaussian_psf(5, 1.5)
    psf_map = torch.stack([torch.stack([sharp, blurry]), torch.stack([blurry, sharp])])  # (2, 2, C, ks, ks)
    out = render_psf_map(image, psf_map)
    rows, cols = tile_bounds(40, 2), tile_bounds(52, 2)
    top_right = out[..., rows[0] : rows[1], cols[1] : cols[2]]
    torch.testing.assert_close(top_right, render_psf(image, blurry)[..., : rows[1], cols[1] :], rtol=0, atol=1e-12)
    bottom_right = out[..., rows[1] :, cols[1] :]
    torch.testing.assert_close(bottom_right, render_psf(image, sharp)[..., rows[1] :, cols[1] :], rtol=0, atol=1e-12)


def test_rendering_preserves_brightness_and_is_differentiable_in_the_psf(image: torch.Tensor) -> None:
    sigma = torch.tensor(1.2, dtype=torch.float64, requires_grad=True)
    x = torch.arange(9, dtype=torch.float64) - 4
    g = torch.exp(-(x**2) / (2 * sigma**2))
    psf = (torch.outer(g, g) / torch.outer(g, g).sum()).expand(3, 9, 9)
    flat = torch.full((1, 3, 20, 20), 0.37, dtype=torch.float64)
    torch.testing.assert_close(render_psf(flat, psf), flat, rtol=0, atol=1e-12)
    (grad,) = torch.autograd.grad(render_psf(image, psf).var(), sigma)
    assert grad < 0  # more blur, less contrast


def test_bad_kernels_are_refused(image: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="odd size"):
        render_psf(image, torch.ones(3, 4, 4))
    with pytest.raises(ValueError, match="too large"):
        render_psf(image, torch.ones(3, 81, 81))


# ---- restoration network


def test_nafnet_starts_as_the_identity_and_keeps_odd_sizes() -> None:
    from lightning_modules.deeplens_edof.restoration_net import NAFBlock

    features = torch.randn(2, 8, 9, 11)
    with torch.no_grad():
        torch.testing.assert_close(NAFBlock(8)(features), features, rtol=0, atol=0)
    net = NAFNet(width=8, enc_blocks=[1, 1], dec_blocks=[1, 1]).eval()
    x = torch.rand(2, 3, 37, 50)
    with torch.no_grad():
        torch.testing.assert_close(net(x), x, rtol=0, atol=0)


def test_nafnet_learns_to_sharpen_a_blur() -> None:
    torch.manual_seed(0)
    net = build_restoration_net(width=8, enc_blocks=[1, 1], middle_blocks=1)
    opt = torch.optim.Adam(net.parameters(), lr=5e-3)
    psf = gaussian_psf(5, 1.0).float()
    sharp = F.interpolate(torch.rand(4, 3, 6, 6), size=24, mode="bicubic").clamp(0, 1)
    blurry = render_psf(sharp, psf)
    before = F.mse_loss(blurry, sharp).item()
    for _ in range(60):
        loss = F.mse_loss(net(blurry), sharp)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * before


# ---- patch data


def test_patch_field_is_centred_and_y_up() -> None:
    torch.testing.assert_close(patch_field(48, 48, 32, 128), torch.tensor([0.0, 0.0]))
    torch.testing.assert_close(patch_field(0, 96, 32, 128), torch.tensor([0.75, 0.75]))  # top right
    torch.testing.assert_close(patch_field(96, 0, 32, 128), torch.tensor([-0.75, -0.75]))


def test_sample_photo_patches(tmp_path) -> None:
    cfg = ImagePatchesDataConfig(train_photos=["astronaut", "camera"], val_photos=["chelsea"],
                                 test_photos=["chelsea"], image_size=96, patch_size=32, patches_per_image=3,
                                 eval_patches_per_image=2, batch_size_per_device=4, num_workers=0)
    dm = ImagePatchesDataModule(cfg)
    dm.check()
    dm.setup("fit")
    assert len(dm.train_set) == 6 and len(dm.val_set) == 2
    patch, field, index = dm.train_set[4]
    assert patch.shape == (3, 32, 32) and 0 <= patch.min() and patch.max() <= 1 and patch.std() > 0.02
    assert field.abs().max() <= 1 - 16 / 96 + 1e-6 and index == 4
    # Evaluation crops are the same every time they are read.
    first, again = dm.val_set[1], dm.val_set[1]
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    images, fields, indices = next(iter(dm.val_dataloader()))
    assert images.shape == (2, 3, 32, 32) and fields.shape == (2, 2) and indices.tolist() == [0, 1]


def test_missing_data_names_the_key(tmp_path) -> None:
    with pytest.raises(DataError, match="data.root"):
        ImagePatchesDataModule(ImagePatchesDataConfig(source=PatchSource.folder)).check()
    with pytest.raises(DataError, match="DIV2K_train_HR"):
        ImagePatchesDataModule(ImagePatchesDataConfig(source=PatchSource.folder, root=str(tmp_path))).check()
    with pytest.raises(DataError, match="not a scikit-image sample"):
        ImagePatchesDataModule(ImagePatchesDataConfig(train_photos=["no_such_photo"])).check()
    (tmp_path / "DIV2K_train_HR").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        ImagePatchesDataModule(ImagePatchesDataConfig(source=PatchSource.folder, root=str(tmp_path))).check()


def test_folder_source_reads_hr_images(tmp_path) -> None:
    from PIL import Image

    for split in ("DIV2K_train_HR", "DIV2K_valid_HR"):
        (tmp_path / split).mkdir()
        for i in range(2):
            pixels = (torch.rand(60, 90, 3) * 255).to(torch.uint8).numpy()
            Image.fromarray(pixels).save(tmp_path / split / f"{i:04d}.png")
    dm = ImagePatchesDataModule(ImagePatchesDataConfig(source=PatchSource.folder, root=str(tmp_path), image_size=48,
                                                       patch_size=16, num_workers=0))
    dm.check()
    dm.setup("fit")
    patch, field, _ = dm.train_set[0]
    assert patch.shape == (3, 16, 16) and math.isfinite(float(field.sum()))
