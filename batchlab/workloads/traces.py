"""Trace files: replay recorded requests as a `Workload`.

`load_trace()` reads CSV or JSON Lines with either of two column schemes:

- the Azure LLM inference trace (Azure Public Dataset, AzureLLMInferenceDataset2023 on GitHub):
  `TIMESTAMP,ContextTokens,GeneratedTokens`, TIMESTAMP a wall clock such as
  `2023-11-16 18:17:03.9799600`;
- plain `arrival,prompt_tokens,output_tokens`, arrival in seconds.

Other columns are ignored. Every malformed row raises a `TraceError` naming the file, the
1-based line and the field, so a user can open the file at the line and fix it.
"""

from __future__ import annotations

import csv
import datetime
import json
import math
import os
import re
import warnings
from pathlib import Path

import numpy as np

from ..core.errors import ConfigError, TraceError
from ..core.limits import MAX_SECONDS, MAX_TOKENS
from .spec import Workload

AZURE = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
PLAIN = ("arrival", "prompt_tokens", "output_tokens")
_SCHEMES = f"{','.join(AZURE)} (Azure) or {','.join(PLAIN)}"
_SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".json-lines": "jsonl", ".ndjson": "jsonl"}
TRACE_SUFFIXES = tuple(_SUFFIXES)

# Python's datetime stops at 6 fractional digits and the Azure trace writes 7, so the wall
# clock is parsed here. An optional UTC offset is honoured for traces that carry one.
_WALLCLOCK = re.compile(r"\s*(\d{4}-\d{2}-\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
                        r"\s*(Z|[+-]\d{2}:?\d{2})?\s*$")


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:30]}...({len(text)} characters)"


def _encoding(path: str) -> str:
    """UTF-8 (with or without a BOM), or UTF-16 when the file starts with its BOM, as
    spreadsheet programs on Windows write "Unicode text"."""
    with open(path, "rb") as f:
        head = f.read(2)
    return "utf-16" if head in (b"\xff\xfe", b"\xfe\xff") else "utf-8-sig"


def _unreadable(path: str, exc: Exception) -> TraceError:
    if isinstance(exc, UnicodeDecodeError):
        return TraceError(path, None, None, f"is not text in UTF-8 or UTF-16 (byte "
                          f"0x{exc.object[exc.start]:02x} at offset {exc.start}); a trace is "
                          "a CSV or JSON Lines text file")
    return TraceError(path, None, None, f"cannot be read: {exc}")


