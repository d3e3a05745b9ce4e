"""A sweep: a grid of runs described in a TOML file, run anywhere, gathered in one table.

    [base]                      # settings every point shares (scenario keys, see scenario.py)
    requests = 200
    [grid]                      # each key takes every value: the cartesian product, the first
    policy = ["continuous", "fixed-window"]  # key varying slowest and the last fastest
    rate = [1.0, 2.0]
    [[points]]                  # optional extra points, each base | its table, after the grid
    policy = "fixed-window"
    "policy.window" = 0.05

A point is one flat dict of settings, the form `scenario.run` takes; its row in the table is
`scenario.summarize(point, result)`. A point whose run raises a BatchlabError (a model that
does not fit, say) gets the message in the row's `error` column and the sweep goes on; any
other exception is a bug and stops the sweep, with a note naming the point.

Resuming: with a cache directory each finished row is written at once, atomically, as
`<point_key>.json`, and a later run loads it instead of running the point again. The key hashes
the point's settings together with SCHEMA, the batchlab version, scenario.DEFAULTS and a
fingerprint of batchlab's own files (its .py sources and data files), so that changing a
setting, upgrading batchlab, changing a default or editing the code recomputes: a cached row
is only reused by the code that made it.
Failed points are not cached, so a rerun retries them.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import math
import functools
import os
import tempfile
import tomllib
from pathlib import Path

import numpy as np

from .. import __version__
from . import scenario
from ..core.errors import BatchlabError, ConfigError
from .executors import map_unordered

SCHEMA = 2  # bump whenever a change to batchlab alters the numbers a point produces
TABLES = ("base", "grid", "points")
SCALARS = (str, int, float, bool)
HEADLINE = ("ttft_p50_s", "tpot_p50_s", "output_tokens_per_s", "usd_per_million_output_tokens")


def _flatten(table: dict, where: str, prefix: str = "") -> dict:
    # An unquoted dotted key (policy.window = 0.05) reaches us as a nested TOML table.
    flat = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, where, f"{name}."))
        else:
            flat[name] = value
    try:
        scenario.check_keys(flat)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return flat


def _check_value(value, where: str) -> None:
    if not isinstance(value, SCALARS):
        raise ConfigError(f"{where} must be a string, number or boolean, got {value!r}")


def _normalize(config: dict) -> dict:
    """The config with its three tables present, flattened and checked."""
    extra = [k for k in config if k not in TABLES]
    if extra:
        raise ConfigError(f"unknown table [{extra[0]}]; a sweep has [base], [grid] and "
                          "[[points]]")
    base, grid, points = config.get("base", {}), config.get("grid", {}), config.get("points", [])
    if not isinstance(base, dict) or not isinstance(grid, dict):
        raise ConfigError("[base] and [grid] must be tables")
    if not isinstance(points, list) or not all(isinstance(p, dict) for p in points):
        raise ConfigError("points must be an array of tables, written [[points]]")
    base, grid = _flatten(base, "[base]"), _flatten(grid, "[grid]")
    for key, value in base.items():
        _check_value(value, f"[base] {key}")
    for key, values in grid.items():
        if not isinstance(values, list):
            raise ConfigError(f"[grid] {key} must be a list of values, e.g. {key} = "
                              f"[{values!r}], got {values!r}")
        if not values:
            raise ConfigError(f"[grid] {key} is an empty list: the grid would have no points")
        for i, value in enumerate(values):
            _check_value(value, f"[grid] {key}[{i}]")
            if value in values[:i]:
                raise ConfigError(f"[grid] {key} lists {value!r} twice")
        if key in base:
            raise ConfigError(f"{key} is in both [base] and [grid]; keep it in one")
    points = [_flatten(p, f"[[points]] #{i + 1}") for i, p in enumerate(points)]
    for i, point in enumerate(points):
        for key, value in point.items():
            _check_value(value, f"[[points]] #{i + 1} {key}")
    return {"base": base, "grid": grid, "points": points}


def load_config(path) -> dict:
    """Read a sweep file: {"base": {...}, "grid": {key: [values]}, "points": [{...}]}."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such sweep file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:   # a binary file, or UTF-16 (TOML is UTF-8 only)
        raise ConfigError(f"{path}: not a TOML file: byte 0x{exc.object[exc.start]:02x} at "
                          f"offset {exc.start} is not UTF-8 text") from None
    try:
        return _normalize(raw)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def expand(config: dict) -> list[dict]:
    """Every point: base | each grid combination, in order, then base | each extra point.
    With no [grid], [base] alone is one point, but [[points]] alone are just those points
    (the empty product would otherwise add an all-defaults point nobody asked for)."""
    config = _normalize(config)
    base, grid = config["base"], config["grid"]
    combos = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    if not grid and config["points"]:
        combos = []
    return [{**base, **c} for c in combos] + [{**base, **p} for p in config["points"]]


def check_points(points: list[dict]) -> None:
    """Check every point's settings, build its policy and resolve its cost-model presets
    once per distinct setting: an unknown name or parameter, or a value the policy refuses,
    is a mistake in the file, not a point that fails (a layout that does not fit is one),
    so `batchlab sweep` calls this
    before anything runs. (`run_points` checks the settings too but builds no policy:
    compare's points resolve their knobs from studies, and one that fails there is a row.)"""
    seen = set()
    for i, point in enumerate(points):
        try:
            scenario.check_params(point)
            policy = _canonical({k: v for k, v in point.items()
                                 if k == "policy" or k.startswith("policy.")})
            if policy not in seen:
                seen.add(policy)
                scenario.build_policy(point)
            presets = _canonical({k: point.get(k) for k in scenario.PRESET_KEYS})
            if presets not in seen:  # an unknown deployment or GPU left a failed row
                seen.add(presets)
                scenario.check_presets(point)
        except BatchlabError as exc:
            raise ConfigError(f"sweep point {i} {point!r}: {exc}") from None


