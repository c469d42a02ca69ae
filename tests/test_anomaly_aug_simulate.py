"""The simulator's properties (digest section 6.1-6.3): masks and pixels agree for every family."""

from __future__ import annotations

import pytest
import torch

from lightning_modules.anomaly_aug.config import DEFAULT_TABLE
from lightning_modules.anomaly_aug.simulate import (
    COLOUR_OPS,
    FAMILY_CODES,
    ORIENTATION_OPS,
    AnomalySimulator,
    ClassOp,
    Family,
    draem_simulation,
    perlin_masks,
    perlin_noise,
    stream_seed,
)
from lightning_modules.anomaly_aug.sources import bundled_sources, folder_sources
from tenfold.errors import ConfigError, DataError

CPU = torch.device("cpu")


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def sources() -> torch.Tensor:
    return bundled_sources(32)


@pytest.fixture(scope="module")
def normal_images() -> torch.Tensor:
    # smooth, textured "normal" images so that |A - I| varies
    y, x = torch.meshgrid(torch.linspace(0, 1, 32), torch.linspace(0, 1, 32), indexing="ij")
    base = torch.stack((0.5 + 0.3 * torch.sin(12 * x), 0.4 + 0.2 * torch.cos(9 * y), 0.3 + 0.2 * x * y))
    return (base[None] + 0.05 * torch.rand(200, 3, 32, 32, generator=_gen(1))).clamp(0, 1)


def test_perlin_noise_is_bounded_seeded_and_any_size() -> None:
    a = perlin_noise(16, 64, 96, _gen(3), CPU)
    b = perlin_noise(16, 64, 96, _gen(3), CPU)
    assert a.shape == (16, 64, 96) and torch.equal(a, b)
    assert a.abs().max() <= 1 + 1e-5
    assert perlin_noise(4, 100, 100, _gen(0), CPU).shape == (4, 100, 100)


def test_perlin_masks_are_binary_non_empty_with_a_stable_coverage() -> None:
    masks, redraws = perlin_masks(1000, 64, 64, _gen(0), CPU)
    assert set(masks.unique().tolist()) == {0.0, 1.0}
    assert (masks.flatten(1).sum(1) > 0).all() and redraws > 0
    # calibrated once on this seed (0.0475), frozen as a regression band
    assert 0.035 < masks.mean().item() < 0.06


def test_every_family_changes_pixels_only_inside_its_mask(sources: torch.Tensor, normal_images: torch.Tensor) -> None:
    sim = AnomalySimulator(sources, DEFAULT_TABLE["disc"])
    out = sim.simulate(normal_images, _gen(5))
    changed = (out.images != normal_images).any(1, keepdim=True)
    assert not (changed & (out.masks == 0)).any()
    seen = set(out.family.tolist())
    assert {FAMILY_CODES[f] for f in (Family.clean, Family.transparent, Family.opaque, Family.ndaa,
                                      Family.class_op)} <= seen
    for code in seen - {FAMILY_CODES[Family.clean]}:
        rows = out.family == code
        assert (out.labels[rows] == 1).all() and (out.masks[rows].flatten(1).sum(1) > 0).all()
    external = (out.family == FAMILY_CODES[Family.opaque]) | (out.family == FAMILY_CODES[Family.transparent])
    inside = out.masks[external].bool().expand(-1, 3, -1, -1).any(1)
    moved = changed[external][:, 0]
    assert moved[inside].float().mean() > 0.5  # an external source visibly changes most mask pixels


def test_clean_samples_are_bit_identical_with_empty_masks(sources: torch.Tensor, normal_images: torch.Tensor) -> None:
    out = AnomalySimulator(sources, []).simulate(normal_images, _gen(6))
    clean = out.family == FAMILY_CODES[Family.clean]
    assert 60 < int(clean.sum()) < 140  # p_clean = 0.5 of 200
    assert torch.equal(out.images[clean], normal_images[clean])
    assert out.masks[clean].sum() == 0 and (out.labels[clean] == 0).all()


