"""A sequential lens: surfaces in order along +z, a sensor plane, JSON prescriptions, paraxial optics.

Prescription JSON (mm; `lightning_modules/optics/prescriptions/*.json` are examples):

    {
      "name": "Cooke triplet",                  optional, free text
      "d_sensor": 60.44,                         z of the sensor plane
      "sensor_size_mm": [25.7, 25.7],           sensor height, width (mm)
      "sensor_res": [512, 512],                  sensor pixels (rows, columns)
      "surfaces": [                              in order; the object is at z < surfaces[0].d
        {"type": "spheric",  "d": 0.0, "r": 8.0, "roc": 22.01359, "mat2": "N-SK16"},
        {"type": "aspheric", "d": 3.3, "r": 8.0, "c": 0.05, "k": -0.5, "ai": [1e-4, 0.0], "mat2": "air"},
        {"type": "plane",    "d": 9.0, "r": 8.0, "mat2": "F2"},
        {"type": "stop",     "d": 12.0, "r": 3.8}
      ]
    }

`d` is the absolute z of each vertex, `r` the clear semi-aperture, `mat2` the medium behind the surface
('air', a catalogue glass, or 'n_d/V_d'). Curvature is `c` (1/mm) or `roc` (mm; 0 or null = flat). `ai`
lists a4, a6, ... (no rho^2 term). A stop only clips: the medium behind it is the one in front.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lightning_modules.optics.materials import WAVE_D, Air, Material, material_from_name
from lightning_modules.optics.rays import Rays, refract
from lightning_modules.optics.surfaces import ApertureStop, EvenAsphere, Surface
from tenfold.errors import ConfigError

PRESCRIPTIONS = Path(__file__).parent / "prescriptions"  # the lenses that ship with the code
REPO = Path(__file__).resolve().parents[2]

DEPTH_INFINITY_MM = -20000.0  # "infinity", as in the official code
SURFACE_TYPES = ("spheric", "aspheric", "plane", "stop")


class Lens(nn.Module):
    def __init__(self, surfaces: list[Surface], d_sensor: float, sensor_size_mm: tuple[float, float],
                 sensor_res: tuple[int, int], name: str = "", dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        self.surfaces = nn.ModuleList(surfaces)
        self.d_sensor = nn.Parameter(torch.tensor(float(d_sensor), dtype=dtype))
        self.sensor_size_mm = (float(sensor_size_mm[0]), float(sensor_size_mm[1]))
        self.sensor_res = (int(sensor_res[0]), int(sensor_res[1]))
        self.name = name
        # True: `trace` runs through torch.compile (see `compiled_trace`); the first call compiles.
        self.compiled = False

    # ---- basic properties

    @property
    def dtype(self) -> torch.dtype:
        return self.d_sensor.dtype

    @property
    def stop_index(self) -> int | None:
        return next((i for i, s in enumerate(self.surfaces) if s.is_stop), None)

    @property
    def r_sensor(self) -> float:
        """Half diagonal of the sensor (mm): the image height of the full field."""
        return math.hypot(*self.sensor_size_mm) / 2

    @property
    def pixel_size_mm(self) -> float:
        return self.sensor_size_mm[0] / self.sensor_res[0]

    @property
    def foclen(self) -> float:
        """Paraxial effective focal length at the d line (mm); inf for a lens without power."""
        with torch.no_grad():
            power = float(self.paraxial_power(WAVE_D))
        return 1.0 / power if power != 0 else math.inf

    @property
    def fnum(self) -> float:
        with torch.no_grad():
            return self.foclen / (2 * float(self.entrance_pupil()[1]))

    @property
    def hfov(self) -> float:
        """Half-diagonal field of view (rad) that fills the sensor with the paraxial focal length."""
        return math.atan(self.r_sensor / self.foclen)

    def media(self) -> list[tuple[Material, Material]]:
        """(medium in front, medium behind) for every surface."""
        out, current = [], Air()
        for surface in self.surfaces:
            behind = current if surface.is_stop else surface.mat2
            out.append((current, behind))
            current = behind
        return out

    # ---- real ray tracing

    def trace(self, rays: Rays, upto: int | None = None) -> Rays:
        """Trace through surfaces[:upto] (all by default), refracting at every non-stop surface."""
        if self.compiled and upto is None:
            return compiled_trace()(self, rays)
        return self.trace_path(rays, upto)[-1]

    def trace_path(self, rays: Rays, upto: int | None = None) -> list[Rays]:
        """The bundle as it leaves each of surfaces[:upto] (for layouts and aperture sizing)."""
        path = []
        for surface, (front, behind) in list(zip(self.surfaces, self.media()))[:upto]:
            rays = surface.intersect(rays)
            if not surface.is_stop:
                eta = self._index(front, rays) / self._index(behind, rays)
                d, valid = refract(rays.d, surface.normal(rays.o), eta, rays.valid)
                rays = rays.moved(rays.o, d, valid)
            path.append(rays)
        return path

    def _index(self, material: Material, rays: Rays) -> Tensor:
        """n of `material` for the bundle: a scalar, or (W, 1, ..) when the bundle stacks W wavelengths."""
        if isinstance(rays.wvln_nm, (int, float)):
            return material.n(rays.wvln_nm).to(self.dtype)
        n = torch.stack([material.n(w) for w in rays.wvln_nm]).to(self.dtype)
        return n.view(-1, *[1] * (rays.valid.ndim - 1))

    def trace_to_sensor(self, rays: Rays) -> Rays:
        return self.trace(rays).propagate_to_z(self.d_sensor)

    # ---- paraxial optics (differentiable; (y, n u) matrices, paraxial curvature = c)

    def _paraxial_matrix(self, wvln_nm: float, upto: int | None = None) -> Tensor:
        """2x2 matrix from the first vertex (object side, air) to surfaces[upto] (after the last by default)."""
        m = torch.eye(2, dtype=self.dtype)
        surfaces = list(self.surfaces)
        stop = len(surfaces) if upto is None else upto
        for i, (surface, (front, behind)) in enumerate(zip(surfaces, self.media())):
            if i > 0 and i <= stop:
                gap = surface.d - surfaces[i - 1].d
                n = front.n(wvln_nm).to(self.dtype)
                m = torch.stack([torch.stack([m[0, 0] + gap / n * m[1, 0], m[0, 1] + gap / n * m[1, 1]]), m[1]])
            if i >= stop:
                break
            if not surface.is_stop:
                power = (behind.n(wvln_nm).to(self.dtype) - front.n(wvln_nm).to(self.dtype)) * surface.c
                m = torch.stack([m[0], torch.stack([m[1, 0] - power * m[0, 0], m[1, 1] - power * m[0, 1]])])
        return m

    def paraxial_power(self, wvln_nm: float = WAVE_D) -> Tensor:
        """1 / EFL (1/mm), a differentiable tensor that stays finite for a flat lens."""
        return -self._paraxial_matrix(wvln_nm)[1, 0]

    def paraxial_bfd(self, wvln_nm: float = WAVE_D) -> Tensor:
        """Back focal distance from the last vertex to the paraxial focus (mm)."""
        m = self._paraxial_matrix(wvln_nm)
        return -m[0, 0] / m[1, 0]

    def entrance_pupil(self, wvln_nm: float = WAVE_D) -> tuple[Tensor, Tensor]:
        """(z, radius) of the image of the stop seen from object space; the first vertex if no stop."""
        first = self.surfaces[0].d
        if self.stop_index is None:
            return first, torch.tensor(self.surfaces[0].r, dtype=self.dtype)
        m = self._paraxial_matrix(wvln_nm, upto=self.stop_index)
        # Chief rays y_stop = A y0 + B u0 = 0 cross the axis at z0 + B/A; the stop images with magnification A.
        return first + m[0, 1] / m[0, 0], self.surfaces[self.stop_index].r / m[0, 0].abs()

    # ---- object points and rays

    def object_points(self, fields: Tensor, depth_mm: float, hfov: float | None = None) -> Tensor:
        """(F, 3) object points for normalized fields (F, 2) in [-1, 1]^2 (1 = half-diagonal FoV `hfov`).

        The points lie on the chief-ray directions through the entrance pupil. `depth_mm = -inf` means
        truly collimated light: the points are then (tan x, tan y, -inf), directions rather than positions.
        """
        hfov = self.hfov if hfov is None else hfov
        tan_xy = fields.to(torch.float64) * math.tan(hfov)
        if math.isinf(depth_mm):
            return torch.cat([tan_xy, torch.full_like(tan_xy[:, :1], -math.inf)], dim=1)
        with torch.no_grad():
            z_ep = float(self.entrance_pupil()[0])
        return torch.cat([tan_xy * (z_ep - depth_mm), torch.full_like(tan_xy[:, :1], depth_mm)], dim=1)

    def rays_from_points(self, points: Tensor, wvln_nm: float, pupil: Tensor, pupil_scale: float = 1.05,
                         pupil_radius_mm: float | None = None) -> Rays:
        """Rays (F, N) from object points (F, 3) to the entrance-pupil points `pupil` (N, 2) in the unit disc.

        The pupil is over-filled by `pupil_scale` so that the stop, not the sampling, does the clipping.
        Computed in float64 (origins may be 20 m away), then started just before the first surface.
        """
        with torch.no_grad():
            z_ep, r_ep = (float(v) for v in self.entrance_pupil())
        r_ep = r_ep if pupil_radius_mm is None else pupil_radius_mm
        points = points.to(torch.float64)
        q = pupil.to(torch.float64) * r_ep * pupil_scale  # (N, 2)
        target = torch.cat([q, torch.full_like(q[:, :1], z_ep)], dim=1).unsqueeze(0)  # (1, N, 3)
        if torch.isinf(points[:, 2]).all():  # collimated from an object far out at +(tan x, tan y)
            d = torch.cat([-points[:, :2], torch.ones_like(points[:, :1])], dim=1).unsqueeze(1)
        else:
            d = target - points.unsqueeze(1)  # (F, N, 3)
        d = (d / d.norm(dim=-1, keepdim=True)).expand(points.shape[0], q.shape[0], 3)
        z_start = min(z_ep, float(self.surfaces[0].d.detach()) - self.surfaces[0].r) - 1.0
        z_start = max(z_start, float(points[:, 2].max()))  # a near object starts where it is
        o = target + ((z_start - z_ep) / d[..., 2]).unsqueeze(-1) * d
        valid = torch.ones(o.shape[:-1], dtype=torch.bool)
        return Rays(o.to(self.dtype), d.to(self.dtype), valid, wvln_nm)

    # ---- prescription files

    @classmethod
    def from_json(cls, path: str | Path, dtype: torch.dtype = torch.float64, key: str = "lens prescription",
                  strict: bool = True) -> Lens:
        """Read a prescription (ours, the official DeepLens JSON, or a Zemax .zmx); a relative path is looked
        up as given, then from the repository root (configs name the shipped files so). `key` names the config
        key in the error message; `strict=False` accepts overlapping vertices (to score a failed design)."""
        path = Path(path)
        if not path.is_file() and not path.is_absolute() and (REPO / path).is_file():
            path = REPO / path
        if not path.is_file():
            raise ConfigError(f"{key}={path}: no such file. Point it at a lens prescription JSON, e.g. one of "
                              f"{PRESCRIPTIONS}/*.json or the export/lens.json of a deeplens run")
        from lightning_modules.optics import formats

        if path.suffix.lower() == ".zmx":
            return cls.from_dict(formats.prescription_from_zmx(_read_text(path), str(path)), dtype, str(path), strict)
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}); see the schema in "
                              f"{__file__}") from None
        if formats.is_deeplens_dict(data):  # the official DeepLens JSON (per-surface d_next)
            data = formats.prescription_from_deeplens(data, str(path))
        return cls.from_dict(data, dtype=dtype, source=str(path), strict=strict)

    @classmethod
    def from_dict(cls, data: dict, dtype: torch.dtype = torch.float64, source: str = "prescription",
                  strict: bool = True) -> Lens:
        def need(mapping: dict, key: str, where: str) -> Any:
            if key not in mapping:
                raise ConfigError(f"{source}: {where} has no '{key}' (the schema is in {__file__})")
            return mapping[key]

        if not isinstance(data, dict) or not isinstance(data.get("surfaces"), list) or not data["surfaces"]:
            raise ConfigError(f"{source}: needs a non-empty 'surfaces' list (the schema is in {__file__})")

        def number(mapping: dict, key: str, where: str, default: Any = None) -> float:
            value = need(mapping, key, where) if default is None else mapping.get(key, default)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"{source}: {where}.{key} is {value!r}; it must be a finite number")
            return float(value)

        surfaces, previous_d, previous_i = [], None, None
        for i, s in enumerate(data["surfaces"]):
            where = f"surfaces[{i}]"
            if not isinstance(s, dict):
                raise ConfigError(f"{source}: {where} is {s!r}; each surface is an object (schema in {__file__})")
            kind = need(s, "type", where)
            if kind not in SURFACE_TYPES:
                raise ConfigError(f"{source}: {where}.type is '{kind}'; use one of {', '.join(SURFACE_TYPES)}")
            d, r = number(s, "d", where), number(s, "r", where)
            if r <= 0:
                raise ConfigError(f"{source}: {where}.r is {r}; the clear semi-aperture must be positive")
            if strict and previous_d is not None and d < previous_d:
                raise ConfigError(f"{source}: {where}.d is {d} < surfaces[{previous_i}].d = {previous_d}: negative "
                                  f"thickness {d - previous_d:g} mm (d is the absolute vertex z, increasing)")
            if kind != "stop":
                # A stop may touch the next surface's vertex (the Cooke triplet's does), and a trained lens
                # moves the two apart by microns either way; only refracting vertices must not cross.
                previous_d, previous_i = d, i
            for key in ("c", "roc", "k"):
                if key in s and not (key == "roc" and s[key] is None):
                    number(s, key, where)
            if not isinstance(s.get("ai", []), list):
                raise ConfigError(f"{source}: {where}.ai is {s['ai']!r}; it must be a list of numbers (a4, a6, ...)")
            for j, a in enumerate(s.get("ai", [])):
                number({f"ai[{j}]": a}, f"ai[{j}]", where)
            if kind == "stop":
                surfaces.append(ApertureStop(d, r, Air(), dtype))
                continue
            mat2 = material_from_name(str(need(s, "mat2", where)))
            c = 0.0 if kind == "plane" else _curvature(s, where, source)
            k = float(s.get("k", 0.0)) if kind == "aspheric" else 0.0
            ai = [float(a) for a in s.get("ai", [])] if kind == "aspheric" else []
            surfaces.append(EvenAsphere(c, d, r, mat2, k=k, ai=ai, dtype=dtype))
        d_sensor = number(data, "d_sensor", "the top level")
        if strict and d_sensor < previous_d:
            raise ConfigError(f"{source}: d_sensor = {d_sensor} lies in front of the last surface "
                              f"(d = {previous_d}): negative back focal distance")
        size = data.get("sensor_size_mm")
        if size is None:  # a square sensor from the older "r_sensor" key
            side = float(need(data, "r_sensor", "the top level (sensor_size_mm or r_sensor)")) * math.sqrt(2)
            size = [side, side]
        res = data.get("sensor_res", [512, 512])
        return cls(surfaces, d_sensor, tuple(size), tuple(res), name=data.get("name", ""), dtype=dtype)

    @torch.no_grad()
    def to_dict(self) -> dict:
        surfaces = []
        for s in self.surfaces:
            entry: dict[str, Any] = {"d": float(s.d), "r": s.r}
            if s.is_stop:
                entry["type"] = "stop"
            elif s.is_aspheric:
                entry.update(type="aspheric", c=float(s.c), k=float(s.k), ai=[float(a) for a in s.ai])
            elif float(s.c) == 0:
                entry["type"] = "plane"
            else:
                entry.update(type="spheric", c=float(s.c))
            if not s.is_stop:
                entry["mat2"] = s.mat2.name
            surfaces.append({"type": entry.pop("type"), **entry})
        return {
            "name": self.name,
            "foclen": _finite_or_none(self.foclen),
            "fnum": _finite_or_none(self.fnum),
            "d_sensor": float(self.d_sensor),
            "sensor_size_mm": list(self.sensor_size_mm),
            "sensor_res": list(self.sensor_res),
            "surfaces": surfaces,
        }

    def save_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")


@functools.cache
def compiled_trace():
    """`Lens.trace` through torch.compile (Inductor), built on first use.

    Eager tracing is memory- and dispatch-bound: ~60 elementwise ops per surface, each a full pass over the
    rays, all saved for backward. Inductor fuses them into a few loops forward and backward (2.8-4.1x the
    rays/s of eager in fp64 forward+backward, `benchmarks/deeplens_vs_official.py`), for a one-off compile per
    lens and ray shape: about a minute for the Cooke triplet on 2 CPU cores, 12-17 min for the cellphone lens
    (12 aspheres, Newton unrolled). Gradients equal eager's to rounding.
    """
    return torch.compile(lambda lens, rays: lens.trace_path(rays)[-1])


def lens_from_prescription(prescription: dict) -> Lens:
    """Export builder (export_meta.yaml names it): the lens of a prescription dict, in float64 as exported."""
    return Lens.from_dict(prescription, dtype=torch.float64, strict=False)


def _curvature(s: dict, where: str, source: str) -> float:
    if "c" in s:
        return float(s["c"])
    if "roc" in s:
        roc = s["roc"]
        return 0.0 if roc in (None, 0) or math.isinf(float(roc)) else 1.0 / float(roc)
    raise ConfigError(f"{source}: {where} needs 'c' (curvature, 1/mm) or 'roc' (radius, mm)")


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    return raw.decode("utf-16") if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else raw.decode("utf-8", errors="replace")


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None  # JSON has no infinity (a flat lens has no focal length)