class _RowParser:
    """Turns one row's three raw values into (seconds, prompt, output) or a TraceError."""

    def __init__(self, path: str, scheme: tuple[str, str, str]):
        self.path, self.scheme = path, scheme
        self.is_azure = scheme is AZURE
        self.days: dict[str, int] = {}   # date text -> ordinal; a trace spans few days
        self.first_day: int | None = None
        self.num_zero_outputs = 0

    def error(self, line, field, problem) -> TraceError:
        return TraceError(self.path, line, field, problem)

    def tokens(self, value, line: int, field: str, *, zero_ok: bool) -> int:
        if isinstance(value, str):
            try:
                n = int(value)
            except ValueError:
                what = "is empty" if not value.strip() else f"is not an integer: {_short(value)}"
                raise self.error(line, field, f"{what}; write a whole number of tokens") from None
        elif isinstance(value, int) and not isinstance(value, bool):
            n = value
        elif isinstance(value, float) and value.is_integer():
            n = int(value)
        else:
            raise self.error(line, field, f"is not an integer: {_short(value)}; write a whole "
                             "number of tokens")
        if n == 0 and zero_ok:
            # A request that generated nothing still ran its prefill, which emits the first
            # token: count it as one so it stays in the replay (see load_trace).
            self.num_zero_outputs += 1
            return 1
        if n < 1:
            raise self.error(line, field, f"must be >= 1 token, got {n}")
        if n > MAX_TOKENS:   # would overflow the int64 arrays of a run
            raise self.error(line, field, f"must be at most {MAX_TOKENS} tokens, got "
                             f"{str(n)[:30]}{'...' if len(str(n)) > 30 else ''}")
        return n

    def seconds(self, value, line: int, field: str) -> float:
        if self.is_azure:
            return self.wallclock(value, line, field)
        try:
            t = float(value) if not isinstance(value, bool) else math.nan
        except (TypeError, ValueError):
            t = math.nan
        if not math.isfinite(t):
            raise self.error(line, field, f"is not a finite number of seconds: "
                             f"{_short(value)}")
        if abs(t) > MAX_SECONDS:
            raise self.error(line, field, f"must be within {MAX_SECONDS:g} seconds of 0, got "
                             f"{_short(value)}")
        return t

    def wallclock(self, value, line: int, field: str) -> float:
        """Seconds since midnight of the first row's day (small, so float keeps 100 ns)."""
        m = _WALLCLOCK.match(value) if isinstance(value, str) else None
        if m is None:
            raise self.error(line, field, f"is not a timestamp like "
                             f"'2023-11-16 18:17:03.9799600': {_short(value)}")
        date, hh, mm, ss, frac, zone = m.groups()
        day = self.days.get(date)
        if day is None:
            try:
                day = datetime.date.fromisoformat(date).toordinal()
            except ValueError:
                raise self.error(line, field, f"has an impossible date: {value!r}") from None
            self.days[date] = day
        if self.first_day is None:
            self.first_day = day
        h, mi, s = int(hh), int(mm), int(ss)
        if h > 23 or mi > 59 or s > 59:
            raise self.error(line, field, f"has an impossible time of day: {value!r}")
        t = (day - self.first_day) * 86400 + h * 3600 + mi * 60 + s
        if zone and zone != "Z":
            sign = -1 if zone[0] == "+" else 1   # 12:00+01:00 is 11:00 UTC
            t += sign * (int(zone[1:3]) * 3600 + int(zone[-2:]) * 60)
        return t + (int(frac) / 10 ** len(frac) if frac else 0.0)

    def row(self, values, line: int):
        ts, prompt, output = self.scheme
        return (self.seconds(values[0], line, ts),
                self.tokens(values[1], line, prompt, zero_ok=False),
                self.tokens(values[2], line, output, zero_ok=True))


def _scheme_of(columns, path: str, line: int | None) -> tuple[str, str, str]:
    for scheme in (AZURE, PLAIN):
        if any(c in columns for c in scheme):
            missing = [c for c in scheme if c not in columns]
            if missing:
                raise TraceError(path, line, missing[0], f"column {missing[0]!r} is missing "
                                 f"(found {', '.join(map(repr, columns))}); a trace needs "
                                 f"{_SCHEMES}")
            return scheme
    raise TraceError(path, line, None, f"no known columns (found "
                     f"{', '.join(map(repr, columns))}); a trace needs {_SCHEMES}")


def _read_csv(path: str, limit: int | None):
    with open(path, newline="", encoding=_encoding(path)) as f:
        reader = csv.reader(f)
        try:
            return _read_csv_rows(path, reader, limit)
        except csv.Error as exc:   # a NUL byte, a field over the csv module's size limit
            raise TraceError(path, reader.line_num, None,
                             f"is not a readable CSV line ({exc})") from None


def _read_csv_rows(path: str, reader, limit: int | None):
    header = next(reader, None)
    while header is not None and not header:   # blank lines before the header
        header = next(reader, None)
    if header is None:
        raise TraceError(path, None, None, f"is empty; a trace needs a header line "
                         f"({_SCHEMES}) and one line per request")
    header_line = reader.line_num
    header = [c.strip() for c in header]
    scheme = _scheme_of(header, path, header_line)
    parser = _RowParser(path, scheme)
    twice = [c for c in scheme if header.count(c) > 1]
    if twice:  # the first one was read and the other ignored, without a word
        raise TraceError(path, header_line, None, f"column {twice[0]!r} appears "
                         f"{header.count(twice[0])} times in the header; keep one")
    where = [header.index(c) for c in scheme]
    width = len(header)
    rows = []
    for values in reader:
        if not values:
            continue
        line = reader.line_num
        if len(values) != width:
            short = len(values) < width
            raise TraceError(path, line, header[len(values)] if short else None,
                             f"has {len(values)} fields, the header has {width}")
        rows.append(parser.row([values[k] for k in where], line))
        if limit is not None and len(rows) >= limit:
            break
    return rows, parser, header_line


