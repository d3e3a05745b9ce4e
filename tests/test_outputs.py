"""What batchlab writes, as a user on a shared machine or in a CI log meets it: files with the
mode any tool's files get, progress only on terminals, status as a word, the device kind
said plainly, a README.txt in compare's folder, sweep folders and failed rows named."""

from __future__ import annotations

import csv
import io
import json
import os
import stat
import textwrap

import numpy as np
import pytest

import batchlab
from batchlab import ConfigError, affine_devices, simulate
from batchlab.cli import main
from batchlab.studies.scenario import AFFINE_KIND
from batchlab.studies import compare, sweep
from batchlab.studies.progress import Progress
from batchlab.workloads import Workload

TINY = textwrap.dedent("""
    [base]
    requests = 10
    [grid]
    policy = ["continuous", "fixed-window"]
    [[points]]
    model = "deepseek-v3"
    gpu = "rtx-4090"
""")


@pytest.fixture
def umask():
    """Set a umask for the test; the old one comes back after."""
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_sweep_files_get_the_umask_mode(tmp_path, umask, mask, monkeypatch, capsys):
    umask(mask)
    config = tmp_path / "grid.toml"
    config.write_text(TINY)
    monkeypatch.chdir(tmp_path)
    assert main(["sweep", str(config), "--processes", "1"]) == 0
    out = tmp_path / "grid-results"  # named for what it is, not "sweep-grid"
    files = [out / "results.csv", *sorted((out / "points").glob("*.json"))]
    assert len(files) == 3  # the failed point is not cached
    assert {_mode(p) for p in files} == {0o666 & ~mask}


def test_sweep_folder_of_a_file_called_sweep(tmp_path, monkeypatch, capsys):
    (tmp_path / "sweep.toml").write_text("[base]\nrequests = 5\n")
    monkeypatch.chdir(tmp_path)
    assert main(["sweep", "sweep.toml", "--processes", "1"]) == 0
    assert (tmp_path / "sweep-results" / "results.csv").exists()
    assert not (tmp_path / "sweep-sweep").exists()


def test_a_failed_point_names_its_policy_and_says_it_failed(tmp_path):
    rows = sweep.run_points([{"requests": 10, "model": "deepseek-v3", "gpu": "rtx-4090"}],
                            processes=1)
    assert rows[0]["policy"] == "continuous"  # the default, named
    assert rows[0]["error"].startswith("failed: ") and "does not fit" in rows[0]["error"]
    sweep.write_table(rows, tmp_path / "t.csv")
    row = next(csv.DictReader((tmp_path / "t.csv").open()))
    assert row["policy"] == "continuous" and row["error"].startswith("failed: ")