def _canonical(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """A hash of every source and data file of the installed batchlab package (read once per
    process, about a megabyte), so that cached rows never outlive the code that made them."""
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.suffix in (".py", ".toml", ".json", ".csv") and "__pycache__" not in path.parts:
            digest.update(path.relative_to(root).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def point_key(params: dict) -> str:
    """A stable name for a point's result: see the module docstring for what it covers."""
    try:
        text = _canonical({"schema": SCHEMA, "batchlab": __version__, "code": code_fingerprint(),
                           "defaults": scenario.DEFAULTS, "params": params})
    except TypeError as exc:
        raise ConfigError(f"a sweep point must hold plain values (str, number, bool): "
                          f"{exc}") from None
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def evaluate(params: dict) -> tuple[str, object]:
    """Run one point: ("ok", row) or ("error", message). Runs in a worker process."""
    try:
        row = scenario.summarize(params, scenario.run(params))
    except BatchlabError as exc:
        return "error", str(exc)
    return "ok", {k: _plain(v) for k, v in row.items()}


def _write_atomic(path: Path, text: str) -> None:
    # Write a sibling temporary file and rename it: a reader (or an interrupted sweep) sees
    # the whole old file or the whole new one, never half of one.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file 0600; give it the mode any other tool's file gets (0666 less
        # the umask), so colleagues on a shared filesystem can read the results.
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "w", newline="") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it: put it straight back
    os.umask(mask)
    return mask


def _load_cached(cache: Path, key: str, params: dict) -> dict | None:
    try:
        doc = json.loads((cache / f"{key}.json").read_text())
        if _canonical(doc["params"]) == _canonical(params):
            return doc["row"]
    except (OSError, ValueError, KeyError, TypeError):
        pass  # missing or unreadable: run the point again
    return None


def run_points(points, *, executor: str = "local", processes: int | None = None,
               address: str | None = None, cache_dir=None, progress=None) -> list[dict]:
    """One row per point, in the order given; `progress(done, total)` as points finish."""
    points = [dict(p) for p in points]
    keys = []
    for i, point in enumerate(points):
        try:
            scenario.check_params(point)   # every point checked before any runs
            keys.append(point_key(point))
        except ConfigError as exc:
            raise ConfigError(f"sweep point {i} {point!r}: {exc}") from None
    count = {k: keys.count(k) for k in keys}
    cache = Path(cache_dir) if cache_dir is not None else None
    rows: dict[str, dict] = {}
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        for key, point in zip(keys, points):
            row = rows.get(key) or _load_cached(cache, key, point)
            if row is not None:
                rows[key] = row
    todo = list({k: p for k, p in zip(keys, points) if k not in rows}.items())
    done = sum(count[k] for k in rows)
    if progress is not None:
        progress(done, len(points))
    if todo:
        for j, (status, value) in map_unordered(evaluate, [p for _, p in todo],
                                                executor=executor, processes=processes,
                                                address=address):
            key, point = todo[j]
            if status == "ok":
                rows[key] = value
                if cache is not None:
                    doc = {"schema": SCHEMA, "batchlab": __version__, "params": point,
                           "row": value}
                    _write_atomic(cache / f"{key}.json", json.dumps(doc, indent=1))
            else:  # say which policy failed, also when the point left it at its default
                rows[key] = {**point, "policy": point.get("policy") or
                             scenario.DEFAULTS["policy"], "error": f"failed: {value}"}
            done += count[key]
            if progress is not None:
                progress(done, len(points))
    return [dict(rows[k]) for k in keys]


def _is_setting(key: str) -> bool:
    return key in scenario.KEYS or key.startswith("policy.")


def columns(rows: list[dict]) -> list[str]:
    """Settings first, then summary fields, each in order of first appearance; error last."""
    seen = list(dict.fromkeys(k for row in rows for k in row if k != "error"))
    return ([k for k in seen if _is_setting(k)] + [k for k in seen if not _is_setting(k)]
            + ["error"])


def _cell(value) -> str:
    # NaN (no value: a dense model's expert figures, a device with no price) and a setting a
    # point does not give are written as empty cells, which CSV readers take as missing.
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return repr(value) if isinstance(value, float) else str(value)


def write_table(rows: list[dict], path) -> Path:
    """Write the rows as CSV (columns as `columns` orders them), atomically."""
    path = Path(path)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    cols = columns(rows)
    writer.writerow(cols)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in cols])
    _write_atomic(path, buf.getvalue())
    return path


def format_table(rows: list[dict], max_rows: int = 40) -> str:
    """A short text table: the settings that vary between points and the headline figures."""
    cols = columns(rows)
    varying = [c for c in cols if _is_setting(c)
               and len({repr(row.get(c)) for row in rows}) > 1]
    shown = (varying or [c for c in ("label", "policy") if c in cols][:1]) + \
        [c for c in HEADLINE if c in cols]
    if any(row.get("error") for row in rows):
        shown.append("error")

    def fmt(value) -> str:
        if isinstance(value, float):
            return "" if math.isnan(value) else f"{value:.4g}"
        return "" if value is None else str(value)[:60]

    table = [shown] + [[fmt(row.get(c)) for c in shown] for row in rows[:max_rows]]
    widths = [max(len(line[i]) for line in table) for i in range(len(shown))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip()
             for line in table]
    if len(rows) > max_rows:
        lines.append(f"... and {len(rows) - max_rows} more rows")
    return "\n".join(lines)
