"""Sweeps: grid expansion and config errors, the cache (resume), failed points, executors."""

from __future__ import annotations

import math
import sys

import pytest

from batchlab.studies import sweep
from batchlab.cli import main
from batchlab.core.errors import ConfigError

BASE = {"requests": 50, "prompt": "uniform:16:256", "output": "uniform:4:64"}
GRID = {"policy": ["continuous", "fixed-window"], "rate": [2.0, 8.0]}
CONFIG = """\
[base]
requests = 50
prompt = "uniform:16:256"
output = "uniform:4:64"

[grid]
policy = ["continuous", "fixed-window"]
rate = [2.0, 8.0]
"""
DOES_NOT_FIT = {"model": "deepseek-v3", "gpu": "h100", "requests": 5}


def points():
    return sweep.expand({"base": BASE, "grid": GRID})


def table(rows, path) -> str:
    return sweep.write_table(rows, path).read_text()


# -- config and expansion ------------------------------------------------------------------
def test_expand_is_the_product_in_file_order_then_the_extra_points():
    config = {"base": {"requests": 10}, "grid": {"policy": ["a", "b"], "rate": [1, 2, 3]},
              "points": [{"rate": 9, "label": "extra"}]}
    got = sweep.expand(config)
    assert [(p["policy"], p["rate"]) for p in got[:6]] == [
        ("a", 1), ("a", 2), ("a", 3), ("b", 1), ("b", 2), ("b", 3)]
    assert got[6] == {"requests": 10, "rate": 9, "label": "extra"}
    assert all(p["requests"] == 10 for p in got)
    assert sweep.expand({"base": {"rate": 1}}) == [{"rate": 1}]


def test_load_config_reads_tables_and_dotted_policy_keys(tmp_path):
    path = tmp_path / "s.toml"
    # Unquoted, policy.window is a TOML table: fine unless `policy` is set in the same table.
    path.write_text('[base]\npolicy.window = 0.01\n[grid]\n"policy.max_batch" = [4, 8]\n'
                    '[[points]]\nlabel = "x"\n')
    config = sweep.load_config(path)
    assert config["base"] == {"policy.window": 0.01}
    assert config["grid"] == {"policy.max_batch": [4, 8]}
    assert config["points"] == [{"label": "x"}]
    assert len(sweep.expand(config)) == 2 + 1


