"""Mistakes an audit of the CLI and the API found slipping through: each now stops with one
line naming the file, the table and key, or the option, before anything runs."""

from __future__ import annotations

import textwrap

import numpy as np

import pytest

from batchlab import affine_devices, load_policy, simulate
from batchlab.workloads import make_workload
from batchlab.cli import main
from batchlab.core.errors import ConfigError

pytest.importorskip("batchlab.costmodel")
from test_bad_input_run_compare import TINY  # noqa: E402  (needs the cost model too)

# The small compare config of the run/compare bad-input tests, with a policy knob, a scale
# entry and a study: every table these checks read.
BASE = TINY.replace('policy = "continuous"\n',
                    'policy = "continuous"\nset = { max_num_seqs = 8 }\n', 1) + textwrap.dedent("""
    [[scale]]
    model = "dense"
    label = "one GPU"
    deploy = { gpus = 1 }
    set = { max_num_seqs = 16 }

    [studies.w]
    model = "dense"
    policy = "continuous"
    knob = "window"
    values = [0.0, 0.01]
    rate = 1
    requests = 10
    """)


def _config(tmp_path, old: str = "", new: str = "", extra: str = ""):
    assert old in BASE
    path = tmp_path / "c.toml"
    path.write_text(BASE.replace(old, new, 1) + extra)
    return path


def test_the_base_config_loads(tmp_path):
    from batchlab.studies.compare_plan import load_config
    assert load_config(_config(tmp_path))["models"][0]["key"] == "dense"


@pytest.mark.parametrize("old, new, extra, words", [
    ("", "", "[extra]\nx = 1\n", "the top level: unknown key 'extra'"),
    ("local_requests = 2", "local_request = 2", "", "[traffic]: unknown key 'local_request'"),
    ('set = { max_num_seqs = 8 }', 'sett = { max_num_seqs = 8 }', "",
     "[[policies]] #1: unknown key 'sett'"),
    ("deploy = { gpus = 1 }", "deply = { gpus = 1 }", "", "[[scale]] #1: unknown key 'deply'"),
    ("\nrequests = 10", "\nreqests = 10", "", "[studies.w]: unknown key 'reqests'"),
    ('kind = "dense"', 'kind = "sparse"', "", "'kind' must be \"moe\" or \"dense\", got 'sparse'"),
    ('policy = "continuous"\nset', 'policy = "continuos"\nset', "",
     "[[policies]] #1: unknown policy 'continuos'; available: "),
    ("max_num_seqs = 8", "max_num_seq = 8", "",
     "[[policies]] #1 set: policy 'continuous' has no parameter 'max_num_seq'"),
    ("max_num_seqs = 8", "max_num_seqs = -8", "", "[[policies]] #1 set: policy 'continuous'"),
    ("max_num_seqs = 8", 'max_num_seqs = "best:nostudy"', "",
     "max_num_seqs = 'best:nostudy' names no [studies] table (studies: w)"),
    ('knob = "window"', 'knob = "windw"', "",
     "[studies.w]: policy 'continuous' has no parameter 'windw'"),
    ("values = [0.0, 0.01]", "values = [0.0, -0.1]", "",
     "[studies.w]: policy 'continuous': window must be a duration from 0"),
    ('model = "llama-3-8b"', 'model = "llama-9"', "", "[[models]] #1 (dense): "),
    ("deploy = { gpus = 1 }", "deploy = { gpus = 1, tp = 3 }", "", "[[scale]] #1 (one GPU): "),
    ("max_num_seqs = 16", "max_num_seqs = 0", "",
     "[[scale]] #1 set: policy 'continuous'"),
    ("max_num_seqs = 16", "max_num_seq = 16", "",
     "[[scale]] #1 set: policy 'continuous' has no parameter 'max_num_seq'"),
    ("max_num_seqs = 16", 'max_num_seqs = "device"', "",
     "max_num_seqs = 'device': only a [[policies]] entry's set resolves"),
    ('output = "8"', 'output = "8"\nsed = 0', "", "[run]: unknown run setting 'sed'"),
    ("gpus = 1\n", "gpus = 1\ngpu_count = 1\n", "",
     "[[models]] #1 (dense): unknown run setting 'gpu_count'"),
])
def test_a_compare_config_mistake_is_named_before_anything_runs(tmp_path, old, new, extra,
                                                                 words):
    from batchlab.studies.compare_plan import load_config
    path = _config(tmp_path, old, new, extra)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    assert words in message