def test_progress_off_a_terminal_is_one_line_at_the_end(capsys):
    assert main(["run", "--requests", "30"]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and err.count("\n") == 1
    assert err.startswith("simulating: 30/30 done in ")


def test_progress_forced_draws_the_bar(capsys):
    assert main(["run", "--requests", "30", "--progress"]) == 0
    err = capsys.readouterr().err
    assert err.count("\r") > 1 and "100% (30/30) done in" in err


def test_progress_bar_shows_an_eta_on_long_work():
    now = [0.0]
    stream = io.StringIO()
    bar = Progress(stream, "running", is_terminal=True, clock=lambda: now[0])
    bar(10, 100)            # 10 reused from a cache: instant, not counted in the rate
    now[0] = 1.0
    bar(20, 100)            # too early for an ETA
    assert "ETA" not in stream.getvalue()
    now[0] = 10.0
    bar(30, 100)            # 20 points in 10 s: 70 left take 35 s
    assert stream.getvalue().endswith("30% (30/100) ETA 35s")
    now[0] = 100.0
    bar(90, 100)            # 80 in 100 s: 10 left take 12.5 s
    assert "ETA 12s" in stream.getvalue().rsplit("\r", 1)[1]
    now[0] = 130.0
    bar(100, 100)
    assert stream.getvalue().endswith("(100/100) done in 2m10s\n")


def test_progress_plain_writes_nothing_until_done():
    stream = io.StringIO()
    bar = Progress(stream, "running", is_terminal=False, clock=lambda: 5.0)
    for done in range(0, 10):
        bar(done, 10)
    assert stream.getvalue() == ""
    bar(10, 10)
    bar(10, 10)
    assert stream.getvalue() == "running: 10/10 done in 0s\n"


def test_affine_device_is_named_and_not_counted_as_a_gpu(capsys):
    assert main(["run", "--requests", "20"]) == 0
    text = capsys.readouterr().out
    assert "\n  kind      affine teaching device (fixed + per-token" in text
    assert "GPUs" not in text
    assert main(["run", "--requests", "20", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["device_kind"] == AFFINE_KIND and "num_gpus" not in doc
    assert main(["run", "--requests", "20", "--model", "llama-3-8b", "--gpu", "h100"]) == 0
    text = capsys.readouterr().out
    assert "affine" not in text and "GPUs" in text


def _result():
    wl = Workload(np.zeros(6), np.array([10, 10, 10, 10, 10, 100_000]), np.full(6, 4))
    return simulate("continuous", wl, affine_devices(1, kv_capacity_tokens=4096))


def test_records_say_status_in_words(tmp_path):
    result = _result()
    rows = list(csv.DictReader(result.to_csv(tmp_path / "r.csv").open()))
    assert [r["status"] for r in rows] == ["finished"] * 5 + ["rejected"]
    doc = json.loads(result.to_json())
    assert doc["records"][5]["status"] == "rejected"


@pytest.fixture
def no_pandas(monkeypatch):
    """Imports of pandas and pyarrow fail, as where the extra is not installed."""
    import builtins
    real = builtins.__import__

    def imports(name, *args, **kwargs):
        if name in ("pandas", "pyarrow"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", imports)


def test_to_pandas_without_pandas_names_the_extra(no_pandas):
    result = _result()
    with pytest.raises(ConfigError, match=r"needs pandas.*pip install 'batchlab\[pandas\]'"):
        result.to_pandas()
    with pytest.raises(ConfigError, match=r"pip install 'batchlab\[pandas\]'"):
        result.to_parquet("never.parquet")


def test_cli_parquet_without_pandas_is_one_line(tmp_path, capsys, no_pandas):
    assert main(["run", "--requests", "10", "--parquet", str(tmp_path / "r.parquet")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("batchlab: error: ") and "batchlab[pandas]" in err[-1]
    assert not (tmp_path / "r.parquet").exists()


def test_to_pandas_and_parquet(tmp_path):
    pd = pytest.importorskip("pandas")
    frame = _result().to_pandas()
    assert list(frame.columns) == list(batchlab.core.RECORD_DTYPE.names)
    assert frame["status"].tolist() == ["finished"] * 5 + ["rejected"]
    pytest.importorskip("pyarrow")
    back = pd.read_parquet(_result().to_parquet(tmp_path / "r.parquet"))
    assert back["status"].astype(str).tolist() == frame["status"].astype(str).tolist()


ONE_MODEL = textwrap.dedent("""
    [run]
    prompt = "lognormal:128:1.0"
    output = "lognormal:16:1.0"
    [traffic]
    local_requests = 3
    [[models]]
    key = "dense"
    kind = "dense"
    label = "Llama-3-8B on 1 x H100"
    model = "llama-3-8b"
    gpu = "h100"
""")


def test_compare_folder_explains_itself_and_is_group_readable(tmp_path, umask):
    umask(0o022)
    config = tmp_path / "one.toml"
    config.write_text(ONE_MODEL)
    out = tmp_path / "out"
    paths = compare.run(config, out, policies=["continuous"], processes=1, plots=False)
    readme = paths["readme"].read_text()
    for name in ("report.md", "results.csv", "tables/dense.csv", "points/", "hash"):
        assert name in readme
    written = [p for p in out.rglob("*") if p.is_file()]
    # README.txt, report.md, results.csv, the tables, the cached points (capacity probes too)
    names = {str(p.relative_to(out)) for p in written}
    assert {"README.txt", "report.md", "results.csv", "tables/dense.csv"} <= names
    assert any(n.startswith("points/capacity/") for n in names)
    assert {_mode(p) for p in written} == {0o644}, {n: oct(_mode(out / n)) for n in names}
