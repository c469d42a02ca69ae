"""Lens files other tools read: the official DeepLens JSON (`GeoLens.read_lens_json`) and Zemax `.zmx`.

Both formats are sequential: each surface carries `d_next`, the axial distance to the next surface (the last
one's to the sensor), and the first surface sits at z = 0. The official JSON names surfaces `Aperture`,
`Spheric`, `Aspheric` (`ai` = [a4, a6, ...] with `use_ai2: false`) and `Plane`, wavelengths in um; Zemax
names them `STANDARD` / `EVENASPH` (PARM 1 = a2, PARM 2.. = a4..), `DIAM` is the semi-diameter, `GLAS`
a catalogue name followed by n_d and V_d.

Glasses: a Sellmeier catalogue glass is written by name (the official catalogue holds the same Schott
coefficients); a Cauchy (n_d/V_d) glass, e.g. the plastics, is written as the string 'n_d/V_d', which the
official code evaluates with the same Cauchy fit, so both tracers see the same indices. Reading maps a name
to this catalogue case-insensitively and falls back to the file's n_d/V_d.

The official `Aperture` always has air behind it. A stop that sits inside glass on a refracting surface (the
classic Cooke triplet's, on the rear vertex of the flint) is therefore written just behind the glass-air surface
that follows it, at that surface's z, in air; rays then meet it after refracting there instead of before (for
the classic Cooke a 0.7 % change of the on-axis RMS with a 5 % over-filled pupil, none when the stop edge is
not reached).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from lightning_modules.optics.lens import Lens
from lightning_modules.optics.materials import WAVE_C, WAVE_D, WAVE_F, CauchyGlass, Material, catalogue
from tenfold.errors import ConfigError

UM = 1e-3  # nm -> um


# ---- materials


def _material_out(material: Material) -> str:
    if material.is_air:
        return "air"
    if isinstance(material, CauchyGlass):
        return f"{float(material.n_d)}/{float(material.v_d)}"
    return material.name


def _material_in(name: str, nd_vd: tuple[float, float] | None = None) -> str:
    """A catalogue name of ours for a name read from a file (any case), else 'n_d/V_d'."""
    cat = catalogue()
    known = {k.lower(): k for k in [*cat["sellmeier"], *cat["nd_vd"], *cat["aliases"]]}
    if name.lower() in ("air", "vacuum"):
        return "air"
    if name.lower() in known:
        return known[name.lower()]
    if "/" in name:
        return name
    if nd_vd is not None:
        return f"{nd_vd[0]}/{nd_vd[1]}"
    return name  # material_from_name then names the catalogue in its error


# ---- the official DeepLens JSON


def _sequence(lens: Lens) -> list[dict[str, Any]]:
    """Surfaces in official order (a stop in glass moved behind its coincident surface), absolute z kept."""
    entries = []
    for surface, (front, _) in zip(lens.surfaces, lens.media()):
        entries.append({"surface": surface, "z": float(surface.d), "front": front})
    i = 0
    while i < len(entries):
        e = entries[i]
        if e["surface"].is_stop and not e["front"].is_air:
            nxt = entries[i + 1] if i + 1 < len(entries) else None
            if nxt is None or not nxt["surface"].mat2.is_air:
                raise ConfigError(f"surfaces[{i}]: the stop sits inside glass with no air behind the next surface; "
                                  "the official DeepLens and Zemax formats need the stop in air")
            # Behind the glass-air surface that follows it (a design may have moved that surface off the stop).
            e = {**e, "z": nxt["z"]}
            entries[i], entries[i + 1] = nxt, e
            i += 1
        i += 1
    return entries


@torch.no_grad()
def to_deeplens_dict(lens: Lens) -> dict[str, Any]:
    """The lens as the official DeepLens JSON (`GeoLens(filename=...)` reads it)."""
    entries = _sequence(lens)
    z0 = entries[0]["z"]
    surfaces = []
    for i, e in enumerate(entries):
        s = e["surface"]
        z_next = entries[i + 1]["z"] if i + 1 < len(entries) else float(lens.d_sensor)
        entry: dict[str, Any] = {"idx": i, "r": s.r, "d": e["z"] - z0, "d_next": z_next - e["z"]}
        if s.is_stop:
            entry.update(type="Aperture", mat2="air", is_aperture=True)
        else:
            c = float(s.c)
            entry.update(type="Aspheric" if s.is_aspheric else "Spheric", c=c, roc=1 / c if c else 0.0)
            if s.is_aspheric:
                entry.update(k=float(s.k), ai=[float(a) for a in s.ai], use_ai2=False)
            entry["mat2"] = _material_out(s.mat2)
        surfaces.append(entry)
    foclen, fnum = lens.foclen, lens.fnum
    return {
        "info": lens.name or "tenfold lens",
        "foclen": foclen if math.isfinite(foclen) else None,
        "fnum": fnum if math.isfinite(fnum) else None,
        "primary_wvln": WAVE_D * UM,
        "wvln_rgb": [WAVE_C * UM, WAVE_D * UM, WAVE_F * UM],
        "r_sensor": lens.r_sensor,
        "(d_sensor)": float(lens.d_sensor) - z0,
        "(sensor_size)": list(lens.sensor_size_mm),
        "sensor_res": list(lens.sensor_res),
        "surfaces": surfaces,
    }


def is_deeplens_dict(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("surfaces"), list) and any(
        isinstance(s, dict) and "d_next" in s for s in data["surfaces"])


def prescription_from_deeplens(data: dict, source: str = "DeepLens JSON") -> dict[str, Any]:
    """Our prescription dict (lens.py schema) from an official DeepLens JSON dict."""
    surfaces, z = [], 0.0
    for i, s in enumerate(data["surfaces"]):
        where = f"{source}: surfaces[{i}]"
        kind = s.get("type")
        try:
            d_next, r = float(s["d_next"]), float(s.get("r", s.get("l")))
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"{where} needs numeric 'd_next' and 'r'") from None
        if kind in ("Aperture", "Stop"):
            surfaces.append({"type": "stop", "d": z, "r": r})
        elif kind in ("Spheric", "Aspheric", "Plane"):
            entry: dict[str, Any] = {"d": z, "r": r, "mat2": _material_in(str(s.get("mat2", "air")))}
            if kind == "Plane":
                c = 0.0
            else:
                c = float(s["c"]) if "c" in s else (1 / float(s["roc"]) if s.get("roc") else 0.0)
            ai = [float(a) for a in s.get("ai", [])]
            if kind == "Aspheric" and s.get("use_ai2", True) and ai:
                if ai[0] != 0:
                    raise ConfigError(f"{where} has an a2 term ({ai[0]}); even aspheres here start at a4")
                ai = ai[1:]
            if kind == "Aspheric":
                entry.update(type="aspheric", c=c, k=float(s.get("k", 0.0)), ai=ai)
            else:
                entry.update(type="spheric" if c else "plane", c=c)
            surfaces.append(entry)
        else:
            raise ConfigError(f"{where}.type is '{kind}'; tenfold reads Aperture, Spheric, Aspheric and Plane")
        z += d_next
    size = data.get("(sensor_size)", data.get("sensor_size"))
    if size is None:
        side = float(data["r_sensor"]) * math.sqrt(2)
        size = [side, side]
    return {"name": str(data.get("info", "")), "d_sensor": z, "sensor_size_mm": [float(v) for v in size],
            "sensor_res": [int(v) for v in data.get("sensor_res", [2000, 2000])], "surfaces": surfaces}


# ---- Zemax .zmx


@torch.no_grad()
def to_zmx(lens: Lens) -> str:
    """A sequential Zemax file: object at infinity, the surfaces, the image plane (floating pupil)."""
    entries = _sequence(lens)
    hfov_deg = math.degrees(lens.hfov) if math.isfinite(lens.foclen) else 0.0
    gcat = "SCHOTT MISC"
    lines = ["VERS 190513 80 123457 L123457", "MODE SEQ", f"NAME {lens.name or 'tenfold lens'}",
             "UNIT MM X W X CM MR CPMM", "FLOA", f"GCAT {gcat}", "XFLN 0. 0. 0.",
             f"YFLN 0.0 {0.707 * hfov_deg} {0.99 * hfov_deg}",
             f"WAVL {WAVE_F * UM:.7f} {WAVE_D * UM:.7f} {WAVE_C * UM:.7f}", "PWAV 2",
             "SURF 0", "    TYPE STANDARD", "    CURV 0.0", "    DISZ INFINITY"]
    for i, e in enumerate(entries):
        s = e["surface"]
        z_next = entries[i + 1]["z"] if i + 1 < len(entries) else float(lens.d_sensor)
        lines.append(f"SURF {i + 1}")
        if s.is_stop:
            lines += ["    STOP", "    TYPE STANDARD", "    CURV 0.0"]
        elif s.is_aspheric:
            lines += ["    TYPE EVENASPH", f"    CURV {float(s.c)!r}"]
        else:
            lines += ["    TYPE STANDARD", f"    CURV {float(s.c)!r}"]
        lines.append(f"    DISZ {z_next - e['z']!r}")
        if not s.is_stop and not s.mat2.is_air:
            lines.append(f"    GLAS {_zmx_glass(s.mat2)}")
        lines.append(f'    DIAM {s.r!r} 1 0 0 1 ""')
        if not s.is_stop and s.is_aspheric:
            terms = [0.0, *[float(a) for a in s.ai]]
            if len(terms) > 8:
                raise ConfigError(f"surfaces[{i}]: Zemax EVENASPH holds a2..a16; this surface has {len(terms)} terms")
            lines.append(f"    CONI {float(s.k)!r}")
            lines += [f"    PARM {j + 1} {t!r}" for j, t in enumerate(terms + [0.0] * (8 - len(terms)))]
    lines += [f"SURF {len(entries) + 1}", "    TYPE STANDARD", "    CURV 0.0", "    DISZ 0.0",
              f"    DIAM {lens.r_sensor!r}"]
    return "\n".join(lines) + "\n"


def _zmx_glass(material: Material) -> str:
    from lightning_modules.optics.materials import abbe_number

    n_d, v_d = float(material.n(WAVE_D)), abbe_number(material)
    if isinstance(material, CauchyGlass):
        n_d, v_d = float(material.n_d), float(material.v_d)
        return f"___BLANK 1 0 {n_d!r} {v_d!r}"
    return f"{material.name.upper()} 0 0 {round(n_d, 6)} {round(v_d, 6)}"


def prescription_from_zmx(text: str, source: str = "zmx") -> dict[str, Any]:
    """Our prescription dict from a sequential Zemax file (STANDARD and EVENASPH surfaces, mm)."""
    surfs: dict[int, dict[str, Any]] = {}
    current = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        key, _, value = line.partition(" ")
        if key == "UNIT" and not value.upper().startswith("MM"):
            raise ConfigError(f"{source}: UNIT {value.split()[0]}; only millimetres are read")
        if key == "SURF":
            current = int(value.split()[0])
            surfs[current] = {}
        elif current is not None:
            if key == "STOP":
                surfs[current]["STOP"] = True
            elif key == "PARM":
                index, coefficient = value.split()[:2]
                surfs[current][f"PARM{int(index)}"] = coefficient
            else:
                surfs[current][key] = value
    last = max(surfs)
    surfaces, z = [], 0.0

    def number(s: dict, key: str, index: int, default: float = 0.0) -> float:
        try:
            return float(s[key].split()[0]) if key in s else default
        except ValueError:
            raise ConfigError(f"{source}: SURF {index} {key} '{s[key]}' is not a number") from None

    for index in sorted(surfs):
        if index == 0 or index == last:
            continue
        s = surfs[index]
        kind = s.get("TYPE", "STANDARD").split()[0]
        if kind not in ("STANDARD", "EVENASPH"):
            raise ConfigError(f"{source}: SURF {index} is {kind}; tenfold reads STANDARD and EVENASPH surfaces")
        c, r, k = number(s, "CURV", index), number(s, "DIAM", index, 1.0), number(s, "CONI", index)
        d_next = number(s, "DISZ", index)
        glass = s.get("GLAS")
        if glass is None:
            mat2 = "air"
        else:
            parts = glass.split()
            nd_vd = (float(parts[3]), float(parts[4])) if len(parts) >= 5 else None
            mat2 = f"{parts[3]}/{parts[4]}" if parts[0] == "___BLANK" else _material_in(parts[0], nd_vd)
        params = [number(s, f"PARM{j}", index) for j in range(1, 9)]
        if s.get("STOP") and c == 0 and mat2 == "air" and (not surfaces or surfaces[-1].get("mat2", "air") == "air"):
            surfaces.append({"type": "stop", "d": z, "r": r})
        else:
            if s.get("STOP"):  # a stop on a refracting surface: a stop at its vertex, then the surface
                surfaces.append({"type": "stop", "d": z, "r": r})
            if kind == "EVENASPH" or k != 0:
                if params[0] != 0:
                    raise ConfigError(f"{source}: SURF {index} has an a2 term (PARM 1); even aspheres here start at a4")
                ai = params[1:]
                while ai and ai[-1] == 0:
                    ai.pop()
                surfaces.append({"type": "aspheric", "d": z, "r": r, "c": c, "k": k, "ai": ai, "mat2": mat2})
            else:
                surfaces.append({"type": "spheric" if c else "plane", "d": z, "r": r, "c": c, "mat2": mat2})
        z += d_next
    r_sensor = number(surfs[last], "DIAM", last, 1.0)
    side = 2 * r_sensor / math.sqrt(2)
    return {"name": source, "d_sensor": z, "sensor_size_mm": [side, side], "sensor_res": [1024, 1024],
            "surfaces": surfaces}


# ---- files


def save_deeplens_json(lens: Lens, path: str | Path) -> None:
    import json

    Path(path).write_text(json.dumps(to_deeplens_dict(lens), indent=2) + "\n")


def save_zmx(lens: Lens, path: str | Path) -> None:
    Path(path).write_text(to_zmx(lens))