@pytest.mark.parametrize("grid, words", [
    ('policy = ["continuos"]', "unknown policy 'continuos'"),
    ('"policy.windw" = [0.1]', "policy 'continuous' has no parameter 'windw'"),
    ('"policy.window" = [-1.0]', "window must be a duration from 0"),
])
def test_a_sweep_refuses_a_policy_mistake_before_running(tmp_path, capsys, grid, words):
    path = tmp_path / "s.toml"
    path.write_text(f"[base]\nrequests = 3\n[grid]\n{grid}\n")
    assert main(["sweep", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"batchlab: error: {path}: sweep point 0 ") and words in err
    assert not (tmp_path / "out" / "results.csv").exists()


def test_output_paths_are_checked_before_the_run(tmp_path, capsys):
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("")
    cases = [
        (["run", "--records", str(tmp_path / "nodir" / "r.csv")], "--records",
         "does not exist; create it first"),
        (["run", "--save", str(tmp_path / "folder")], "--save", "is a folder; give a file"),
        (["run", "--timeline", str(tmp_path / "file" / "t.json")], "--timeline",
         "is not a folder"),
        (["compare", "--out", str(tmp_path / "file")], "--out", "is a file; give a folder"),
        (["compare", "--out", str(tmp_path / "file" / "sub")], "--out",
         "is a file, so the folder cannot be created"),
    ]
    for argv, option, words in cases:
        assert main([*argv, "--progress"] if argv[0] == "run" else argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"batchlab: error: {option} ") and words in err, err
        assert "simulating" not in err  # refused before the run, not after it


def test_a_failed_write_names_the_option(tmp_path, capsys, monkeypatch):
    from batchlab.engines.result import Result

    def full(self, path):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(Result, "to_csv", full)
    assert main(["run", "--requests", "2", "--records", str(tmp_path / "r.csv")]) == 2
    assert "--records " in capsys.readouterr().err


def test_an_arrival_name_in_capitals_gets_the_default_rate(capsys):
    assert main(["run", "--arrival", "Poisson", "--requests", "3"]) == 0
    assert "poisson(rate=1.5/s)" in capsys.readouterr().out


def test_a_policy_object_serves_one_run():
    spec = make_workload("poisson", rate=5.0, num_requests=5)
    policy = load_policy("continuous")
    with pytest.raises(ConfigError, match="needs a Workload"):  # refused: leaves it unused
        simulate(policy, "not a workload", affine_devices(1))
    simulate(policy, spec, affine_devices(1))
    with pytest.raises(ConfigError, match="already served a run; a policy keeps its state"):
        simulate(policy, spec, affine_devices(1))
    simulate(load_policy("continuous"), spec, affine_devices(1))  # a fresh one runs


@pytest.mark.parametrize("policy", [None, "x".encode(), 3])
def test_something_that_is_not_a_policy_is_named(policy):
    with pytest.raises(ConfigError, match="needs a policy .* which has no add, schedule"):
        simulate(policy, make_workload(rate=1.0, num_requests=2), affine_devices(1))


def test_a_binary_profile_file_is_one_line(tmp_path, capsys):
    path = tmp_path / "g.toml"
    path.write_bytes(b"\xff\xfe\x00")
    for option in ("--gpu", "--efficiency", "--model"):
        argv = ["run", "--model", "llama-3-8b", "--gpu", "h100", option, str(path)]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "not text" in err and "byte 0xff at offset 0" in err and "Traceback" not in err


def test_a_plugin_that_claims_a_builtin_name_is_named_not_chosen(tmp_path, monkeypatch,
                                                                  capsys):
    """A plugin declaring `continuous` used to replace the built-in without a word (which one
    ran depended on sys.path); now the name is broken, and says who declares it."""
    (tmp_path / "shadowplug.py").write_text(
        "from batchlab.policies.continuous import ContinuousBatching as Policy\n")
    info = tmp_path / "shadowplug-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: shadowplug\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[batchlab.policies]\ncontinuous = shadowplug:Policy\nshadow-ok = shadowplug:Policy\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from batchlab.core.errors import PluginError
    with pytest.raises(PluginError, match=r"policy 'continuous' from .* and .* is declared "
                       r"more than once") as info:
        load_policy("continuous")
    assert "shadowplug 1.0 (shadowplug:Policy)" in str(info.value)
    assert "(batchlab.policies.continuous:ContinuousBatching)" in str(info.value)
    load_policy("shadow-ok")  # its other, unclaimed name loads
    assert main(["policies"]) == 0
    out = capsys.readouterr().out
    assert "BROKEN: is declared more than once" in out


def test_api_arguments_of_the_wrong_kind_are_named(tmp_path):
    from batchlab.workloads import load_trace
    spec = make_workload(rate=1.0, num_requests=2)
    with pytest.raises(ConfigError, match="faults must be a batchlab.engines.faults.Faults"):
        simulate("continuous", spec, affine_devices(1), faults="x")
    with pytest.raises(ConfigError, match="load_trace.path must be a file path"):
        load_trace(None)
    # a rate so low the second arrival lands past any time a run may hold (1e9 s)
    with pytest.raises(ConfigError, match="Poisson.rate must be a rate of at least 1e-09"):
        make_workload(rate=1e-300, num_requests=2)


def test_a_profile_file_mistake_names_the_file(tmp_path):
    from batchlab.costmodel import load_gpu
    for text, words in (('base = "h999"\n', "unknown GPU preset 'h999'"),
                        ('base = "h100"\nprice_per_hour = "cheap"\n', "price_per_hour")):
        path = tmp_path / "g.toml"
        path.write_text(text)
        with pytest.raises(ConfigError) as info:
            load_gpu(path)
        assert str(info.value).startswith(f"{path}: ") and words in str(info.value)


def test_review_followups(tmp_path, capsys):
    """What a review of the fixes above found: a study's "device" is not resolved (only
    [[policies]] resolve it), so it is refused there; a knob beside a deferred one is not
    built alone (it may be valid only beside the value the study picks); a workload whose
    arrivals run past 1e9 s is refused however it got there; --records "" writes nothing."""
    from batchlab.studies.compare_plan import load_config
    path = _config(tmp_path, "\nrequests = 10",
                   '\nrequests = 10\nset = { max_num_seqs = "device" }')
    with pytest.raises(ConfigError, match=r"\[studies.w\]: max_num_seqs = 'device': only a "
                       r"\[\[policies\]\] entry's set resolves"):
        load_config(path)
    extra = ('[[policies]]\nlabel = "aw"\npolicy = "adaptive-window"\n'
             'set = { min_window = 2.0, window = 2.5, max_window = "best:mw" }\n'
             '[studies.mw]\nmodel = "dense"\npolicy = "adaptive-window"\n'
             'knob = "max_window"\nvalues = [3.0, 4.0]\nrate = 1\nset = { min_window = 2.0 }\n')
    assert load_config(_config(tmp_path, extra=extra))  # valid once the study picks
    capsys.readouterr()
    assert main(["run", "--arrival", "constant", "--rate", "1e-9", "--requests", "50"]) == 2
    assert "past the 1e+09 s any run may span" in capsys.readouterr().err
    assert main(["run", "--requests", "2", "--records", ""]) == 0


@pytest.mark.parametrize("rows", [1, 2])
def test_new_tokens_that_overflow_int64_are_refused_by_name(rows):
    """cached + new wrapped around int64 and passed `lengths <= known`: two such rows ran
    (num_tokens -20), one failed the memory check and then tripped the diagnosis's own
    assertion instead of a PolicyError."""
    from batchlab.core import Batch
    from batchlab.core.errors import PolicyError
    from batchlab.core.table import WAITING, RequestTable
    from batchlab.core.validate import check_batch
    table = RequestTable.for_requests(np.full(2, 100), np.full(2, 10))
    table.status[:2], table.cached[:2], table.home[:2] = WAITING, 50, 0
    batch = Batch(np.arange(rows), np.full(rows, 2**63 - 10), np.full(rows, 50))
    with pytest.raises(PolicyError, match=r"rule 'tokens'.* feeds 9223372036854775798 new "
                       "tokens but only 100 exist"):
        check_batch(batch, affine_devices(1)[0], 0, table, "p")
