"""tenfold's ray tracer against the official DeepLens (`deeplens-core` GeoLens), same lens, same rays, one run.

The classic Cooke triplet (lightning_modules/optics/prescriptions/cooke_triplet.json) is written in the official
JSON format and loaded by `GeoLens`; both tracers then get the same ray origins and directions:

  * on-axis:  1e5 and 1e6 collimated rays at 587.6 nm over 0.95 of the entrance pupil;
  * fields:   9 fields (0 .. 1 of the 20 deg half-FoV) x 3 wavelengths (656/588/486 nm) x 4096 rays
              (tenfold traces the three wavelengths as one batch; GeoLens takes one wavelength per Ray);

in float32 and float64, forward only (no autograd) and forward + backward (the RMS spot's gradient with
respect to every curvature and spacing). Before timing, the EFL and the RMS spot of both are checked equal.
Rays/s is the median over interleaved repeats (tenfold, official, tenfold, ...); peak memory is the rise of
the process's resident set during one call (VmHWM after resetting it through /proc/self/clear_refs). Then one
design step (RMS to the pinhole points over the 9 fields x 3 wavelengths x 256 rays, backward, Adam) in both.

Setup of the official side (its own venv; it shares this project's torch build so both run the same kernels;
deeplens-core 2.5.6 declares Python >= 3.12 but runs on this 3.11):

    python benchmarks/deeplens_vs_official.py --setup      # creates /work/venvs/deeplens
    /work/venvs/deeplens/bin/python benchmarks/deeplens_vs_official.py [--quick] [--device cuda]

Run from the project venv without the official package, it re-executes itself in that venv if it exists and
otherwise prints why the official columns are skipped.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lightning_modules.optics import Lens, pupil_samples, rms_spot  # noqa: E402
from lightning_modules.optics.formats import save_deeplens_json  # noqa: E402
from lightning_modules.optics.materials import WAVE_C, WAVE_D, WAVE_F  # noqa: E402
from lightning_modules.optics.rays import Rays  # noqa: E402

VENV = Path(os.environ.get("DEEPLENS_VENV", "/work/venvs/deeplens"))
COOKE = REPO / "lightning_modules" / "optics" / "prescriptions" / "cooke_triplet.json"
HFOV = math.radians(20.0)
WAVES = (WAVE_C, WAVE_D, WAVE_F)


def setup() -> None:
    """The official package in its own venv, reusing this interpreter's torch through a .pth file."""
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    site = VENV / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    (site / "_project_torch.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = [str(VENV / "bin" / "python"), "-m", "pip", "install", "--no-deps", "--ignore-requires-python"]
    subprocess.run([*pip, "deeplens-core==2.5.6", "einops", "lpips"], check=True)
    print(f"official DeepLens installed in {VENV}")


# ---- memory and timing


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    return 0


def peak_rise(fn, device: str) -> int:
    """Bytes: how far this call lifts the peak (GPU allocator, or the process's resident set on CPU)."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    base = _status("VmRSS")
    fn()
    return _status("VmHWM") - base


def timed(fn, device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


# ---- the two tracers on the same rays


def launch(lens: Lens, fields: torch.Tensor, n: int, fill: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(F, N, 3) origins and directions of collimated rays, in the official frame (first vertex at z = 0)."""
    points = lens.object_points(fields, -math.inf, HFOV)
    rays = lens.rays_from_points(points, WAVE_D, pupil_samples(n), pupil_scale=fill)
    o = rays.o.detach().clone()
    o[..., 2] -= float(lens.surfaces[0].d.detach())
    return o, rays.d.detach().clone()


def ours_fn(lens: Lens, o: torch.Tensor, d: torch.Tensor, waves: tuple[float, ...]):
    z0 = float(lens.surfaces[0].d.detach())
    o = o.clone()
    o[..., 2] += z0
    w = len(waves)
    o_w, d_w = o.expand(w, *o.shape), d.expand(w, *d.shape)
    valid = torch.ones(o_w.shape[:-1], dtype=torch.bool, device=o.device)

    def trace():
        out = lens.trace_to_sensor(Rays(o_w, d_w, valid, tuple(waves)))
        return rms_spot(out.o[..., :2].reshape(-1, 2), out.valid.reshape(-1)), out

    return trace


def official_fn(geo, Ray, o: torch.Tensor, d: torch.Tensor, waves: tuple[float, ...]):
    def trace():
        xy, valid = [], []
        for w in waves:
            out = geo.trace2sensor(Ray(o.clone(), d.clone(), w / 1000, device=o.device))
            xy.append(out.o[..., :2])
            valid.append(out.is_valid > 0)
        xy, valid = torch.stack(xy), torch.stack(valid)
        return rms_spot(xy.reshape(-1, 2), valid.reshape(-1)), None

    return trace


def lens_params(lens: Lens) -> list[torch.Tensor]:
    return [p for name, p in lens.named_parameters() if name.endswith((".c", ".d")) and p.requires_grad]


def official_params(geo) -> list[torch.Tensor]:
    params = []
    for s in geo.surfaces:
        for name in ("c", "d_next"):
            t = getattr(s, name, None)
            if isinstance(t, torch.Tensor) and t.is_floating_point():
                t.requires_grad_(True)
                params.append(t)
    return params


def backward_of(trace, params):
    def run():
        loss, _ = trace()
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        return loss, grads

    return run


def compiled_backward(trace, params) -> tuple:
    """`backward_of` with the trace + RMS compiled by torch.compile (Inductor: the ~60 elementwise ops per
    surface fused into a few loops, forward and backward); checked equal to eager first. Returns (fn, compile s)."""
    loss_fn = torch.compile(lambda: trace()[0], dynamic=False)
    run = backward_of(lambda: (loss_fn(), None), params)
    start = time.perf_counter()
    loss, grads = run()
    seconds = time.perf_counter() - start
    loss_e, grads_e = backward_of(trace, params)()
    assert abs(float(loss) / float(loss_e) - 1) < 1e-9, f"compiled RMS {float(loss)} vs eager {float(loss_e)}"
    scale = max(float(g.abs()) for g in grads_e if g is not None)
    worst = max(float((g - h).abs()) for g, h in zip(grads, grads_e) if g is not None)
    assert worst <= 1e-9 * scale, f"compiled gradient differs from eager by {worst:.3e} (scale {scale:.3e})"
    return run, seconds


# ---- the FLOP estimate


def element_ops(fn) -> int:
    """Elementwise arithmetic operations (output elements of every aten arithmetic op) of one call."""
    from torch.utils._python_dispatch import TorchDispatchMode

    skip = ("view", "expand", "copy", "clone", "select", "slice", "unsqueeze", "squeeze", "permute", "t.",
            "transpose", "detach", "empty", "zeros", "ones", "full", "lift", "alias", "_to_copy", "stack", "cat",
            "index", "where", "masked", "scalar_tensor", "is_nonzero", "_local_scalar", "unbind", "split", "new_")

    class Count(TorchDispatchMode):
        total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            name = str(func)
            if not any(k in name for k in skip) and isinstance(out, torch.Tensor) and out.is_floating_point():
                Count.total += out.numel()
            return out

    with Count():
        fn()
    return Count.total


def fp64_peak_flops(device: str) -> float:
    """FLOP/s of a float64 matrix product on this device/thread count (the machine's practical peak)."""
    n = 4096 if device == "cuda" else 1024
    a = torch.randn(n, n, dtype=torch.float64, device=device)
    b = torch.randn(n, n, dtype=torch.float64, device=device)
    best = math.inf
    for _ in range(3):
        best = min(best, timed(lambda: a @ b, device))
    return 2 * n**3 / best


# ---- the module's own design step (constraints, curriculum state, Adam), for the shipped configs


def module_step_rate(config: Path, steps: int, overrides: list[str] | None = None) -> tuple[float, float]:
    """(steps/s wall, CPU-seconds per step) of LensDesignModule.training_step + backward + Adam on `config`."""
    from lightning_modules.deeplens.config import DeepLensExperimentConfig
    from lightning_modules.deeplens.module import LensDesignModule
    from tenfold.config import compose, parse_overrides, read_yaml, to_plain

    cfg = compose(DeepLensExperimentConfig, [("config", read_yaml(config)),
                                            ("overrides", parse_overrides(overrides or []))])
    module = LensDesignModule(to_plain(cfg))
    module.log_dict = lambda *a, **k: None  # no trainer here
    optimizer = torch.optim.Adam(module.optimizer_parameters())

    def step(batch_idx: int) -> None:
        loss = module.training_step(None, batch_idx)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step(0)  # warm-up: step 0's shape control, and with model.compile_trace=true the compile
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step(1)
    return steps / (time.perf_counter() - wall), (time.process_time() - cpu) / steps


# ---- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setup", action="store_true", help=f"install deeplens-core into {VENV} and exit")
    parser.add_argument("--quick", action="store_true", help="1e5 rays only, 3 repeats")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-compile", dest="compile", action="store_false",
                        help="skip the torch.compile rows (fp64 forward+backward and the design step)")
    args = parser.parse_args()
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") is None:  # big blocks by mmap: RSS then tracks live tensors
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"})
    if args.setup:
        setup()
        return
    try:
        from deeplens import GeoLens
        from deeplens.light.ray import Ray
    except ImportError:
        if (VENV / "bin" / "python").exists() and Path(sys.executable).resolve() != (VENV / "bin" / "python").resolve():
            os.execv(str(VENV / "bin" / "python"), [str(VENV / "bin" / "python"), *sys.argv])
        print(f"official DeepLens (deeplens-core) not importable and no venv at {VENV}: run with --setup first; "
              "official columns skipped")
        GeoLens = Ray = None
    device = args.device
    repeats = 3 if args.quick else args.repeats
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), device {device}; "
          f"machine shared with other jobs (load {os.getloadavg()[0]:.1f})")
    peak = fp64_peak_flops(device)
    print(f"fp64 matmul rate here: {peak / 1e9:.1f} GFLOP/s\n")
    cases = [("on-axis 1e5", torch.zeros(1, 2), 100_000, (WAVE_D,))]
    if not args.quick:
        cases.append(("on-axis 1e6", torch.zeros(1, 2), 1_000_000, (WAVE_D,)))
    fields = torch.stack([torch.zeros(9), torch.linspace(0, 1, 9)], dim=1).double()
    cases.append(("9 fields x 3 wvl x 4096", fields, 4096, WAVES))

    header = (f"{'case':<24} {'dtype':<7} {'pass':<8} {'tenfold':<8} {'tenfold rays/s':>14} "
              f"{'official rays/s':>15} {'ratio':>6} "
              f"{'tenfold MB':>10} {'official MB':>11} {'ratio':>6} {'GFLOP/s':>8} {'% fp64':>6}")
    print(header)
    for dtype in (torch.float32, torch.float64):
        lens = Lens.from_json(COOKE, dtype=dtype).to(device)
        geo = None
        if GeoLens is not None:
            with tempfile.TemporaryDirectory() as tmp:
                save_deeplens_json(Lens.from_json(COOKE), Path(tmp) / "cooke.json")
                old = torch.get_default_dtype()
                torch.set_default_dtype(dtype)  # the official ior builds its wavelength in the default dtype
                geo = GeoLens(filename=str(Path(tmp) / "cooke.json"), device=device, dtype=dtype)
                torch.set_default_dtype(old)
            efl_rel = abs(geo.foclen / lens.foclen - 1)
            assert efl_rel < 1e-5, f"EFL differs: {geo.foclen} vs {lens.foclen}"
        for name, case_fields, n, waves in cases:
            o, d = launch(Lens.from_json(COOKE), case_fields, n, 0.95)
            o, d = o.to(device=device, dtype=dtype), d.to(device=device, dtype=dtype)
            ours = ours_fn(lens, o, d, waves)
            theirs = official_fn(geo, Ray, o, d, waves) if geo is not None else None
            with torch.no_grad():
                rms_a = float(ours()[0])
                if theirs is not None:
                    rms_b = float(theirs()[0])
                    tol = 1e-6 if dtype == torch.float64 else 1e-3
                    assert abs(rms_a / rms_b - 1) < tol, f"{name}: RMS {rms_a} vs {rms_b}"
            n_rays = o.shape[0] * o.shape[1] * len(waves)
            for mode in ("fwd", "fwd+bwd"):
                if mode == "fwd":
                    fa = lambda f=ours: torch.no_grad()(f)()  # noqa: E731
                    fb = (lambda f=theirs: torch.no_grad()(f)()) if theirs else None  # noqa: E731
                else:
                    fa = backward_of(ours, lens_params(lens))
                    fb = backward_of(theirs, official_params(geo)) if theirs else None
                tracers = {"eager": fa}
                if args.compile and mode == "fwd+bwd" and dtype == torch.float64:
                    tracers["compiled"], compile_s = compiled_backward(ours, lens_params(lens))
                    print(f"  (torch.compile of the {name} fp64 trace + RMS: {compile_s:.0f} s, once)", flush=True)
                times: dict[str, list[float]] = {k: [] for k in tracers}
                tb = []
                for fn in (*tracers.values(), fb):
                    if fn:
                        fn()
                for _ in range(repeats):  # interleaved: tenfold eager, tenfold compiled, official, ...
                    for key, fn in tracers.items():
                        times[key].append(timed(fn, device))
                    if fb:
                        tb.append(timed(fb, device))
                mb = peak_rise(fb, device) if fb else 0
                rb = n_rays / statistics.median(tb) if tb else float("nan")
                # The eager graph's element ops: the work both tracers do, whatever the kernels.
                ops = element_ops(fa) if dtype == torch.float64 else float("nan")
                for key, fn in tracers.items():
                    ma = peak_rise(fn, device)
                    ra = n_rays / statistics.median(times[key])
                    gflops = ops / statistics.median(times[key]) / 1e9
                    print(f"{name:<24} {str(dtype)[6:]:<7} {mode:<8} {key:<8} {ra:14.3e} {rb:15.3e} {ra / rb:6.2f} "
                          f"{ma / 2**20:10.1f} {mb / 2**20:11.1f} {(mb / ma if ma > 0 else float('nan')):6.2f} "
                          f"{gflops:8.2f} {gflops * 1e9 / peak * 100:6.1f}", flush=True)
    if GeoLens is not None:
        design_step(GeoLens, Ray, device, repeats, args.compile)
    if device == "cpu":
        print("\nthe module's design step (training_step + backward + Adam; shape control every 50-100 steps "
              "not included):")
        for config in ("configs/examples/deeplens_cooke.yaml", "configs/deeplens_cooke_now.yaml",
                       "configs/deeplens.yaml", "configs/deeplens_now.yaml"):
            if (REPO / config).is_file():
                rate, cpu = module_step_rate(REPO / config, 5 if args.quick else 20, ["model.shape_control_every=0"])
                print(f"  {config:<40} {rate:6.2f} steps/s wall, {cpu * 1000:7.1f} CPU-ms per step")


