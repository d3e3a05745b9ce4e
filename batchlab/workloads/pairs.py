"""`TraceLengths`: (prompt, output) pairs taken together from a trace, for synthetic arrivals.

Simulators replay a production length mix at another rate this way: the lengths come from a
trace file, the arrival times from any arrival process (`make_workload(..., lengths=...)`,
`batchlab run --lengths TRACE --arrival poisson --rate 2`). A pair is kept whole because
prompt and output lengths are correlated in real traffic; drawing them from two separate
marginals would lose that.

`max_tokens` caps prompt + output the way Vidur's trace-length generator does (Agrawal et
al., MLSys'24, github.com/microsoft/vidur): a pair over the cap loses the excess from both
sides in proportion to their shares, each side rounded up, and each side keeps at least one
token. Pairs are drawn uniformly with replacement, so a run may be longer than the trace.
"""

from __future__ import annotations

import attrs
import numpy as np

from ..core.errors import ConfigError
from .checks import _optional_positive_int
from .lengths import EmpiricalLength


def cap_pairs(prompt: np.ndarray, output: np.ndarray, max_tokens: int):
    """Scale each (prompt, output) pair down proportionally to at most max_tokens in all."""
    prompt = np.asarray(prompt, dtype=np.int64)
    output = np.asarray(output, dtype=np.int64)
    total = prompt + output
    excess = np.maximum(total - max_tokens, 0)
    # Integer arithmetic for ceil(excess * share): exact, whatever the magnitudes.
    cut_prompt = -(-(excess * prompt) // total)
    cut_output = -(-(excess * output) // total)
    return (np.maximum(prompt - cut_prompt, 1), np.maximum(output - cut_output, 1))


def _pair_array(values) -> np.ndarray:
    arr = np.asarray(values, dtype=np.int64).reshape(-1)
    arr.flags.writeable = False
    return arr


@attrs.frozen(eq=False, repr=False)
class TraceLengths:
    """Observed (prompt, output) pairs; `sample_pairs` draws whole pairs.

    prompt, output: equal-length token counts, each >= 1 (a trace's ContextTokens and
        GeneratedTokens).
    max_tokens: optional cap on prompt + output per pair (see the module docstring).
    source: where the pairs came from, for descriptions.
    """

    prompt: np.ndarray = attrs.field(converter=_pair_array)
    output: np.ndarray = attrs.field(converter=_pair_array)
    max_tokens: int | None = attrs.field(default=None, validator=_optional_positive_int)
    source: str = "pairs"

    def __attrs_post_init__(self):
        if self.prompt.size == 0 or self.prompt.size != self.output.size:
            raise ConfigError(f"TraceLengths needs equal, non-empty prompt and output lists; "
                              f"got {self.prompt.size} and {self.output.size} ({self.source})")
        bad = np.flatnonzero((self.prompt < 1) | (self.output < 1))
        if bad.size:
            i = int(bad[0])
            raise ConfigError(f"TraceLengths pair {i} of {self.source} is ({self.prompt[i]}, "
                              f"{self.output[i]}); every prompt and output needs >= 1 token")
        if self.max_tokens is not None:
            if self.max_tokens < 2:
                raise ConfigError(f"TraceLengths.max_tokens must be >= 2 (one prompt and one "
                                  f"output token), got {self.max_tokens}")
            prompt, output = cap_pairs(self.prompt, self.output, self.max_tokens)
            object.__setattr__(self, "prompt", _pair_array(prompt))
            object.__setattr__(self, "output", _pair_array(output))

    @classmethod
    def from_trace(cls, path, *, max_tokens: int | None = None,
                   limit: int | None = None) -> "TraceLengths":
        """The pairs of a CSV/JSONL trace (see `load_trace`; its arrival times are dropped)."""
        from .traces import load_trace
        wl = load_trace(path, limit=limit)
        return cls(wl.prompt_tokens, wl.output_tokens, max_tokens=max_tokens, source=wl.name)

    @property
    def num_pairs(self) -> int:
        return int(self.prompt.size)

    def sample_pairs(self, rng: np.random.Generator, n: int):
        """n pairs drawn uniformly with replacement: (prompt, output) arrays."""
        pick = rng.integers(0, self.num_pairs, size=n)
        return self.prompt[pick], self.output[pick]

    def marginals(self) -> tuple[EmpiricalLength, EmpiricalLength]:
        """The prompt and output marginals (for descriptions and means; sampling uses pairs)."""
        return EmpiricalLength(self.prompt), EmpiricalLength(self.output)

    def __repr__(self) -> str:
        # Short, whatever the size of the trace: where the pairs came from, how many, the cap.
        return (f"TraceLengths({self.source!r}, {self.num_pairs} pairs, "
                f"max_tokens={self.max_tokens})")

    def describe(self) -> str:
        cap = "" if self.max_tokens is None else f", at most {self.max_tokens} tokens"
        return (f"pairs of {self.source} (n={self.num_pairs}, prompt mean "
                f"{self.prompt.mean():.0f}, output mean {self.output.mean():.0f}{cap})")
