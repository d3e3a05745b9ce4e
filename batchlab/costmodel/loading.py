"""Load GPU, model and efficiency presets from TOML or JSON files (or plain dicts).

A file may hold one table of fields, or `[gpu]`, `[model]` and `[efficiency]` tables side by
side. A table may name a built-in preset as `base` and override only some fields:

    [gpu]
    base = "h100"
    name = "h100-cheap"
    price_per_hour = 1.99

GPU tables take the `GPUSpec` fields in SI units, or these friendlier spellings:
bf16_tflops, fp8_tflops, memory_bandwidth_gb_s, memory_gib, memory_gb, link_bandwidth_gb_s,
network_bandwidth_gb_s, link_latency_us, network_latency_us.
"""

from __future__ import annotations

import contextlib
import json
import os
import tomllib
from pathlib import Path

import attrs

from batchlab.core import ConfigError

from .efficiency import Efficiency
from .gpus import GPUSpec, get_gpu
from .model_presets import get_model
from .models import ModelConfig

_GPU_UNITS = {
    "bf16_tflops": ("bf16_flops", 1e12), "fp8_tflops": ("fp8_flops", 1e12),
    "memory_bandwidth_gb_s": ("memory_bandwidth", 1e9), "memory_gib": ("memory_bytes", 2**30),
    "memory_gb": ("memory_bytes", 1e9), "link_bandwidth_gb_s": ("link_bandwidth", 1e9),
    "network_bandwidth_gb_s": ("network_bandwidth", 1e9),
    "link_latency_us": ("link_latency", 1e-6), "network_latency_us": ("network_latency", 1e-6),
}


def read_table(source, section: str) -> dict:
    """The `section` table of a TOML/JSON file (or the whole document if it has none)."""
    if isinstance(source, dict):
        doc, where = source, "the given table"
    else:
        path = Path(source)
        where = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read {section} file {where}: {exc.strerror}") from None
        except UnicodeDecodeError as exc:  # a binary file, or UTF-16 (TOML and JSON: UTF-8)
            raise ConfigError(f"{where}: not text ({section} files are UTF-8 TOML or JSON; "
                              f"byte 0x{exc.object[exc.start]:02x} at offset {exc.start} is "
                              "not UTF-8)") from None
        try:
            if path.suffix.lower() == ".json":
                doc = json.loads(text)
            else:
                doc = tomllib.loads(text)
        except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{where}: not valid {path.suffix.lstrip('.').upper() or 'TOML'}"
                              f": {exc}") from None
    table = doc.get(section, doc) if isinstance(doc, dict) else doc
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: the {section} entry must be a table of fields")
    return dict(table)


def _build(cls, table: dict, base, what: str, where: str):
    known = {a.name for a in attrs.fields(cls)}
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown {what} field(s) {', '.join(map(repr, unknown))}; "
                          f"known: {', '.join(sorted(known))}")
    if base is not None:
        return attrs.evolve(base, **table)
    if "name" not in table:
        raise ConfigError(f"{where}: a {what} needs a 'name' (or a 'base' preset to start from)")
    try:
        return cls(**table)
    except TypeError as exc:  # a required field is missing
        raise ConfigError(f"{where}: incomplete {what}: {exc}; give every field or a 'base'") \
            from None


@contextlib.contextmanager
def _within(where: str):
    """Errors while building from a file name the file (a bad `base` preset, a field the
    class refuses), as the table checks here already do."""
    try:
        yield
    except ConfigError as exc:
        if str(exc).startswith(f"{where}:"):
            raise
        raise ConfigError(f"{where}: {exc}") from None


def load_gpu(source) -> GPUSpec:
    """A GPUSpec from a TOML/JSON file path or a dict."""
    table = read_table(source, "gpu")
    where = "gpu table" if isinstance(source, dict) else str(source)
    with _within(where):
        base = get_gpu(table.pop("base")) if "base" in table else None
        for alias, (field, scale) in _GPU_UNITS.items():
            if alias in table:
                value = table.pop(alias)
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise ConfigError(f"field {alias!r} must be a number, not {value!r}")
                table[field] = value * scale
        return _build(GPUSpec, table, base, "GPU", where)


def load_model(source) -> ModelConfig:
    """A ModelConfig from a TOML/JSON file path or a dict."""
    table = read_table(source, "model")
    where = "model table" if isinstance(source, dict) else str(source)
    with _within(where):
        base = get_model(table.pop("base")) if "base" in table else None
        return _build(ModelConfig, table, base, "model", where)


def load_efficiency(source) -> Efficiency:
    """An Efficiency profile from a TOML/JSON file path or a dict."""
    table = read_table(source, "efficiency")
    name = table.pop("name", "profile" if isinstance(source, dict) else Path(source).stem)
    with _within("efficiency table" if isinstance(source, dict) else str(source)):
        return Efficiency.from_dict(table, name=name)


def _is_file_ref(value) -> bool:
    return (isinstance(value, (str, os.PathLike))
            and str(value).lower().endswith((".toml", ".json")))


def resolve_gpu(value) -> GPUSpec:
    """A preset name, a GPUSpec, a dict, or a path to a .toml/.json file."""
    if _is_file_ref(value) or isinstance(value, dict):
        return load_gpu(value)
    return get_gpu(value)


def resolve_model(value) -> ModelConfig:
    """A preset name, a ModelConfig, a dict, or a path to a .toml/.json file."""
    if _is_file_ref(value) or isinstance(value, dict):
        return load_model(value)
    return get_model(value)


def resolve_efficiency(value) -> Efficiency:
    """None (defaults), an Efficiency, a dict of overrides, or a .toml/.json profile path."""
    if value is None:
        return Efficiency()
    if isinstance(value, Efficiency):
        return value
    if isinstance(value, dict):
        return Efficiency.from_dict(value, name="custom")
    if _is_file_ref(value):
        return load_efficiency(value)
    raise ConfigError(f"efficiency must be None, an Efficiency, a dict or a .toml/.json "
                      f"profile path, not {value!r}")
