"""Trace lengths with synthetic arrivals: (prompt, output) pairs kept together, capped."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchlab import ConfigError
from batchlab.cli import main
from batchlab.workloads import TraceLengths, make_workload
from batchlab.workloads.pairs import cap_pairs

_PAIRS = st.lists(st.tuples(st.integers(1, 20_000), st.integers(1, 5_000)), min_size=1,
                  max_size=50)


def _write_trace(path, pairs):
    lines = ["TIMESTAMP,ContextTokens,GeneratedTokens"]
    lines += [f"2023-11-16 18:15:{i % 60:02d}.0000000,{p},{o}" for i, (p, o) in enumerate(pairs)]
    path.write_text("\n".join(lines) + "\n")
    return path


@given(pairs=_PAIRS, cap=st.integers(2, 8192))
def test_cap_scales_pairs_down_proportionally(pairs, cap):
    prompt, output = (np.array(x) for x in zip(*pairs))
    p, o = cap_pairs(prompt, output, cap)
    assert (p >= 1).all() and (o >= 1).all()
    assert (p + o <= np.maximum(cap, 2)).all()
    under = prompt + output <= cap
    assert (p[under] == prompt[under]).all() and (o[under] == output[under]).all()
    # Each side loses its share of the excess, rounded up: within one token of proportional.
    over = ~under
    share = prompt[over] / (prompt[over] + output[over])
    ideal = share * cap
    assert (((p[over] <= ideal + 1e-6) & (p[over] > ideal - 1)) | (p[over] == 1)).all()


def test_pairs_stay_together_with_any_arrival_process(tmp_path):
    pairs = [(100, 7), (2000, 300), (50, 1), (6000, 900)]
    trace = _write_trace(tmp_path / "t.csv", pairs)
    lengths = TraceLengths.from_trace(trace, max_tokens=4096)
    spec = make_workload("gamma", rate=3.0, cv=2.0, num_requests=500, lengths=lengths)
    wl = spec.sample(7)
    allowed = set(zip(lengths.prompt.tolist(), lengths.output.tolist()))
    assert set(zip(wl.prompt_tokens.tolist(), wl.output_tokens.tolist())) == allowed
    assert (3561, 534) in allowed  # 6900 -> 4096: 2804 cut, 2439 from the prompt, 366 output
    assert np.all(np.diff(wl.arrival) >= 0) and wl.arrival.size == 500
    assert spec.sample(7).prompt_tokens.tolist() == wl.prompt_tokens.tolist()


def test_bad_lengths_are_named(tmp_path):
    with pytest.raises(ConfigError, match="replaces prompt and output"):
        make_workload("poisson", rate=1.0, prompt="10",
                      lengths=TraceLengths([10], [5]))
    with pytest.raises(ConfigError, match="pair 1"):
        TraceLengths([10, 0], [5, 5])
    with pytest.raises(ConfigError, match="max_tokens"):
        TraceLengths([10], [5], max_tokens=1)


def test_cli_lengths(tmp_path, capsys):
    trace = _write_trace(tmp_path / "t.csv", [(300, 40), (5000, 1000)])
    assert main(["run", "--lengths", str(trace), "--max-tokens", "4096", "--arrival",
                 "poisson", "--rate", "2", "--requests", "30"]) == 0
    out = capsys.readouterr().out
    assert "pairs of t.csv" in out and "at most 4096 tokens" in out
    # the CLI names its own options (the API's messages name the settings)
    assert main(["run", "--lengths", str(trace), "--prompt", "10"]) == 2
    assert "; drop --prompt and --output" in capsys.readouterr().err
    assert main(["run", "--max-tokens", "10"]) == 2
    assert "--max-tokens caps the pairs of --lengths; give --lengths too" in \
        capsys.readouterr().err
    assert main(["run", "--lengths", str(tmp_path / "missing.csv")]) == 2
    assert main(["run", "--lengths", str(trace), "--trace", str(trace)]) == 2
    assert "--trace replays its own arrivals and lengths; drop --lengths" in \
        capsys.readouterr().err
    assert main(["run", "--runtime", "eager"]) == 2
    assert "--runtime needs --model and --gpu" in capsys.readouterr().err
