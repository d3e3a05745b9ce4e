"""Shared fixtures and small helpers for the test suite."""

from __future__ import annotations

import importlib.util
import os

import attrs
import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from batchlab.core import Plan
from batchlab.workloads import Workload

# CI runs the default profile; HYPOTHESIS_PROFILE=long searches harder locally.
settings.register_profile("default", max_examples=100, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=2000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def open_workload(arrival, prompt, output, **kw) -> Workload:
    return Workload(np.asarray(arrival, float), prompt, output, **kw)


@attrs.define
class Scripted:
    """A policy that plays back a list of functions, one per schedule() call.

    Each function receives (now, devices, added requests) and returns a Plan. Calls are logged.
    """

    script: list
    name: str = "scripted"
    added: list = attrs.field(factory=list)
    log: list = attrs.field(factory=list)
    updates: list = attrs.field(factory=list)

    def add(self, request, now):
        self.added.append(request)
        self.log.append(("add", now, request.id))

    def schedule(self, now, devices):
        self.log.append(("schedule", now, tuple(d.name for d in devices)))
        if not self.script:
            return Plan()
        return self.script.pop(0)(now, devices, self.added)

    def update(self, batch, result, now):
        self.log.append(("update", now, tuple(batch.request_ids.tolist())))
        self.updates.append((batch, result, now))

    def abort(self, request_id):
        self.log.append(("abort", request_id))


# -- the bad-input catalogue's files (test_bad_input_api.py, test_bad_input_cli.py) ----------

HEADER = "arrival,prompt_tokens,output_tokens\n"
TRACES = {
    "empty.csv": "",
    "header-only.csv": HEADER,
    "missing-column.csv": "arrival,prompt_tokens\n0,10\n",
    "unknown-columns.csv": "a,b,c\n1,2,3\n",
    "not-a-number.csv": HEADER + "0,10,3\n0.5,many,2\n",
    "negative.csv": HEADER + "0,-5,3\n",
    "nan-arrival.csv": HEADER + "nan,5,3\n",
    "short-row.csv": HEADER + "0,5\n",
    "bad.jsonl": '{"arrival": 0, "prompt_tokens": 3, "output_tokens": 1}\n{oops\n',
    "trace.txt": HEADER + "0,5,1\n",
    "huge-tokens.csv": HEADER + "0,99999999999999999999999,3\n",
    "huge-tokens.jsonl": '{"arrival": 0, "prompt_tokens": 99999999999999999999999, '
                         '"output_tokens": 3}\n',
    "far-arrival.csv": HEADER + "1e300,5,3\n",
}
BINARY = {
    "binary.csv": bytes(range(256)) * 4,
    "binary.jsonl": b"\x00\xfb\xff" * 100,
    "utf16.csv": (HEADER + "0,5,3\n").encode("utf-16"),
    "nul.csv": HEADER.encode() + b"0,5\x00,3\n",
    "huge-field.csv": HEADER.encode() + b"0," + b"9" * 200_000 + b",3\n",
    "sweep-binary.toml": b"\x00\xfb\xff" * 10,
}
CONFIGS = {   # compare --config files with wrong types or missing keys
    "no-key.toml": '[run]\n[traffic]\nrates=[1]\n[[models]]\nmodel="llama-3-8b"\n'
                   'gpu="h100"\nlabel="x"\n',
    "run-string.toml": 'run="x"\n[traffic]\nrates=[1]\n[[models]]\nkey="a"\nlabel="x"\n',
    "rates-int.toml": '[run]\n[traffic]\nrates=1\n[[models]]\nkey="a"\nlabel="x"\n',
    "models-table.toml": '[run]\n[traffic]\n[models]\nkey="a"\n',
    "study-no-knob.toml": '[run]\n[traffic]\n[[models]]\nkey="a"\nlabel="x"\n'
                          '[studies.s]\npolicy="continuous"\n',
    "study-model.toml": '[run]\n[traffic]\n[[models]]\nkey="a"\nlabel="x"\n[studies.s]\n'
                        'policy="continuous"\nknob="window"\nvalues=[0.1]\nmodel="zz"\n'
                        'rate=1\n',
    "variants-string.toml": '[run]\n[traffic]\n[[models]]\nkey="a"\nlabel="x"\n'
                            '[variants]\ncontinuous="fast"\n',
    "points-only.toml": '[[points]]\nrequests=0\n',
}

HAS_COSTMODEL = importlib.util.find_spec("batchlab.costmodel") is not None


@pytest.fixture
def traces(tmp_path):
    """tmp_path holding every file above: bad traces, wrong configs, binary bytes."""
    for name, text in {**TRACES, **CONFIGS}.items():
        (tmp_path / name).write_text(text)
    for name, data in BINARY.items():
        (tmp_path / name).write_bytes(data)
    return tmp_path


def one_line(exc: BaseException) -> str:
    message = str(exc)
    assert "\n" not in message, f"not one line: {message!r}"
    return message