def _read_jsonl(path: str, limit: int | None):
    rows, parser, first_line = [], None, None
    with open(path, encoding=_encoding(path)) as f:
        for line, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except (ValueError, RecursionError) as exc:   # also a 5000-digit int, [[[[...
                why = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)[:80]
                raise TraceError(path, line, None, f"is not valid JSON ({why})") from None
            if not isinstance(obj, dict):
                raise TraceError(path, line, None, "must be a JSON object with "
                                 f"{_SCHEMES}, got {type(obj).__name__}")
            if parser is None:   # the first object decides the scheme of the whole file
                parser, first_line = _RowParser(path, _scheme_of(list(obj), path, line)), line
            missing = [c for c in parser.scheme if c not in obj]
            if missing:
                raise TraceError(path, line, missing[0], f"key {missing[0]!r} is missing")
            rows.append(parser.row([obj[c] for c in parser.scheme], line))
            if limit is not None and len(rows) >= limit:
                break
    if parser is None:
        raise TraceError(path, None, None, f"is empty; a JSON Lines trace needs one object "
                         f"per line with {_SCHEMES}")
    return rows, parser, first_line


def load_trace(path, *, time_scale: float = 1.0, limit: int | None = None,
               max_new_tokens: int | None = None):
    """Read a CSV (.csv) or JSON Lines (.jsonl, .json-lines, .ndjson) trace as a Workload.

    Arrivals are made relative to the earliest request (which arrives at 0) and multiplied by
    `time_scale`, so 0.5 replays twice as fast. Requests are sorted by arrival (stable, so ties
    keep file order); request i of the Workload is the i-th to arrive. `limit` keeps the first
    `limit` requests of the file (file order, before sorting; read stops there, so it is cheap
    on a big file). `max_new_tokens` is the cap every request carries; outputs longer than it
    are clipped, as a server's max_tokens would cut them.

    Zero output tokens (GeneratedTokens 0, which some Azure trace releases contain; the 2023
    code and conv traces have none) are counted as 1 token, with one warning giving the count:
    prefill emits a first token anyway, and dropping the rows would change the arrival
    pattern. Zero prompt tokens are an error.
    """

    if not (isinstance(time_scale, (int, float)) and not isinstance(time_scale, bool)
            and math.isfinite(time_scale) and time_scale > 0):
        raise ConfigError(f"load_trace.time_scale must be a positive finite number, got "
                          f"{time_scale!r}")
    for name, value in (("limit", limit), ("max_new_tokens", max_new_tokens)):
        if value is not None and not (isinstance(value, (int, np.integer))
                                      and not isinstance(value, bool) and value >= 1):
            raise ConfigError(f"load_trace.{name} must be a positive integer or None, got "
                              f"{value!r}")
    if not isinstance(path, (str, os.PathLike)):
        raise ConfigError(f"load_trace.path must be a file path (a str or a Path), got "
                          f"{path!r}"[:200])
    path = os.fspath(path)
    if os.path.isdir(path):  # checked first: a folder called "x.csv" is no more a trace
        raise TraceError(path, None, None, "is a directory; give a trace file in it (.csv or "
                         ".jsonl)")
    kind = _SUFFIXES.get(Path(path).suffix.lower())
    if kind is None:
        raise ConfigError(f"load_trace.path must end in {', '.join(_SUFFIXES)}, got {path!r}; "
                          "rename the file to say its format")
    if not os.path.isfile(path):
        raise TraceError(path, None, None, "not found (no such file); check the path")
    try:
        rows, parser, first_line = (_read_csv if kind == "csv" else _read_jsonl)(path, limit)
    except (UnicodeError, OSError) as exc:
        raise _unreadable(path, exc) from None
    if not rows:
        raise TraceError(path, first_line, None, "has a header but no requests")
    if parser.num_zero_outputs:
        warnings.warn(f"{path}: {parser.num_zero_outputs} request(s) with 0 output tokens "
                      "counted as 1 token", stacklevel=2)
    arrival, prompt, output = (np.asarray(col) for col in zip(*rows))
    order = np.argsort(arrival, kind="stable")
    arrival = (arrival[order] - arrival[order[0]]) * time_scale
    output = output[order]
    if max_new_tokens is not None:
        output = np.minimum(output, max_new_tokens)
    return Workload(arrival, prompt[order], output, max_new_tokens=max_new_tokens,
                    name=Path(path).name)
