"""Bad input to the tool commands (`bench`, `serve`, `calibrate`) and to the Python API around
them: each mistake is one line, "batchlab: error: ...", naming the option or argument and how
to mend it, with exit status 2; never a traceback, a hang, or an internal class's name.

Nothing here measures anything: every case must be refused before a request is sent, a
socket is served or a shape is timed, so each runs in well under a second.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from batchlab.cli import main
from batchlab.core.errors import ConfigError


def one_line_error(capsys, argv) -> str:
    try:
        code = main(argv)
    except SystemExit as stop:   # argparse's way out, for an option it cannot parse
        code = stop.code
    assert code == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("batchlab: error: "), captured.err
    assert "Traceback" not in captured.err and "usage:" not in captured.err
    return lines[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- bench ------------------------------------------------------------------------------------

BENCH = ["bench", "--endpoint", "http://127.0.0.1:9"]   # nothing is sent to it


@pytest.mark.parametrize("args, words", [
    (["--max-concurrency", "-1"], "--max-concurrency must be an integer from 1"),
    (["--max-concurrency", "0"], "--max-concurrency must be an integer from 1"),
    (["--timeout", "0"], "--timeout must be a finite number > 0"),
    (["--timeout", "-1"], "--timeout must be a finite number > 0"),
    (["--timeout", "inf"], "--timeout must be a finite number"),
    (["--requests", "0"], "--requests must be an integer from 1"),
    (["--arrival", "closed", "--users", "0"], "--users must be an integer from 1"),
    (["--vocab", "1"], "--vocab must be an integer >= 2"),
    (["--set", "window=1"], "add --simulate or drop --set"),
    (["--simulate", "continuous", "--set", "x"], "--set expects KEY=VALUE, got 'x'"),
    (["--simulate", "no-such-policy"], "unknown policy 'no-such-policy'"),
    (["--no-such-option"], "unrecognized arguments: --no-such-option (see `batchlab bench"),
])
def test_bench_refuses_bad_options_in_one_line(capsys, args, words):
    line = one_line_error(capsys, BENCH + args)
    assert words in line
    assert "WorkloadSpec" not in line and "ClosedLoop" not in line


def test_bench_api_refuses_a_cap_or_timeout_that_would_hang_or_fail_everything():
    from batchlab.studies.bench import run_bench
    from batchlab.workloads import make_workload
    wl = make_workload("poisson", num_requests=2, rate=1.0, prompt=4, output=2)
    url = f"http://127.0.0.1:{free_port()}"
    for kw, words in (({"max_concurrency": -1}, "max_concurrency must be"),
                      ({"max_concurrency": 0}, "max_concurrency must be"),
                      ({"timeout": 0}, "timeout must be")):
        with pytest.raises(ConfigError, match=words):
            asyncio.run(asyncio.wait_for(run_bench(url, wl, **kw), 10))


# -- serve ------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, words", [
    (["--port", "99999"], "--port must be an integer from 0 to 65535"),
    (["--port", "-1"], "--port must be an integer from 0 to 65535"),
    (["--host", "999.1.1.1", "--port", "0"], "--host '999.1.1.1' is not a host name"),
    (["--kv-capacity", "-1"], "--kv-capacity must be an integer from 1"),
    (["--set", "x"], "--set expects KEY=VALUE"),
    (["--policy", "no-such-policy"], "unknown policy 'no-such-policy'"),
    (["--no-such-option"], "(see `batchlab serve --help`)"),
])
def test_serve_refuses_bad_options_in_one_line(capsys, args, words):
    pytest.importorskip("uvicorn")
    line = one_line_error(capsys, ["serve"] + args)
    assert words in line and "AffineDevice" not in line


def test_serve_names_a_port_already_taken(capsys):
    pytest.importorskip("uvicorn")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        line = one_line_error(capsys, ["serve", "--port", str(port)])
    assert f"cannot listen on --host 127.0.0.1 --port {port}" in line


# -- calibrate --------------------------------------------------------------------------------

@pytest.mark.parametrize("args, words", [
    (["--device", "tpu"], "unknown torch device 'tpu'; use cpu, cuda or cuda:N"),
    (["--repeats", "0"], "--repeats must be an integer from 1"),
    (["--threads", "0"], "--threads must be an integer from 1"),
    (["--kv-capacity", "-1"], "--kv-capacity must be an integer from 1"),
    (["--rate", "-1"], "--rate must be a finite number > 0"),
    (["--requests", "0"], "--requests must be an integer from 1"),
    (["--out", "/dev/null/x.toml"], "--out /dev/null/x.toml: /dev/null is not a folder"),
    (["--set", "x"], "--set expects KEY=VALUE, got 'x'"),
    (["--policy", "no-such-policy"], "unknown policy 'no-such-policy'"),
    (["--prompt", "0"], "--prompt must be a positive integer, got 0"),  # was ConstantLength.n
    (["--output", "uniform:5:1"], "--output 'uniform:5:1': low must be <= high"),
    (["--no-such-option"], "(see `batchlab calibrate --help`)"),
])
def test_calibrate_refuses_bad_options_before_measuring(capsys, tmp_path, args, words):
    pytest.importorskip("torch")
    argv = ["calibrate", "--quick", "--device", "cpu", "--out", str(tmp_path / "c.toml")]
    line = one_line_error(capsys, argv + args)
    assert words in line and "Poisson" not in line
    assert "calibrating" not in capsys.readouterr().out   # refused before any measurement
    assert not (tmp_path / "c.toml").exists()


def test_a_torch_model_file_with_a_bad_field_is_named(tmp_path):
    """It said "TransformerConfig 'tiny-dense': ...", the default name, not the file."""
    pytest.importorskip("torch")
    from batchlab.backends.torch.config import get_config
    path = tmp_path / "m.toml"
    path.write_text("num_layers = -1\n")
    with pytest.raises(ConfigError, match=f"^{path}: .*'num_layers' must be an int >= 1"):
        get_config(str(path))


def test_calibrate_api_refuses_no_repeats():
    pytest.importorskip("torch")
    from batchlab.backends.torch.calibrate import measure_grid
    with pytest.raises(ConfigError, match="repeats must be an integer >= 1"):
        measure_grid(object(), [], repeats=0)


# -- the command list -------------------------------------------------------------------------

def test_every_command_is_in_the_help_and_the_invalid_command_message(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    for command in ("calibrate", "serve", "bench", "run", "compare"):
        assert f"    {command}" in text, command
    line = one_line_error(capsys, ["no-such-command"])
    assert "'bench'" in line and "'serve'" in line and "'calibrate'" in line


# -- the Python API ---------------------------------------------------------------------------

def small_result():
    import batchlab
    from batchlab.workloads import make_workload
    wl = make_workload("poisson", rate=5.0, num_requests=5, prompt=10, output=5)
    return batchlab.simulate(batchlab.load_policy("continuous"), wl,
                             batchlab.affine_devices(1), seed=0)


def test_bucketing_takes_a_list_of_edges_and_names_the_argument_when_it_is_wrong():
    import batchlab
    assert batchlab.load_policy("bucketing", buckets=[64, 128]).edges.tolist() == [64, 128]
    assert batchlab.load_policy("bucketing", buckets="64,128").edges.tolist() == [64, 128]
    for bad in ([128, 64], [64, "x"], [True], 3, {"a": 1}):
        with pytest.raises(ConfigError, match="policy 'bucketing': buckets must be"):
            batchlab.load_policy("bucketing", buckets=bad)


@pytest.mark.parametrize("kw, words", [
    ({"slo_ttft": "a"}, "slo_ttft (seconds) must be a finite number > 0"),
    ({"slo_ttft": -1}, "slo_ttft (seconds) must be a finite number > 0"),
    ({"slo_tpot": float("nan")}, "slo_tpot (seconds) must be a finite number > 0"),
    ({"slo_tpot": 0}, "slo_tpot (seconds) must be a finite number > 0"),
    ({"price_per_device_hour": -2}, "price_per_device_hour must be a finite number >= 0"),
])
def test_summary_names_a_bad_slo_or_price(kw, words):
    result = small_result()
    with pytest.raises(ConfigError) as info:
        result.summary(**kw)
    assert words in str(info.value)
    assert result.summary(slo_ttft=10.0, slo_tpot=1.0)["slo_attainment"] == 1.0


@pytest.mark.parametrize("engine", ["simulate", "run_wallclock", "Server"])
def test_a_policy_class_instead_of_an_instance_is_named(engine):
    import batchlab
    from batchlab.engines.serving import Server
    from batchlab.engines.wallclock import run_wallclock
    from batchlab.policies.continuous import ContinuousBatching
    from batchlab.workloads import make_workload
    wl = make_workload("poisson", rate=5.0, num_requests=2, prompt=4, output=2)
    call = {"simulate": lambda: batchlab.simulate(ContinuousBatching, wl,
                                                  batchlab.affine_devices(1)),
            "run_wallclock": lambda: run_wallclock(ContinuousBatching, wl,
                                                   batchlab.affine_devices(1)),
            "Server": lambda: Server(ContinuousBatching, batchlab.affine_devices(1))}[engine]
    with pytest.raises(ConfigError, match=f"{engine} needs a policy object, got the class "
                                          r"ContinuousBatching; pass an instance"):
        call()


# -- nits -------------------------------------------------------------------------------------

def test_a_policy_filter_that_selects_nothing_says_so(capsys, monkeypatch):
    monkeypatch.setenv("BATCHLAB_POLICIES", "nope")
    line = one_line_error(capsys, ["policies"])
    assert "BATCHLAB_POLICIES=nope selects none of the installed policies" in line
    assert "continuous" in line and "pip" not in line


def test_a_workload_from_trace_lengths_prints_short(tmp_path):
    from batchlab.workloads import EmpiricalLength, TraceLengths, make_workload
    trace = tmp_path / "big.csv"
    trace.write_text("arrival,prompt_tokens,output_tokens\n" +
                     "".join(f"{i},{1 + i % 900},{1 + i % 300}\n" for i in range(5000)))
    lengths = TraceLengths.from_trace(trace, max_tokens=1000)
    assert repr(lengths) == "TraceLengths('big.csv', 5000 pairs, max_tokens=1000)"
    text = repr(make_workload("poisson", rate=2.0, num_requests=10, lengths=lengths))
    assert len(text) < 400 and "EmpiricalLength(<5000 samples, mean" in text, text
    assert repr(EmpiricalLength([3, 1, 2])) == "EmpiricalLength(samples=(3, 1, 2))"


def test_bench_says_slow_not_unreachable_when_the_server_is_up_but_times_out(capsys):
    """A server that accepts connections but answers after the timeout is up: the message
    must say to raise --timeout, not ask whether the server is running."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)   # accepts (the kernel does) and never answers
        port = listener.getsockname()[1]
        line = one_line_error(capsys, ["bench", "--endpoint", f"http://127.0.0.1:{port}",
                                       "--requests", "1", "--timeout", "0.2"])
    assert "did not answer in time" in line and "--timeout" in line
    assert "is the server running" not in line
