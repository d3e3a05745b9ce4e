"""Calibration: fit the cost model to step times measured on a real torch device, and check
the simulator against the real backend.

1. `measure_host` times one large matmul and one large copy on the device: the peak FLOP/s
   and bandwidth a cost-model `GPUSpec` for this machine quotes (its `bf16_flops` holds the
   measured rate of the model's own dtype).
2. `measure_grid` times forward steps over a grid of batch shapes (decodes at several batch
   sizes and contexts, prefills, mixed steps, micro-batched steps): the median of a few
   repeats after a warm-up.
3. Two models are fitted to those times, each by least squares on the *relative* error (step
   times span two orders of magnitude):
   - the roofline cost model (`batchlab.costmodel`): compute and memory efficiency by a
     grid search over (0, 1]^2, and for each pair the step and per-kernel overheads by
     non-negative linear least squares (they enter linearly; micro-batched shapes tell the
     two apart, since the kernel overhead is paid per micro-batch);
   - the affine teaching model (`AffineDevice`: fixed + per fed token + per attended token).
4. `write_profile` saves both in one TOML file: `[gpu]`, `[model]` and `[efficiency]` tables
   that `batchlab.costmodel.make_devices(path, path, 1, efficiency=path)` and the CLI's
   `--model`/`--gpu` accept, an `[affine]` table, the torch config and the fit errors.
5. `fidelity` (in `calibrate_cli.py`) runs one workload and policy on the real device (`run_wallclock`, arrivals
   replayed in real time) and in the simulator on the calibrated profile, and reports the
   relative errors of throughput and of median TTFT and TPOT.

`fidelity` and `calibrate_main(argv)`, the `batchlab calibrate` command, are in
`calibrate_cli.py`. torch is imported only when something is measured; fitting, profiles and
simulated devices need numpy alone.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import attrs
import numpy as np

from ..affine import AffineDevice
from ...core import Batch, limits
from ...core.errors import ConfigError

GiB = 2**30


# -- measuring --------------------------------------------------------------------------------

@attrs.frozen
class Shape:
    """A batch shape to time: `decode` rows at `context` cached tokens, `prefill` rows of
    `prompt` tokens (from an empty cache), split into `micro_batches`."""

    label: str
    decode: int = 0
    context: int = 0
    prefill: int = 0
    prompt: int = 0
    micro_batches: int = 1


@attrs.frozen
class Measurement:
    label: str
    batch: Batch = attrs.field(eq=False)
    seconds: float                 # median over the repeats
    samples: tuple = ()


def default_shapes(quick: bool = False) -> list[Shape]:
    """The calibration grid. quick: a handful of shapes (for tests and smoke runs)."""
    if quick:
        return ([Shape(f"decode b={b} ctx=32", decode=b, context=32) for b in (1, 4, 16)]
                + [Shape("prefill 1x64", prefill=1, prompt=64),
                   Shape("prefill 4x32", prefill=4, prompt=32),
                   Shape("mixed 8 decodes + 1x32", decode=8, context=32, prefill=1, prompt=32),
                   Shape("decode b=16 ctx=32 m=4", decode=16, context=32, micro_batches=4)])
    shapes = [Shape(f"decode b={b} ctx={c}", decode=b, context=c)
              for c in (64, 512) for b in (1, 2, 4, 8, 16, 32, 64)]
    shapes += [Shape(f"prefill {b}x{p}", prefill=b, prompt=p)
               for b, p in ((1, 32), (1, 128), (1, 512), (4, 128), (8, 64))]
    shapes += [Shape(f"mixed {d} decodes + 1x{p}", decode=d, context=256, prefill=1, prompt=p)
               for d, p in ((16, 128), (32, 256))]
    shapes += [Shape(f"decode b=32 ctx=128 m={m}", decode=32, context=128, micro_batches=m)
               for m in (2, 4)]
    return shapes


def _sync(device) -> None:
    import torch
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def measure_host(device="cpu", *, size: int | None = None) -> dict:
    """Peak matmul FLOP/s and copy bandwidth (bytes/s) of a torch device, best of 5."""
    import torch
    dev = torch.device(device)
    n = size or (4096 if dev.type == "cuda" else 1024)
    a = torch.randn(n, n, device=dev)
    b = torch.randn(n, n, device=dev)
    src = torch.empty(32 * 2**20 if dev.type == "cpu" else 256 * 2**20, device=dev)
    dst = torch.empty_like(src)

    def best(fn):
        fn()
        _sync(dev)
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            fn()
            _sync(dev)
            times.append(time.perf_counter() - t0)
        return min(times)

    flops = 2.0 * n ** 3 / best(lambda: a @ b)
    bandwidth = 2.0 * src.numel() * src.element_size() / best(lambda: dst.copy_(src))
    if dev.type == "cuda":
        name = torch.cuda.get_device_name(dev)
        memory = float(torch.cuda.get_device_properties(dev).total_memory)
    else:
        name = f"cpu ({torch.get_num_threads()} threads)"
        memory = float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    return {"name": name, "flops": flops, "bandwidth": bandwidth, "memory_bytes": memory}


def measure_grid(device, shapes=None, *, repeats: int = 3, warmup: int = 1) -> list[Measurement]:
    """Time each shape on `device` (a TorchDevice) from fresh request ids."""
    limits.check_int(repeats, "repeats", low=1)   # the median of no samples is an IndexError
    limits.check_int(warmup, "warmup", low=0)
    shapes = default_shapes() if shapes is None else shapes
    ids = iter(range(10_000_000, 2**62))   # far from any run's ids
    if shapes:   # the first steps of a process pay one-off costs (allocations, kernels)
        _measure(device, shapes[0], ids, repeats=2, warmup=0)
    return [_measure(device, shape, ids, repeats, warmup) for shape in shapes]


def _measure(device, shape: Shape, ids, repeats: int, warmup: int) -> Measurement:
    dec = [next(ids) for _ in range(shape.decode)]
    pre = [next(ids) for _ in range(shape.prefill)]
    for rid in dec:   # a prompt of context + 1 tokens, all but the last cached first
        device.register(rid, shape.context + 1)
    for rid in pre:
        device.register(rid, shape.prompt)
    if dec:
        device.run(Batch(dec, [shape.context] * len(dec), [0] * len(dec)))
    samples, batches = [], []
    for j in range(warmup + repeats):
        # Decode rows move on one token a step; prefill rows start again from empty.
        batch = Batch(dec + pre, [1] * len(dec) + [shape.prompt] * len(pre),
                      [shape.context + j] * len(dec) + [0] * len(pre),
                      num_micro_batches=min(shape.micro_batches, len(dec) + len(pre)))
        t0 = time.perf_counter()
        device.run(batch)
        _sync(device.device)
        samples.append(time.perf_counter() - t0)
        batches.append(batch)
    for rid in dec + pre:
        device.free(rid)
    kept = samples[warmup:]
    median = int(np.argsort(kept)[len(kept) // 2])
    return Measurement(shape.label, batches[warmup + median], float(kept[median]), tuple(kept))


# -- fitting ----------------------------------------------------------------------------------

def _nnls_relative(columns: np.ndarray, y: np.ndarray, base: np.ndarray | None = None):
    """Non-negative coefficients x minimising sum(((base + columns @ x) - y) / y)^2, by
    dropping negative coefficients and refitting (few columns: exact enough)."""
    base = np.zeros_like(y) if base is None else base
    w = 1.0 / y
    active = list(range(columns.shape[1]))
    x = np.zeros(columns.shape[1])
    while active:
        coef, *_ = np.linalg.lstsq(columns[:, active] * w[:, None], (y - base) * w,
                                   rcond=None)
        if (coef >= 0).all():
            x[:] = 0
            x[active] = coef
            break
        active.pop(int(np.argmin(coef)))
    pred = base + columns @ x
    return x, pred


def fit_affine(measurements) -> tuple[dict, np.ndarray]:
    """AffineDevice parameters (fixed, per_token, per_context_token) and its predictions."""
    unit = [AffineDevice(fixed=f, per_token=t, per_context_token=c)
            for f, t, c in ((1, 0, 0), (0, 1, 0), (0, 0, 1))]
    columns = np.array([[u.step_time(m.batch) for u in unit] for m in measurements])
    y = np.array([m.seconds for m in measurements])
    x, pred = _nnls_relative(columns, y)
    return dict(zip(("fixed", "per_token", "per_context_token"), map(float, x))), pred


def _step_models(model, gpu, efficiencies):
    from ...costmodel import make_devices
    return [make_devices(model, gpu, 1, efficiency=e)[0].step_model for e in efficiencies]


def fit_efficiency(measurements, model, gpu, *, grid: int = 24):
    """The cost model's Efficiency (compute, memory, step_overhead, kernel_overhead) that
    best predicts the measurements, and its predictions."""
    from ...costmodel import Efficiency
    y = np.array([m.seconds for m in measurements])
    batches = [m.batch for m in measurements]

    def evaluate(ec, em):
        # Overheads enter linearly: time with none, and the slope of one unit of each.
        zero, kern = _step_models(model, gpu, [
            Efficiency("fit", ec, em, 1.0, 0.0, 0.0), Efficiency("fit", ec, em, 1.0, 0.0, 1e-6)])
        t0 = np.array([zero.cost(b)[0] for b in batches])
        per_kernel = (np.array([kern.cost(b)[0] for b in batches]) - t0) / 1e-6
        columns = np.column_stack([np.ones_like(t0), per_kernel])
        (step, kernel), pred = _nnls_relative(columns, y, t0)
        err = float(np.sqrt(np.mean(((pred - y) / y) ** 2)))
        return err, (ec, em, step, kernel), pred

    best = None
    values = np.geomspace(1e-3, 1.0, grid)
    for ec in values:
        for em in values:
            cand = evaluate(ec, em)
            if best is None or cand[0] < best[0]:
                best = cand
    # One finer pass around the best pair.
    ec0, em0 = best[1][:2]
    ratio = values[1] / values[0]
    for ec in np.clip(ec0 * ratio ** np.linspace(-1, 1, 7), 1e-4, 1.0):
        for em in np.clip(em0 * ratio ** np.linspace(-1, 1, 7), 1e-4, 1.0):
            cand = evaluate(ec, em)
            if cand[0] < best[0]:
                best = cand
    ec, em, step, kernel = best[1]
    eff = Efficiency("calibrated", compute=float(ec), memory=float(em),
                     step_overhead=float(step), kernel_overhead=float(kernel))
    return eff, best[2]


def host_gpu_spec(host: dict, *, model=None, kv_capacity_tokens: int | None = None):
    """A cost-model GPUSpec for the measured host. With a model and a KV capacity, its memory
    is sized so that `make_devices` plans that many KV tokens (as the torch device holds)."""
    from ...costmodel import GPUSpec
    spec = GPUSpec(name="calibrated-host", description=f"measured: {host['name']}",
                   bf16_flops=host["flops"], fp8_flops=0.0,
                   memory_bandwidth=host["bandwidth"], memory_bytes=host["memory_bytes"],
                   link_bandwidth=host["bandwidth"], link_latency=0.0,
                   network_bandwidth=host["bandwidth"], network_latency=0.0,
                   gpus_per_node=1, price_per_hour=0.0, link_kind="local",
                   source="batchlab calibrate (measured matmul and copy)")
    if model is None or kv_capacity_tokens is None:
        return spec
    from ...costmodel import plan_memory, resolve_layout
    big = attrs.evolve(spec, memory_bytes=1e15)
    plan = plan_memory(model, resolve_layout(model, 1), big)
    need = (max(plan.weights_per_gpu) + plan.activations_per_gpu
            + (kv_capacity_tokens + 0.5) * plan.kv_bytes_per_token_gpu[0]) / 0.9
    return attrs.evolve(spec, memory_bytes=float(need))


# -- profiles ---------------------------------------------------------------------------------

@attrs.frozen
class Profile:
    """What calibration found: the host spec, the model, both fitted step-time models."""

    gpu: object            # costmodel.GPUSpec
    model: object          # costmodel.ModelConfig
    efficiency: object     # costmodel.Efficiency
    affine: dict
    kv_capacity_tokens: int
    torch_model: dict = attrs.field(factory=dict)
    fit: dict = attrs.field(factory=dict)

    def devices(self, n: int = 1, kind: str = "costmodel") -> list:
        """n simulator devices with the calibrated step times and the real KV capacity."""
        if kind == "affine":
            return [AffineDevice(name=f"dev{i}", kv_capacity_tokens=self.kv_capacity_tokens,
                                 **self.affine) for i in range(n)]
        if kind != "costmodel":
            raise ConfigError(f"profile device kind {kind!r}: use 'costmodel' or 'affine'")
        from ...costmodel import make_devices
        devices = make_devices(self.model, self.gpu, n, dp=n, efficiency=self.efficiency)
        for d in devices:   # the plan's rounding aside, the torch device's own capacity
            d.kv_capacity_tokens = self.kv_capacity_tokens
        return devices


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return repr(float(value)) if math.isfinite(value) else '"nan"'
    return json.dumps(str(value))   # a TOML basic string is JSON-compatible for these


def write_profile(path, profile: Profile) -> Path:
    path = Path(path)
    sections = {
        "gpu": attrs.asdict(profile.gpu),
        "model": attrs.asdict(profile.model),
        "efficiency": attrs.asdict(profile.efficiency),
        "affine": dict(profile.affine),
        "torch_model": dict(profile.torch_model),
        "calibration": {"kv_capacity_tokens": profile.kv_capacity_tokens, **profile.fit},
    }
    lines = ["# Written by `batchlab calibrate`. Use it with the cost model:",
             "#   make_devices(path, path, 1, efficiency=path), or batchlab.backends.torch.calibrate."
             "load_profile(path).devices()", ""]
    for name, table in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in table.items() if v is not None]
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def load_profile(path) -> Profile:
    import tomllib
    from ...costmodel import load_efficiency, load_gpu, load_model
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read calibration profile {path}: {exc}") from None
    for section in ("gpu", "model", "efficiency", "affine", "calibration"):
        if section not in doc:
            raise ConfigError(f"{path}: not a calibration profile (no [{section}] table); "
                              "write one with `batchlab calibrate`")
    cal = dict(doc["calibration"])
    return Profile(load_gpu(path), load_model(path), load_efficiency(path),
                   {k: float(doc["affine"][k]) for k in ("fixed", "per_token",
                                                          "per_context_token")},
                   int(cal.pop("kv_capacity_tokens")), dict(doc.get("torch_model", {})), cal)


def relative_errors(predicted, measured) -> np.ndarray:
    measured = np.asarray(measured, float)
    return (np.asarray(predicted, float) - measured) / measured


def calibrate(device, *, shapes=None, repeats: int = 3, host: dict | None = None):
    """Measure `device` (a TorchDevice) and fit; returns (Profile, per-shape table rows)."""
    host = measure_host(device.device) if host is None else host
    measurements = measure_grid(device, shapes, repeats=repeats)
    model = device.config.to_model_config()
    gpu = host_gpu_spec(host, model=model, kv_capacity_tokens=device.kv_capacity_tokens)
    eff, roof_pred = fit_efficiency(measurements, model, gpu)
    affine, aff_pred = fit_affine(measurements)
    y = np.array([m.seconds for m in measurements])
    roof_err, aff_err = relative_errors(roof_pred, y), relative_errors(aff_pred, y)
    rows = [{"shape": m.label, "tokens": m.batch.num_tokens, "measured_ms": m.seconds * 1e3,
             "costmodel_ms": r * 1e3, "costmodel_err": er, "affine_ms": a * 1e3,
             "affine_err": ea}
            for m, r, er, a, ea in zip(measurements, roof_pred, roof_err, aff_pred, aff_err)]
    fit = {"host": host["name"], "num_shapes": len(measurements),
           "costmodel_rms_rel_err": float(np.sqrt(np.mean(roof_err ** 2))),
           "costmodel_max_rel_err": float(np.abs(roof_err).max()),
           "affine_rms_rel_err": float(np.sqrt(np.mean(aff_err ** 2))),
           "affine_max_rel_err": float(np.abs(aff_err).max())}
    torch_model = {k: v for k, v in attrs.asdict(device.config).items()}
    return Profile(gpu, model, eff, affine, device.kv_capacity_tokens, torch_model, fit), rows