def design_step(GeoLens, Ray, device: str, repeats: int, compile_too: bool) -> None:
    """One Adam step on the same loss in both: RMS to the pinhole points, 9 fields x 3 wvl x 256 rays, fp64."""
    dtype = torch.float64
    lens = Lens.from_json(COOKE, dtype=dtype).to(device)
    with tempfile.TemporaryDirectory() as tmp:
        save_deeplens_json(lens, Path(tmp) / "cooke.json")
        old = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        geo = GeoLens(filename=str(Path(tmp) / "cooke.json"), device=device, dtype=dtype)
        torch.set_default_dtype(old)
    fields = torch.stack([torch.zeros(9), torch.linspace(0, 1, 9)], dim=1).double()
    o, d = launch(Lens.from_json(COOKE), fields, 256, 0.95)
    o, d = o.to(device), d.to(device)
    target = (-fields * lens.foclen * math.tan(HFOV)).to(device=device, dtype=dtype).unsqueeze(1)  # (F, 1, 2)

    def loss_of(xy, valid):  # (W, F, N, 2), (W, F, N)
        w = valid.to(xy.dtype)
        return torch.sqrt((((xy - target) ** 2).sum(-1) * w).sum() / w.sum())

    z0 = float(lens.surfaces[0].d.detach())
    o_ours = o.clone()
    o_ours[..., 2] += z0
    params_a, params_b = lens_params(lens), official_params(geo)
    opt_a, opt_b = torch.optim.Adam(params_a, lr=1e-6), torch.optim.Adam(params_b, lr=1e-6)

    def loss_ours():
        out = lens.trace_to_sensor(Rays(o_ours.expand(3, *o.shape), d.expand(3, *d.shape),
                                        torch.ones(3, *o.shape[:-1], dtype=torch.bool, device=device), WAVES))
        return loss_of(out.o[..., :2], out.valid)

    def stepper(loss_fn, optimizer):
        def step():
            loss = loss_fn()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            return loss

        return step

    losses = {"eager": loss_ours}
    if compile_too:
        losses["compiled"] = torch.compile(loss_ours, dynamic=False)

    def loss_official():
        xy, valid = [], []
        for w in WAVES:
            out = geo.trace2sensor(Ray(o.clone(), d.clone(), w / 1000, device=device))
            xy.append(out.o[..., :2])
            valid.append(out.is_valid > 0)
        return loss_of(torch.stack(xy), torch.stack(valid))

    with torch.no_grad():
        lb = float(loss_official())
    for key, loss_fn in losses.items():  # the same lens: no step taken yet
        la = float(loss_fn())
        assert abs(la / lb - 1) < 1e-5, f"design loss differs ({key}): {la} vs {lb}"
    steps = {key: stepper(loss_fn, opt_a) for key, loss_fn in losses.items()}
    step_official = stepper(loss_official, opt_b)
    for step in (*steps.values(), step_official):
        step()  # warm-up (the compiled backward is built on its first call)
    times: dict[str, list[float]] = {k: [] for k in steps}
    tb = []
    for _ in range(max(repeats, 5)):
        for key, step in steps.items():
            times[key].append(timed(step, device))
        tb.append(timed(step_official, device))
    sb = 1 / statistics.median(tb)
    print(f"\none design step (Cooke, 9 fields x 3 wvl x 256 rays, fp64, RMS to pinhole + backward + Adam; "
          f"loss {lb:.4e} mm in both): official {sb:.1f} steps/s")
    for key in steps:
        sa = 1 / statistics.median(times[key])
        print(f"  tenfold {key:<8} {sa:6.1f} steps/s, ratio {sa / sb:.2f}")


if __name__ == "__main__":
    main()