def test_opaque_regions_equal_the_source_and_transparent_ratio_is_constant(
        sources: torch.Tensor, normal_images: torch.Tensor) -> None:
    out = AnomalySimulator(sources, [], transparent_beta=(0.3, 0.7)).simulate(normal_images, _gen(7))
    for i in range(len(out.images)):
        m = out.masks[i, 0].bool()
        if out.family[i] == FAMILY_CODES[Family.opaque]:
            assert torch.equal(out.images[i][:, m], out.sources[i][:, m])
        if out.family[i] == FAMILY_CODES[Family.transparent]:
            diff = out.sources[i] - normal_images[i]
            usable = m & (diff.abs() > 0.05).all(0)
            ratio = (out.images[i] - normal_images[i])[:, usable] / diff[:, usable]
            beta = float(out.beta[i])
            assert 0.3 <= beta <= 0.7
            torch.testing.assert_close(ratio, torch.full_like(ratio, beta), atol=1e-4, rtol=0)


def test_per_class_rules_no_orientation_or_colour_where_the_table_forbids() -> None:
    for name in ("screw", "hazelnut", "carpet", "grid", "leather", "tile", "wood"):
        assert not set(ORIENTATION_OPS) & set(DEFAULT_TABLE[name]), name
    for name in ("grid", "screw", "zipper"):
        assert not set(COLOUR_OPS) & set(DEFAULT_TABLE[name]), name
    assert set(ORIENTATION_OPS) <= set(DEFAULT_TABLE["transistor"])


def test_class_ops_drawn_only_from_the_row(sources: torch.Tensor, normal_images: torch.Tensor) -> None:
    row = [ClassOp.blur]
    sim = AnomalySimulator(sources, row, families=(Family.class_op,), p_clean=0.0)
    out = sim.simulate(normal_images[:20], _gen(8))
    assert (out.family == FAMILY_CODES[Family.class_op]).all()
    from lightning_modules.anomaly_aug.simulate import CLASS_OPS

    # every sample's pasted content is exactly the blurred image: no other op was drawn
    torch.testing.assert_close(out.sources, CLASS_OPS[ClassOp.blur](normal_images[:20], _gen(0)))


def test_no_global_rotation_outside_the_mask_but_draem_rotates(sources: torch.Tensor,
                                                               normal_images: torch.Tensor) -> None:
    out = AnomalySimulator(sources, DEFAULT_TABLE["disc"]).simulate(normal_images, _gen(9))
    outside = out.masks.expand(-1, 3, -1, -1) == 0
    assert torch.equal(out.images[outside], normal_images[outside])  # the frame never moves
    target, draem = draem_simulation(normal_images, sources, _gen(9))
    rotated = (target != normal_images).flatten(1).any(1)
    assert 0.2 < rotated.float().mean() < 0.4  # DRAEM rotates normal images with p = 0.3
    assert (draem.beta[draem.labels == 1] > 0.2).all()


def test_two_ranks_draw_distinct_masks_and_one_rank_repeats(sources: torch.Tensor,
                                                            normal_images: torch.Tensor) -> None:
    sim = AnomalySimulator(sources, [])
    seeds = [stream_seed(42, rank, 0, 0, 7) for rank in (0, 1)]
    r0, r1 = (sim.simulate(normal_images[:16], _gen(s)) for s in seeds)
    again = sim.simulate(normal_images[:16], _gen(seeds[0]))
    assert not torch.equal(r0.masks, r1.masks)
    assert torch.equal(r0.masks, again.masks) and torch.equal(r0.images, again.images)
    assert len({stream_seed(42, 0, w, 0, 0) for w in range(4)}) == 4


@pytest.mark.parametrize("beta", [(0.0, 0.5), (0.5, 1.2), (0.8, 0.4)])
def test_beta_outside_zero_one_is_a_config_error(sources: torch.Tensor, beta: tuple[float, float]) -> None:
    with pytest.raises(ConfigError, match="transparent_beta"):
        AnomalySimulator(sources, [], transparent_beta=beta)


def test_empty_or_unreadable_anomaly_source_folder(tmp_path) -> None:
    with pytest.raises(DataError, match="no .jpg"):
        folder_sources(str(tmp_path), 32, 10)
    (tmp_path / "banded").mkdir()
    (tmp_path / "banded" / "x.jpg").write_bytes(b"not an image")
    with pytest.raises(DataError, match="cannot be read"):
        folder_sources(str(tmp_path), 32, 10)


def test_bundled_sources_are_offline_rgb_in_unit_range(sources: torch.Tensor) -> None:
    assert sources.shape[1:] == (3, 32, 32) and len(sources) >= 50
    assert sources.min() >= 0 and sources.max() <= 1
