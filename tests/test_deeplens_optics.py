"""The DeepLens ray tracer against the digest's reference values (section 7, independent float64 tracer)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from lightning_modules.optics import (
    ApertureStop,
    EvenAsphere,
    Lens,
    Rays,
    material_from_name,
    psf_binned,
    psf_rgb,
    pupil_samples,
    refract,
    rms_spot,
    trace_fields,
)
from lightning_modules.optics.materials import (
    WAVE_C,
    WAVE_D,
    WAVE_F,
    Air,
    CauchyGlass,
    abbe_number,
    nearest_catalogue_glass,
)
from tenfold.errors import ConfigError

# The reference values are read off the tracer's differentiable outputs on purpose (the same code path as
# design): float() of a tensor that requires grad is fine here.
pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad=True to a scalar")

PRESCRIPTIONS = Path(__file__).resolve().parents[1] / "lightning_modules" / "optics" / "prescriptions"
INF = -math.inf  # collimated light, as in the reference computations


def load(name: str, dtype: torch.dtype = torch.float64) -> Lens:
    return Lens.from_json(PRESCRIPTIONS / f"{name}.json", dtype=dtype)


# ---- 7.1 glasses


@pytest.mark.parametrize("name, n_f, n_d, n_c, v_d", [
    ("N-BK7", 1.52238, 1.51680, 1.51432, 64.17),
    ("F2", 1.63208, 1.62004, 1.61503, 36.37),
    ("N-SK16", 1.62756, 1.62041, 1.61727, 60.32),
    ("N-SF5", 1.68750, 1.67271, 1.66664, 32.25),
    ("N-LAK9", 1.69979, 1.69100, 1.68716, 54.71),
    ("N-BAF10", 1.68000, 1.67003, 1.66578, 47.11),
    ("SK2", None, 1.60738, None, 56.65),
    ("F5", None, 1.60342, None, 38.03),
])
def test_sellmeier_glass_indices(name: str, n_f: float | None, n_d: float, n_c: float | None, v_d: float) -> None:
    glass = material_from_name(name)
    assert float(glass.n(WAVE_D)) == pytest.approx(n_d, abs=1e-5)
    if n_f is not None:
        assert float(glass.n(WAVE_F)) == pytest.approx(n_f, abs=1e-5)
        assert float(glass.n(WAVE_C)) == pytest.approx(n_c, abs=1e-5)
    assert abbe_number(glass) == pytest.approx(v_d, abs=0.01)


def test_sodium_d_line_differs_from_helium_d_line() -> None:
    assert float(material_from_name("BK7").n(589.3)) == pytest.approx(1.51673, abs=1e-5)
    assert float(material_from_name("F2").n(589.3)) == pytest.approx(1.61989, abs=1e-5)


def test_cauchy_glass_from_nd_vd() -> None:
    glass = CauchyGlass(1.5168, 64.17)
    b = float((glass.n(486.1) - glass.n(656.3)) / (486.1**-2 - 656.3**-2))
    assert b == pytest.approx(4215.69, abs=0.01)
    assert float(glass.n(1e12)) == pytest.approx(1.504590, abs=1e-6)  # A, the index at infinite wavelength
    assert float(glass.n(587.6)) == pytest.approx(1.5168, abs=1e-12)
    assert float(glass.n(486.1) - glass.n(656.3)) == pytest.approx(0.0080536, abs=1e-7)


def test_learnable_glass_gets_gradients_and_snaps_to_the_catalogue() -> None:
    glass = material_from_name("COC", learnable=True)
    glass.n(WAVE_F).backward()
    assert glass.n_d.grad is not None and glass.v_d.grad is not None and float(glass.v_d.grad) < 0
    assert nearest_catalogue_glass(1.6200, 60.0) == "N-SK16"
    assert nearest_catalogue_glass(1.5340, 56.0, ["COC", "PMMA", "PS", "PC", "OKP4"]) == "COC"


def test_unknown_material_names_the_choices() -> None:
    with pytest.raises(ConfigError, match="unknown material 'BK8'.*N-BK7"):
        material_from_name("BK8")


# ---- 7.5 sag, Snell, Newton


@pytest.mark.parametrize("k, ai, expected", [
    (0.0, (), 0.460608), (-1.0, (), 0.450000), (-0.5, (), 0.455180), (0.0, (1e-3, -1e-5), 0.534318),
])
def test_even_asphere_sag(k: float, ai: tuple, expected: float) -> None:
    surface = EvenAsphere(0.1, 0.0, 5.0, Air(), k=k, ai=ai)
    assert float(surface.sag(torch.tensor(9.0, dtype=torch.float64)).detach()) == pytest.approx(expected, abs=1e-6)


def test_sphere_slope() -> None:
    surface = EvenAsphere(0.1, 0.0, 5.0, Air())
    slope = 2 * 3.0 * surface.dsag_drho2(torch.tensor(9.0, dtype=torch.float64))  # dz/drho = 2 rho dz/drho^2
    assert float(slope.detach()) == pytest.approx(0.314485, abs=1e-6)


def _ray(direction: tuple[float, float, float], origin: tuple[float, float, float] = (0, 0, 0)) -> Rays:
    d = torch.tensor([direction], dtype=torch.float64)
    return Rays(torch.tensor([origin], dtype=torch.float64), d / d.norm(dim=-1, keepdim=True),
                torch.ones(1, dtype=torch.bool), WAVE_D)


def test_snell_30_degrees_into_bk7() -> None:
    ray = _ray((math.sin(math.radians(30)), 0, math.cos(math.radians(30))))
    n2 = material_from_name("N-BK7").n(WAVE_D)
    d, valid = refract(ray.d, torch.tensor([[0.0, 0.0, -1.0]], dtype=torch.float64), 1 / n2, ray.valid)
    assert bool(valid[0])
    torch.testing.assert_close(d[0], torch.tensor([0.329641, 0.0, 0.944106], dtype=torch.float64), atol=1e-6, rtol=0)
    assert math.degrees(math.asin(float(d[0, 0]))) == pytest.approx(19.2470, abs=1e-4)
    assert float(n2 * d[0, 0]) == pytest.approx(0.5, abs=1e-12)  # n1 sin_i = n2 sin_t


def test_total_internal_reflection_is_invalid_never_nan() -> None:
    n = material_from_name("N-BK7").n(WAVE_D)
    critical = math.degrees(math.asin(1 / float(n)))
    assert critical == pytest.approx(41.2452, abs=1e-4)
    angles = torch.tensor([critical - 0.01, critical + 0.01, 60.0], dtype=torch.float64).deg2rad()
    d = torch.stack([angles.sin(), torch.zeros_like(angles), angles.cos()], dim=-1).requires_grad_(True)
    new_d, valid = refract(d, torch.tensor([0.0, 0.0, -1.0], dtype=torch.float64).expand(3, 3), n,
                           torch.ones(3, dtype=torch.bool))
    assert valid.tolist() == [True, False, False]
    new_d.sum().backward()
    assert torch.isfinite(new_d).all() and torch.isfinite(d.grad).all()


def _newton_surface() -> EvenAsphere:
    return EvenAsphere(1 / 20, 5.0, 10.0, material_from_name("N-BK7"), k=-0.5, ai=(1e-4,))


def test_newton_intersection_normal_and_refraction() -> None:
    surface = _newton_surface()
    hit = surface.intersect(_ray((0, 0.1, 1), origin=(0, 1, 0)))
    torch.testing.assert_close(hit.o[0], torch.tensor([0, 1.5057234, 5.0572343], dtype=torch.float64),
                               atol=1e-7, rtol=0)
    assert float((hit.o[0] - torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)).norm().detach()) == pytest.approx(
        5.0824576, abs=1e-7)
    normal = surface.normal(hit.o)
    torch.testing.assert_close(normal[0], torch.tensor([0, 0.0765335, -0.9970670], dtype=torch.float64),
                               atol=1e-7, rtol=0)
    d, _ = refract(hit.d, normal, 1 / surface.mat2.n(WAVE_D), hit.valid)
    torch.testing.assert_close(d[0], torch.tensor([0, 0.0392561, 0.9992292], dtype=torch.float64),
                               atol=1e-7, rtol=0)


def test_newton_converges_from_the_vertex_plane_in_two_steps() -> None:
    surface, ray = _newton_surface(), _ray((0, 0.1, 1), origin=(0, 1, 0))
    t = (surface.d - ray.o[..., 2]) / ray.d[..., 2]
    residuals = []
    with torch.no_grad():
        for _ in range(2):
            f, df = surface._residual(ray, t)
            t = t - f / df
            residuals.append(abs(float(surface._residual(ray, t)[0])))
    assert 1e-7 < residuals[0] < 2e-6 and residuals[1] < 1e-12


def test_intersection_gradient_matches_finite_differences() -> None:
    surface, ray = _newton_surface(), _ray((0, 0.1, 1), origin=(0, 1, 0))
    surface.intersect(ray).o[0, 2].backward()
    h = 1e-6
    with torch.no_grad():
        surface.c += h
        z_plus = float(surface.intersect(ray).o[0, 2])
        surface.c -= 2 * h
        z_minus = float(surface.intersect(ray).o[0, 2])
        surface.c += h
    assert float(surface.c.grad) == pytest.approx((z_plus - z_minus) / (2 * h), rel=1e-6)


def test_rays_missing_a_surface_are_invalid_and_keep_finite_gradients() -> None:
    surface = EvenAsphere(1 / 5, 0.0, 4.0, material_from_name("N-BK7"))  # domain rho < 5, aperture 4
    o = torch.tensor([[0.0, 0.0, -1.0], [0.0, 4.5, -1.0], [0.0, 6.0, -1.0]], dtype=torch.float64)
    rays = Rays(o, torch.tensor([[0.0, 0.0, 1.0]] * 3, dtype=torch.float64), torch.ones(3, dtype=torch.bool), WAVE_D)
    hit = surface.intersect(rays)
    assert hit.valid.tolist() == [True, False, False]
    hit.o.sum().backward()
    assert torch.isfinite(hit.o).all() and torch.isfinite(surface.c.grad)


# ---- 7.4 singlets, 7.2 Cooke triplet, 7.3 Double Gauss: paraxial


@pytest.mark.parametrize("name, efl, bfd", [
    ("singlet_biconvex_r50", 49.2130, 47.5362), ("singlet_example1", 39.2005, None),
    ("singlet_lb1471a", 49.8274, None), ("singlet_planoconvex", 50.000, None),
    ("cooke_triplet", 50.0214, 42.4364), ("double_gauss", 99.5009, 57.4981),
])
def test_paraxial_focal_length_and_back_focal_distance(name: str, efl: float, bfd: float | None) -> None:
    lens = load(name)
    assert lens.foclen == pytest.approx(efl, abs=1e-4)
    if bfd is not None:
        assert float(lens.paraxial_bfd()) == pytest.approx(bfd, abs=1e-4)


def test_thick_singlet_is_not_the_thin_lens_estimate() -> None:
    assert abs(load("singlet_biconvex_r50").foclen - 48.375) > 0.8


def test_cooke_triplet_paraxial_colour_f_number_and_stop() -> None:
    lens = load("cooke_triplet")
    for wvln, efl in ((WAVE_F, 49.9866), (WAVE_C, 50.0709)):
        assert 1 / float(lens.paraxial_power(wvln)) == pytest.approx(efl, abs=1e-4)
    assert lens.fnum == pytest.approx(5.002, abs=1e-3)
    assert lens.surfaces[lens.stop_index].r == pytest.approx(3.8046, abs=1e-4)
    assert float(lens.entrance_pupil()[1]) == pytest.approx(5.0, abs=1e-6)
    assert load("double_gauss").fnum == pytest.approx(2.988, abs=1e-3)


def test_real_ray_focal_length_of_the_cooke_triplet() -> None:
    lens = load("cooke_triplet")
    rays = lens.trace(_ray((0, 0, 1), origin=(0, 1e-4, -5)))
    assert 1e-4 / -float(rays.d[0, 1] / rays.d[0, 2]) == pytest.approx(50.02135, abs=1e-4)


# ---- on-axis RMS spot (uniform square-grid pupil, collimated, image plane of the prescription)


def _open_stop(lens: Lens) -> Lens:
    """Stop and apertures larger than every ray: the pupil is then exactly the sampled disc."""
    for surface in lens.surfaces:
        surface.r = 1.5 * surface.r
    return lens


@pytest.mark.parametrize("name, epd, expected_um, grid", [
    ("cooke_triplet", 10.0, {WAVE_D: 4.828, WAVE_F: 3.941, WAVE_C: 7.008}, 101),
    ("double_gauss", 33.3, {WAVE_D: 8.294}, 301),  # converges more slowly with the grid
])
def test_on_axis_rms_spot(name: str, epd: float, expected_um: dict, grid: int) -> None:
    lens, pupil = _open_stop(load(name)), pupil_samples(grid, "square")
    pooled = []
    for wvln, rms in expected_um.items():
        xy, valid = trace_fields(lens, torch.zeros(1, 2), INF, wvln, pupil, hfov=0.1, pupil_scale=1.0,
                                 pupil_radius_mm=epd / 2)
        assert bool(valid.all())  # the stop is larger than every ray: nothing is vignetted
        assert float(rms_spot(xy, valid)) * 1000 == pytest.approx(rms, abs=0.01)
        pooled.append((xy, valid))
    if len(pooled) == 3:  # F + d + C pooled about their common centroid
        xy, valid = torch.cat([p[0] for p in pooled], 1), torch.cat([p[1] for p in pooled], 1)
        assert float(rms_spot(xy, valid)) * 1000 == pytest.approx(5.414, abs=0.01)


@pytest.mark.parametrize("angle, height, exit_angle", [(10, 8.7819, 9.750), (14, 12.4195, 13.615),
                                                      (20, 18.1382, 19.323)])
def test_cooke_real_chief_ray_heights(angle: float, height: float, exit_angle: float) -> None:
    lens = load("cooke_triplet")
    direction = (0.0, math.sin(math.radians(angle)), math.cos(math.radians(angle)))
    stop = lens.stop_index
    y0, y1 = 0.0, 1.0  # secant on the launch height so the ray crosses the stop at its centre
    f0, f1 = (float(lens.trace(_ray(direction, (0, y, -5)), upto=stop + 1).o[0, 1]) for y in (y0, y1))
    for _ in range(20):
        y0, y1, f0 = y1, y1 - f1 * (y1 - y0) / (f1 - f0), f1
        f1 = float(lens.trace(_ray(direction, (0, y1, -5)), upto=stop + 1).o[0, 1])
        if abs(f1) < 1e-12:
            break
    rays = lens.trace_to_sensor(_ray(direction, (0, y1, -5)))
    # A ray climbing from below the axis images above it.
    assert float(rays.o[0, 1]) == pytest.approx(height, abs=1e-4)
    assert math.degrees(math.atan2(float(rays.d[0, 1]), float(rays.d[0, 2]))) == pytest.approx(exit_angle, abs=1e-3)


def test_float32_agrees_with_float64_on_the_cooke_triplet() -> None:
    spots = []
    for dtype in (torch.float64, torch.float32):
        lens, pupil = load("cooke_triplet", dtype), pupil_samples(1024)
        xy, valid = trace_fields(lens, torch.tensor([[0.0, 0.0], [0.0, 1.0]]), -20000.0, WAVE_D, pupil)
        spots.append(rms_spot(xy.double(), valid))
    torch.testing.assert_close(spots[1], spots[0], rtol=1e-3, atol=1e-5)


# ---- spot statistics and PSF


def test_uniform_disc_rms_is_a_over_root_two_not_the_mean_radius() -> None:
    a = 0.005
    disc = pupil_samples(200_000) * a
    valid = torch.ones(disc.shape[0], dtype=torch.bool)
    assert float(rms_spot(disc, valid)) == pytest.approx(a / math.sqrt(2), rel=1e-4)
    assert float(disc.norm(dim=-1).mean()) == pytest.approx(2 * a / 3, rel=1e-4)


def test_rms_ignores_invalid_rays_and_survives_a_field_without_rays() -> None:
    xy = torch.tensor([[[0.0, 0.0], [2.0, 0.0], [1e9, 1e9]], [[5.0, 5.0], [1.0, 1.0], [0.0, 0.0]]])
    valid = torch.tensor([[True, True, False], [False, False, False]])
    rms = rms_spot(xy, valid)
    assert float(rms[0]) == pytest.approx(1.0, abs=1e-5) and float(rms[1]) == pytest.approx(0.0, abs=1e-5)


def test_psf_sums_to_one_and_bilinear_binning_puts_mass_where_the_rays_land() -> None:
    xy = torch.tensor([[0.25, 0.0], [0.0, 1.0]], dtype=torch.float64)  # pixel units of 1 mm
    psf = psf_binned(xy, torch.ones(2, dtype=torch.bool), 5, 1.0)
    assert float(psf.sum()) == pytest.approx(1.0, abs=1e-12)
    assert float(psf[2, 2]) == pytest.approx(0.375) and float(psf[2, 3]) == pytest.approx(0.125)
    assert float(psf[1, 2]) == pytest.approx(0.5)  # +y is up: row 1 above the centre row 2


def test_psf_rgb_of_the_cooke_triplet() -> None:
    lens = load("cooke_triplet")
    psf = psf_rgb(lens, (0.0, 0.7), -20000.0, ks=21, spp=1024, pixel_size_mm=0.01)
    assert psf.shape == (3, 21, 21)
    torch.testing.assert_close(psf.sum((1, 2)), torch.ones(3, dtype=torch.float64), atol=1e-6, rtol=0)
    psf[1, 10, 10].backward()
    assert lens.surfaces[0].c.grad is not None and torch.isfinite(lens.surfaces[0].c.grad)


def test_rms_spot_gradient_matches_finite_differences() -> None:
    lens, pupil = load("cooke_triplet"), pupil_samples(256)
    fields = torch.tensor([[0.0, 0.0], [0.0, 0.7]])

    def spot() -> torch.Tensor:
        # Fixed field angle and pupil size: they would otherwise follow the lens's paraxial values.
        xy, valid = trace_fields(lens, fields, -20000.0, WAVE_D, pupil, hfov=0.35, pupil_scale=0.95,
                                 pupil_radius_mm=5.0)
        return rms_spot(xy, valid).mean()

    spot().backward()
    # Surfaces behind the stop: in front of it a change also moves the entrance pupil the rays aim at,
    # which the sampling treats as fixed (no gradient through the ray aiming).
    for param, h in ((lens.surfaces[4].c, 1e-7), (lens.surfaces[6].d, 1e-6), (lens.d_sensor, 1e-6)):
        grad = float(param.grad)
        with torch.no_grad():
            param += h
            plus = float(spot())
            param -= 2 * h
            minus = float(spot())
            param += h
        assert grad == pytest.approx((plus - minus) / (2 * h), rel=1e-4, abs=1e-9)


# ---- prescription files


def test_prescription_round_trip(tmp_path: Path) -> None:
    lens = load("cooke_triplet")
    lens.save_json(tmp_path / "lens.json")
    again = Lens.from_json(tmp_path / "lens.json")
    assert again.foclen == pytest.approx(lens.foclen, abs=1e-9)
    for a, b in zip(lens.state_dict().values(), again.state_dict().values()):
        torch.testing.assert_close(a, b)
    assert [type(s) for s in again.surfaces] == [type(s) for s in lens.surfaces]
    assert isinstance(again.surfaces[lens.stop_index], ApertureStop)


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ('{"surfaces": []}', "non-empty 'surfaces'"),
    ('{"d_sensor": 5, "surfaces": [{"type": "spheric", "d": 0, "mat2": "N-BK7", "c": 0.1}]}',
     r"surfaces\[0\] has no 'r'"),
    ('{"d_sensor": 5, "surfaces": [{"type": "toric", "d": 0, "r": 1}]}', "use one of spheric, aspheric"),
    ('{"d_sensor": 5, "surfaces": [{"type": "spheric", "d": 0, "r": 1, "mat2": "air"}]}', "needs 'c'"),
    ('{"surfaces": [{"type": "plane", "d": 0, "r": 1, "mat2": "air"}]}', "has no 'd_sensor'"),
])
def test_malformed_prescription_is_one_clear_error(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message) as info:
        Lens.from_json(path)
    assert str(path) in str(info.value)


def test_missing_prescription_names_the_examples(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file.*prescriptions"):
        Lens.from_json(tmp_path / "nope.json")


def test_shipped_prescriptions_are_valid_json_with_a_name() -> None:
    files = sorted(PRESCRIPTIONS.glob("*.json"))
    assert len(files) >= 7
    for path in files:
        assert json.loads(path.read_text())["name"]


@pytest.mark.parametrize("depth", [INF, -20000.0])
def test_off_axis_image_is_inverted_at_f_tan_theta(depth: float) -> None:
    lens = load("cooke_triplet")
    fields = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    xy, valid = trace_fields(lens, fields, depth, WAVE_D, pupil_samples(512), hfov=math.radians(20), pupil_scale=0.9)
    centroid = (xy * valid.unsqueeze(-1)).sum(1) / valid.sum(1, keepdim=True)
    expected = -50.02 * math.tan(math.radians(20))  # the chief ray lands at 18.1382 mm (distortion -0.37 %)
    assert float(centroid[0, 1]) == pytest.approx(expected, abs=0.12)
    assert float(centroid[1, 0]) == pytest.approx(expected, abs=0.12)
