"""The step timeline: a valid trace-event document, faithful to the run, that changes
nothing the policy decides."""

from __future__ import annotations

import json

import jsonschema
import pytest

from batchlab.cli import main
from batchlab.studies import scenario
from batchlab.studies.timeline import TRACE_SCHEMA, run_with_timeline

PD = {"policy": "pd-disaggregated", "model": "deepseek-v3", "gpu": "h200", "gpus": 16, "dp": 2,
      "rate": 6.0, "requests": 40, "prompt": "lognormal:256:1.0", "output": "lognormal:32:1.0"}
DISAGG = {"policy": "disaggregated", "model": "deepseek-v3", "gpu": "h200",
          "attention_gpus": 8, "ffn_gpus": 8, "rate": 6.0, "requests": 40,
          "prompt": "lognormal:256:1.0", "output": "lognormal:32:1.0"}


@pytest.mark.parametrize("params", [PD, DISAGG], ids=["pd", "attention-ffn"])
def test_trace_is_valid_and_matches_the_run(params):
    result, recorder = run_with_timeline(params)
    doc = recorder.to_trace(result)
    jsonschema.validate(doc, TRACE_SCHEMA)
    json.dumps(doc, allow_nan=False)  # strict JSON: Perfetto rejects NaN
    steps = [e for e in doc["traceEvents"] if e["ph"] == "X" and e.get("cat") == "step"]
    # A multi-step batch is one span that says how many steps it covers.
    assert sum(e["args"]["steps"] for e in steps) == int(result.devices["steps"].sum())
    assert sum(e["args"]["tokens"] for e in steps) == int(result.devices["new_tokens"].sum())
    busy = sum(e["dur"] for e in steps) / 1e6
    assert busy == pytest.approx(float(result.devices["busy_time"].sum()), rel=1e-9)
    # Steps of one device never overlap.
    by_device = {}
    for e in steps:
        by_device.setdefault(e["tid"], []).append((e["ts"], e["ts"] + e["dur"]))
    for spans in by_device.values():
        spans.sort()
        assert all(a[1] <= b[0] + 1e-6 for a, b in zip(spans, spans[1:]))
    lifetimes = [e for e in doc["traceEvents"] if e.get("cat") == "request"]
    assert {e["tid"] for e in lifetimes} == {int(i) + 1 for i in result.finished["id"]}


def test_pd_steps_are_labelled_by_phase_and_kv_moves_are_marked():
    result, recorder = run_with_timeline(PD)
    kinds = {s["device"]: set() for s in recorder.steps}
    for s in recorder.steps:
        kinds[s["device"]].add(s["kind"])
    assert sorted(map(frozenset, kinds.values()), key=len) == [{"prefill"}, {"decode"}]
    assert len(recorder.migrations) == int(result.devices["kv_transfers"].sum())


def test_disaggregated_steps_carry_their_micro_batches():
    _, recorder = run_with_timeline(DISAGG)
    assert max(s["micro_batches"] for s in recorder.steps) >= 2


def test_recording_changes_nothing():
    result, _ = run_with_timeline(PD)
    plain = scenario.run(PD)
    assert result.summary() == plain.summary()


def test_schema_rejects_a_broken_event():
    bad = {"traceEvents": [{"name": "decode", "ph": "X", "pid": 1, "tid": 1, "ts": 0.0}]}
    with pytest.raises(jsonschema.ValidationError, match="dur"):
        jsonschema.validate(bad, TRACE_SCHEMA)


def test_cli_writes_the_timeline(tmp_path, capsys):
    path = tmp_path / "tl.json"
    assert main(["run", "--requests", "10", "--timeline", str(path)]) == 0
    doc = json.loads(path.read_text())
    jsonschema.validate(doc, TRACE_SCHEMA)
    assert doc["otherData"]["policy"] == "continuous"
    assert main(["run", "--requests", "5", "--timeline", str(tmp_path / "no" / "x.json")]) == 2
    assert "batchlab: error:" in capsys.readouterr().err