@pytest.mark.parametrize("text,message", [
    ("[base]\nrate = \n", "not valid TOML: Invalid value (at line 2"),
    ("[base]\nrats = 1\n", "[base]: unknown run setting 'rats'"),
    ("[grid]\nrats = [1]\n", "[grid]: unknown run setting 'rats'"),
    ("[[points]]\nrate = 1\n[[points]]\nrats = 1\n", "[[points]] #2: unknown run setting"),
    ("[grid]\nrate = 2.0\n", "[grid] rate must be a list of values"),
    ("[grid]\nrate = []\n", "[grid] rate is an empty list"),
    ("[grid]\nrate = [1, 1]\n", "[grid] rate lists 1 twice"),
    ("[grid]\nrate = [[1, 2]]\n", "[grid] rate[0] must be a string, number or boolean"),
    ("[base]\nrate = 1\n[grid]\nrate = [2]\n", "rate is in both [base] and [grid]"),
    ("[bsae]\nrate = 1\n", "unknown table [bsae]"),
    ("points = 3\n", "points must be an array of tables"),
])
def test_config_errors_name_the_file_and_key(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        sweep.load_config(path)
    assert str(info.value).startswith(f"{path}: ") and message in str(info.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="no such sweep file"):
        sweep.load_config(tmp_path / "nope.toml")


def test_point_key_is_stable_and_covers_settings_and_schema(monkeypatch):
    a = sweep.point_key({"rate": 1.0, "policy": "continuous"})
    assert a == sweep.point_key({"policy": "continuous", "rate": 1.0}) and len(a) == 24
    assert a != sweep.point_key({"policy": "continuous", "rate": 2.0})
    monkeypatch.setattr(sweep, "SCHEMA", sweep.SCHEMA + 1)
    b = sweep.point_key({"rate": 1.0, "policy": "continuous"})
    assert a != b
    # an edit to batchlab's code (same version) must not reuse rows the old code made
    monkeypatch.setattr(sweep, "code_fingerprint", lambda: "edited")
    assert b != sweep.point_key({"rate": 1.0, "policy": "continuous"})
    with pytest.raises(ConfigError, match="plain values"):
        sweep.point_key({"rate": object()})


# -- running, the cache and failures -------------------------------------------------------
def counting(monkeypatch, fail_after=None):
    calls = []
    real = sweep.evaluate

    def evaluate(params):
        if fail_after is not None and len(calls) == fail_after:
            raise RuntimeError("interrupted")
        calls.append(params)
        return real(params)
    monkeypatch.setattr(sweep, "evaluate", evaluate)
    return calls


def test_an_interrupted_sweep_resumes_and_a_finished_one_recomputes_nothing(
        tmp_path, monkeypatch):
    cache, seen = tmp_path / "points", []
    with monkeypatch.context() as m:
        counting(m, fail_after=2)
        with pytest.raises(RuntimeError) as info:
            sweep.run_points(points(), processes=1, cache_dir=cache)
    assert "while running sweep point 2" in info.value.__notes__[0]
    assert len(list(cache.glob("*.json"))) == 2
    with monkeypatch.context() as m:
        calls = counting(m)
        first = sweep.run_points(points(), processes=1, cache_dir=cache,
                                 progress=lambda d, t: seen.append((d, t)))
    assert len(calls) == 2 and seen == [(2, 4), (3, 4), (4, 4)]
    mtimes = {p: p.stat().st_mtime_ns for p in cache.glob("*.json")}
    with monkeypatch.context() as m:
        calls = counting(m)
        again = sweep.run_points(points(), processes=1, cache_dir=cache)
    assert calls == [] and mtimes == {p: p.stat().st_mtime_ns for p in cache.glob("*.json")}
    fresh = sweep.run_points(points(), processes=1)
    assert table(first, tmp_path / "a.csv") == table(again, tmp_path / "b.csv") \
        == table(fresh, tmp_path / "c.csv")
    assert [r["policy"] for r in again] == ["continuous"] * 2 + ["fixed-window"] * 2


def test_a_failed_point_is_recorded_not_cached_and_the_sweep_goes_on(tmp_path):
    todo = [{"requests": 20, "rate": 2.0}, DOES_NOT_FIT, {"requests": 20, "rate": 2.0}]
    rows = sweep.run_points(todo, processes=1, cache_dir=tmp_path)
    assert "does not fit" in rows[1]["error"] and rows[1]["model"] == "deepseek-v3"
    assert rows[0] == rows[2] and rows[0]["num_finished"] == 20 and "error" not in rows[0]
    assert len(list(tmp_path.glob("*.json"))) == 1  # one point run once, the failure not kept
    text = table(rows, tmp_path / "t.csv").splitlines()
    assert text[0].endswith(",error") and text[1].endswith(",")  # NaN and no-error: empty


def test_a_bug_propagates_naming_the_point(monkeypatch):
    monkeypatch.setattr(sweep.scenario, "run", lambda params: 1 / 0)
    with pytest.raises(ZeroDivisionError) as info:
        sweep.run_points([{"rate": 3.0}], processes=1)
    assert "{'rate': 3.0}" in info.value.__notes__[0]


def test_unknown_setting_or_executor_fails_before_running():
    with pytest.raises(ConfigError, match="sweep point 1 .*unknown run setting 'rats'"):
        sweep.run_points([{"rate": 1.0}, {"rats": 1.0}])
    with pytest.raises(ConfigError, match="unknown executor 'dask'"):
        sweep.run_points([{"rate": 1.0}], executor="dask")
    with pytest.raises(ConfigError, match="processes must be a positive int"):
        sweep.run_points([{"rate": 1.0}], processes=0)


def test_one_process_and_a_pool_of_two_give_the_same_table(tmp_path):
    serial = sweep.run_points(points(), processes=1)
    pooled = sweep.run_points(points(), processes=2)
    assert table(serial, tmp_path / "a.csv") == table(pooled, tmp_path / "b.csv")
    assert sweep.columns(serial)[:2] == ["requests", "prompt"]
    assert sweep.columns(serial)[-1] == "error"
    assert math.isnan(serial[0]["mfu"])


# -- the command line ----------------------------------------------------------------------
def test_cli_sweep_writes_the_table_and_reuses_points(tmp_path, capsys):
    config = tmp_path / "grid.toml"
    config.write_text(CONFIG)
    out = tmp_path / "out"
    assert main(["sweep", str(config), "--out", str(out), "--processes", "1"]) == 0
    printed = capsys.readouterr().out
    assert "fixed-window  8" in printed and "4 points (0 reused" in printed
    assert len((out / "results.csv").read_text().splitlines()) == 5
    assert len(list((out / "points").glob("*.json"))) == 4
    assert main(["sweep", str(config), "--out", str(out), "--processes", "1"]) == 0
    assert "4 points (4 reused" in capsys.readouterr().out


@pytest.mark.parametrize("argv,message", [
    (["sweep", "/no/such/sweep.toml"], "/no/such/sweep.toml: no such sweep file"),
    (["sweep", "CONFIG", "--address", "127.0.0.1:6379"], "applies to the ray executor only"),
    (["sweep", "CONFIG", "--processes", "0"], "--processes must be an integer from 1"),
])
def test_cli_sweep_errors(tmp_path, capsys, argv, message):
    config = tmp_path / "grid.toml"
    config.write_text(CONFIG)
    argv = [str(config) if a == "CONFIG" else a for a in argv]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("batchlab: error: ") and message in err


def test_ray_executor_without_ray_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` fail
    with pytest.raises(ConfigError, match=r"pip install 'batchlab\[ray\]'"):
        sweep.run_points([{"rate": 1.0}], executor="ray")


# -- Ray (last: it starts threads in this process, and the pool tests above fork) ----------
def test_cli_sweep_on_a_local_ray_instance_gives_the_local_table(tmp_path, capsys):
    ray = pytest.importorskip("ray")
    config = tmp_path / "grid.toml"
    config.write_text(CONFIG + "[[points]]\nmodel = \"deepseek-v3\"\ngpu = \"h100\"\n")
    assert main(["sweep", str(config), "--out", str(tmp_path / "local"),
                 "--processes", "1"]) == 0
    assert main(["sweep", str(config), "--out", str(tmp_path / "ray"), "--executor", "ray",
                 "--processes", "2"]) == 0
    assert not ray.is_initialized()  # the instance the sweep started is shut down
    local = (tmp_path / "local" / "results.csv").read_text()
    assert local == (tmp_path / "ray" / "results.csv").read_text()
    assert "does not fit" in local.splitlines()[-1]


def test_a_row_on_the_teaching_device_counts_no_gpus():
    """The affine teaching device stands for no GPU: its rows say what it is and leave the
    GPU count and tokens per GPU empty; a cost-model point keeps both."""
    from batchlab.studies import scenario
    affine = {**BASE, "rate": 8.0, "policy": "continuous", "seed": 0}
    row = scenario.summarize(affine, scenario.run(affine))
    assert row["device_kind"] == scenario.AFFINE_KIND and row["num_devices"] == 1
    assert "num_gpus" not in row and "output_tokens_per_s_per_gpu" not in row
    model = {**affine, "requests": 5, "model": "llama-3-8b", "gpu": "h100"}
    row = scenario.summarize(model, scenario.run(model))
    assert row["num_gpus"] == 1 and row["output_tokens_per_s_per_gpu"] > 0
    assert "device_kind" not in row
    # The API says the same: the affine device counts 0 GPUs, so nothing per GPU.
    from batchlab import affine_devices, load_policy, simulate
    from batchlab.workloads import make_workload
    summary = simulate(load_policy("continuous"), make_workload("poisson", rate=2.0,
                       num_requests=20), affine_devices(1)).summary()
    assert summary["num_gpus"] == 0 and math.isnan(summary["output_tokens_per_s_per_gpu"])
    assert summary["output_tokens_per_s_per_device"] > 0
