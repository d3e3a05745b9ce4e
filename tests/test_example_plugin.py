"""The example plugin package (examples/custom_policy) is discovered by name and runs.

How it is "installed" here: exactly what `pip install` leaves on sys.path that discovery
reads, made by hand: a `<name>-<version>.dist-info` folder whose `entry_points.txt` is
generated from the example's own pyproject.toml (so the test checks the declaration a user
would ship), plus the package's `src/` folder. No pip, no build backend, no network: a real
`pip install` needs setuptools' `bdist_wheel` (the `wheel` package with setuptools < 70.1)
in the environment, or network access to fetch it under build isolation, and neither is
guaranteed in a fresh CI virtualenv. The discovery code cannot tell the two apart: both are
an installed distribution as importlib.metadata sees it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings
from hypothesis.stateful import run_state_machine_as_test

import batchlab
from batchlab import affine_devices, available_policies, load_policy, simulate
from batchlab.cli import main
from batchlab.workloads import Workload
from example_install import forget_modules, install_example

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "custom_policy"


@pytest.fixture
def installed(tmp_path, monkeypatch):
    packages = install_example("custom_policy", tmp_path, monkeypatch)
    yield
    forget_modules(packages)


def test_discovered_with_its_parameters(installed, capsys):
    info = {i.name: i for i in available_policies()}["shortest-prompt-first"]
    assert info.error is None and info.source.startswith("batchlab-spf 0.1.0")
    assert [p.name for p in info.params] == ["max_num_seqs", "max_prefill_tokens", "block_size"]
    assert main(["policies"]) == 0
    listing = capsys.readouterr().out
    assert "shortest-prompt-first  [batchlab-spf 0.1.0" in listing
    assert "--set max_prefill_tokens=<int>  (default 4096)" in listing


def test_runs_through_simulate_and_the_cli(installed, capsys):
    policy = load_policy("shortest-prompt-first", max_num_seqs="16")
    wl = Workload(np.linspace(0, 5, 50), np.arange(50) * 37 % 900 + 20, np.full(50, 12))
    assert simulate(policy, wl, affine_devices(2)).summary()["num_finished"] == 50
    policy.check_valid()
    assert main(["run", "--policy", "shortest-prompt-first", "--requests", "40", "--json"]) == 0
    assert '"num_finished": 40' in capsys.readouterr().out


def test_short_prompts_first_lowers_mean_ttft_of_a_burst(installed):
    """Its characteristic effect: 40 requests at once, prompts of 2,000 down to 50 tokens."""
    burst = Workload(np.zeros(40), np.arange(40, 0, -1) * 50, np.full(40, 16))
    spf = simulate(load_policy("shortest-prompt-first", max_num_seqs=8, max_prefill_tokens=2048),
                   burst, affine_devices(1)).summary()
    fcfs = simulate(load_policy("continuous", max_num_seqs=8, max_num_batched_tokens=2048,
                                chunked_prefill=False), burst, affine_devices(1)).summary()
    # Measured: mean TTFT 1.90 s shortest-first against 3.27 s first-come-first-served.
    assert spf["ttft_mean_s"] < 0.8 * fcfs["ttft_mean_s"]


def test_bad_parameter_is_a_config_error(installed):
    with pytest.raises(batchlab.ConfigError, match="policy 'shortest-prompt-first'.*> 0"):
        load_policy("shortest-prompt-first", max_num_seqs=0)


def _example_test(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLE / "tests" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_examples_own_tests_pass(installed):
    own = _example_test("test_spf")
    own.test_found_by_name_and_runs_everything()
    own.test_by_hand_shortest_first_budget_and_aborts()
    own.test_conforms()
    machine = _example_test("test_spf_state").Driven
    run_state_machine_as_test(machine, settings=settings(max_examples=25))


def test_not_found_without_installing():
    assert "shortest-prompt-first" not in {i.name for i in available_policies()}
