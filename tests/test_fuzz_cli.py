"""Fuzzing the command line: whatever the arguments or the trace bytes, `batchlab` either
succeeds or prints one line, "batchlab: error: ...", and exits with 2. Never a traceback.

In-process calls of `batchlab.cli.main(argv)`, a few dozen examples each, so the suite stays
fast; the runs are tiny (a handful of requests) so that an accepted input costs little.
"""

from __future__ import annotations

import contextlib
import io

from hypothesis import HealthCheck, given, settings, strategies as st

from batchlab.cli import main

FAST = settings(max_examples=40, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# Integers a user might type, in range or absurdly out of it.
INTS = st.one_of(st.integers(-3, 6), st.integers(10**9, 10**40), st.integers(-10**40, -10**9))
FLOATS = st.floats(allow_nan=True, allow_infinity=True).map(repr)
WORDS = st.sampled_from(["", "x", "nan", "-inf", "1e400", "0x10", "1_000", "uniform:1:9" * 3,
                         "uniform:5:1", "lognormal:1e308:1e308", "const:0", "3", "name=x",
                         "window=inf", "window=-0", "order=priority", "\x00", "é"])
VALUES = st.one_of(INTS.map(str), FLOATS, WORDS)
OPTIONS = ["--policy", "--set", "--time-scale", "--arrival", "--rate", "--cv", "--users",
           "--think-time", "--prompt", "--output", "--max-new-tokens", "--devices", "--price",
           "--slo-ttft", "--slo-tpot", "--seed", "--gpus", "--dp", "--limit", "--requests"]
POLICIES = st.sampled_from(["continuous", "fixed-window", "bucketing", "adaptive-window"])


def _call(argv) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exc:   # argparse: a bad option, or --help
            code = exc.code
    return code, err.getvalue()


def _assert_clean(argv, code, err):
    assert "Traceback" not in err, (argv, err)
    if code == 0:
        return
    assert code == 2, (argv, code, err)
    lines = [line for line in err.splitlines() if not line.startswith("  ")]   # progress bar
    assert len(lines) == 1 and lines[0].startswith("batchlab: error: "), (argv, err)


@FAST
@given(policy=POLICIES, pairs=st.lists(st.tuples(st.sampled_from(OPTIONS), VALUES), max_size=4))
def test_any_run_arguments_succeed_or_fail_in_one_line(policy, pairs):
    argv = ["run", "--policy", policy, "--requests", "3", "--output", "4"]
    for option, value in pairs:
        if option == "--requests":   # keep accepted runs tiny
            value = value if not value.isdigit() or int(value) > 10**8 else "2"
        argv += [option, value]
    _assert_clean(argv, *_call(argv))


ROWS = st.lists(st.tuples(st.one_of(FLOATS, INTS.map(str), WORDS),
                          st.one_of(INTS.map(str), WORDS), st.one_of(INTS.map(str), WORDS)),
                max_size=4)


@FAST
@given(data=st.one_of(
    st.binary(max_size=300),
    ROWS.map(lambda rows: ("arrival,prompt_tokens,output_tokens\n" + "".join(
        f"{a},{p},{o}\n" for a, p, o in rows)).encode()),
    ROWS.map(lambda rows: "".join(
        f'{{"arrival": {a}, "prompt_tokens": {p}, "output_tokens": {o}}}\n'
        for a, p, o in rows).encode()),
    st.text(max_size=200).map(lambda t: t.encode("utf-16"))),
    suffix=st.sampled_from([".csv", ".jsonl"]))
def test_any_trace_bytes_succeed_or_fail_in_one_line(tmp_path_factory, data, suffix):
    path = tmp_path_factory.mktemp("fuzz") / f"trace{suffix}"
    path.write_bytes(data)
    argv = ["run", "--trace", str(path)]
    _assert_clean(argv, *_call(argv))
