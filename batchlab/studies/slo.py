"""A service-level objective, and whether a run is overloaded.

An SLO here is a set of limits on keys of `Result.summary()`: {"ttft_p99_s": 2.0,
"itl_p99_s": 0.1} says "99% of requests see their first token within 2 s and 99% of
inter-token gaps are under 100 ms". Any numeric summary key may be limited (`e2e_p90_s`,
`queue_p50_s`, ...), so the SLO follows the summary as it grows.

Inter-token latency (`itl_*`) is a summary key only in builds that record every token gap.
Where the summary lacks an `itl_*` key the limit is checked on the matching `tpot_*` key
(the mean gap of each request: a weaker test, since one long stall inside a request is
averaged away) and the SLO says so in `notes()`, so that no table claims ITL it did not
measure.

Overloaded: a run whose queue grows while requests arrive serves less than it is offered; its
latencies are set by how long the run lasted, not by the system. `is_overloaded` flags it from
the per-request records: some request was left waiting, or the first tokens of the last quarter
of arrivals waited more than OVERLOAD_GROWTH times as long as those of the first quarter (and
longer than OVERLOAD_FLOOR_S, so a light load's jitter of a few milliseconds is not growth).
"""

from __future__ import annotations

import math

import attrs
import numpy as np

from ..core.errors import ConfigError
from ..core.table import FINISHED, PENDING, WAITING

# The defaults: a chat service. DistServe (Zhong et al., OSDI 2024, Table 1) sets chatbot SLOs
# of 0.25-4 s TTFT and 0.1-0.2 s TPOT depending on the model size; DeepSeek reports 20-22
# output tokens/s per user on its service (DeepSeek-V3/R1 inference system overview, 2025),
# i.e. ~50 ms between tokens. We take 2 s TTFT p99 and 100 ms ITL p99.
DEFAULT_LIMITS = {"ttft_p99_s": 2.0, "itl_p99_s": 0.1}
OVERLOAD_GROWTH = 2.0
OVERLOAD_FLOOR_S = 1.0
_FALLBACK_PREFIX = ("itl_", "tpot_")


@attrs.frozen
class SLO:
    """Limits on summary keys: a run meets the SLO when every value is <= its limit."""

    limits: tuple = attrs.field(converter=lambda d: tuple(dict(d).items()))

    @classmethod
    def from_config(cls, table, where: str = "[slo]") -> "SLO":
        """An SLO from a config table {summary key: limit}; None or {} gives the defaults."""
        if not table:
            return cls(DEFAULT_LIMITS)
        if not isinstance(table, dict):
            raise ConfigError(f"{where} must be a table of summary keys and limits, e.g. "
                              "ttft_p99_s = 2.0")
        for key, limit in table.items():
            if not key.endswith("_s") and not key.endswith("_fraction"):
                raise ConfigError(f"{where} {key}: an SLO limits a latency key of the summary "
                                  "(ending in _s, e.g. ttft_p99_s, itl_p99_s, e2e_p90_s)")
            if isinstance(limit, bool) or not isinstance(limit, (int, float)) or \
                    not math.isfinite(limit) or limit <= 0:
                raise ConfigError(f"{where} {key} = {limit!r}: a limit must be a number > 0 "
                                  "(seconds)")
        return cls({k: float(v) for k, v in table.items()})

    @classmethod
    def parse(cls, text: str) -> "SLO":
        """'ttft_p99_s=2,itl_p99_s=0.1' (the CLI's --slo)."""
        table = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, sep, value = part.partition("=")
            if key.strip() in table:  # the last one won without a word
                raise ConfigError(f"--slo {text!r} limits {key.strip()} twice; give each key "
                                  "once")
            try:
                table[key.strip()] = float(value)
            except ValueError:
                sep = ""
            if not sep:
                raise ConfigError(f"--slo {part!r}: write KEY=SECONDS, e.g. ttft_p99_s=2")
        if not table:  # "" or "," searched under the default SLO without a word
            raise ConfigError(f"--slo {text!r} names no limit; write KEY=SECONDS[,...], e.g. "
                              "ttft_p99_s=2,itl_p99_s=0.1, or leave it out for the default")
        return cls.from_config(table, "--slo")

    def key_used(self, key: str, summary: dict) -> str:
        """The summary key that stands for `key` in this summary (itl_* -> tpot_* fallback)."""
        if key in summary or not key.startswith(_FALLBACK_PREFIX[0]):
            return key
        return _FALLBACK_PREFIX[1] + key[len(_FALLBACK_PREFIX[0]):]

    def violations(self, summary: dict) -> list[str]:
        """'key value > limit' for each limit the summary misses (a missing value misses)."""
        out = []
        for key, limit in self.limits:
            used = self.key_used(key, summary)
            value = summary.get(used)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                out.append(f"{used} unknown")
            elif value > limit:
                out.append(f"{used} {value:.3g} s > {limit:g} s")
        return out

    def is_met(self, summary: dict) -> bool:
        return not self.violations(summary)

    def notes(self, summary: dict) -> list[str]:
        """One line per limit checked on a stand-in key."""
        return [f"{key} is not in this build's summary: its limit was checked on "
                f"{self.key_used(key, summary)} (each request's mean gap, a weaker test)"
                for key, _ in self.limits if self.key_used(key, summary) != key]

    def describe(self, summary: dict | None = None) -> str:
        def name(key):
            return key[:-2].replace("_", " ").upper().replace(" P", " p")

        parts = []
        for key, limit in self.limits:
            used = key if summary is None else self.key_used(key, summary)
            stand_in = f" (checked on {name(used)})" if used != key else ""
            parts.append(f"{name(key)}{stand_in} <= {limit * 1e3:g} ms")
        return ", ".join(parts)


def is_overloaded(records: np.ndarray) -> bool:
    """True when the run's queue grows: see the module docstring."""
    if records.size == 0:
        return False
    if np.any(np.isin(records["status"], (PENDING, WAITING))):
        return True  # the run stopped with requests still queued
    done = records[records["status"] == FINISHED]  # rejected ones never queued
    if done.size == 0:
        return False
    order = np.argsort(done["arrival"], kind="stable")
    ttft = (done["first_token"] - done["arrival"])[order]
    quarter = max(ttft.size // 4, 1)
    first, last = float(np.median(ttft[:quarter])), float(np.median(ttft[-quarter:]))
    return last > max(OVERLOAD_GROWTH * first, OVERLOAD_FLOOR_S)
