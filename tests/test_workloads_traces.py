"""The trace loader (batchlab.workloads.load_trace): Azure and plain CSV, JSON lines, sorting,
scaling and limits, and the TraceError that names the file, line and field of each mistake.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from batchlab.core.errors import TraceError
from batchlab.workloads import load_trace


AZURE_HEAD = "TIMESTAMP,ContextTokens,GeneratedTokens\n"


def write(tmp_path, text, name="trace.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_azure_csv_with_seven_fractional_digits(tmp_path):
    path = write(tmp_path, AZURE_HEAD +
                 "2023-11-16 18:17:03.9799600,4808,10\n"
                 "2023-11-16 18:17:04.0319601,3180,8\n"
                 "2023-11-16 18:17:05,100,1\n"
                 "2023-11-16 18:17:05.5,100,2\n"
                 "2023-11-16 23:59:59.9999999,7,7\n"
                 "2023-11-17 00:00:00.0000001,9,9\n")
    w = load_trace(path)
    expected = [0.0, 0.0520001, 1.02004, 1.52004, 20576.0200399, 20576.0200401]
    np.testing.assert_allclose(w.arrival, expected, rtol=0, atol=1e-9)
    assert w.prompt_tokens.tolist() == [4808, 3180, 100, 100, 7, 9]
    assert w.output_tokens.tolist() == [10, 8, 1, 2, 7, 9]
    assert w.name == "trace.csv" and w.max_new_tokens == 10 and not w.is_closed_loop


def test_azure_timestamps_with_zone_and_t(tmp_path):
    path = write(tmp_path, AZURE_HEAD + "2023-11-16T10:00:00Z,1,1\n"
                 "2023-11-16 11:00:01.25+01:00,1,1\n")
    np.testing.assert_allclose(load_trace(path).arrival, [0.0, 1.25], atol=1e-9)


def test_plain_csv_sorted_stably_scaled_and_limited(tmp_path):
    path = write(tmp_path, "output_tokens,note,arrival,prompt_tokens\n"
                 "1,a,10.0,100\n"
                 "2,b,4.0,200\n"
                 "\n"
                 "3,c,10.0,300\n"
                 "4,d,12.5,400\n")
    w = load_trace(path)
    assert w.arrival.tolist() == [0.0, 6.0, 6.0, 8.5]
    assert w.prompt_tokens.tolist() == [200, 100, 300, 400]   # the tie at 10.0 keeps file order
    assert w.output_tokens.tolist() == [2, 1, 3, 4]
    assert load_trace(path, time_scale=0.5).arrival.tolist() == [0.0, 3.0, 3.0, 4.25]
    limited = load_trace(path, limit=2)   # the first two lines of the file, then sorted
    assert limited.prompt_tokens.tolist() == [200, 100] and limited.arrival.tolist() == [0, 6]
    capped = load_trace(path, max_new_tokens=2)
    assert capped.output_tokens.tolist() == [2, 1, 2, 2] and capped.max_new_tokens == 2


@pytest.mark.parametrize("suffix", [".jsonl", ".json-lines"])
def test_jsonl(tmp_path, suffix):
    rows = [{"arrival": 1.5, "prompt_tokens": 10, "output_tokens": 3, "extra": "x"},
            {"arrival": 0.5, "prompt_tokens": 20.0, "output_tokens": "4"}]
    path = write(tmp_path, "\n".join(map(json.dumps, rows)) + "\n\n", "t" + suffix)
    w = load_trace(path)
    assert w.arrival.tolist() == [0.0, 1.0] and w.prompt_tokens.tolist() == [20, 10]
    assert w.output_tokens.tolist() == [4, 3]


def test_jsonl_azure_scheme(tmp_path):
    rows = [{"TIMESTAMP": "2023-11-16 18:17:03.9799600", "ContextTokens": 5,
             "GeneratedTokens": 6},
            {"TIMESTAMP": "2023-11-16 18:17:04.0000000", "ContextTokens": 7,
             "GeneratedTokens": 8}]
    path = write(tmp_path, "\n".join(map(json.dumps, rows)), "t.jsonl")
    np.testing.assert_allclose(load_trace(path).arrival, [0.0, 0.02004], atol=1e-9)


def test_zero_generated_tokens_count_as_one(tmp_path):
    path = write(tmp_path, AZURE_HEAD + "2023-11-16 18:17:03,5,0\n2023-11-16 18:17:04,5,0\n"
                 "2023-11-16 18:17:05,5,3\n")
    with pytest.warns(UserWarning, match="2 request.s. with 0 output tokens counted as 1"):
        w = load_trace(path)
    assert w.output_tokens.tolist() == [1, 1, 3]


def test_no_warning_without_zero_outputs(tmp_path):
    path = write(tmp_path, AZURE_HEAD + "2023-11-16 18:17:03,5,2\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_trace(path)


TS = "2023-11-16 18:17:03.9799600"
OK = f"{TS},10,5\n"
PLAIN_HEAD = "arrival,prompt_tokens,output_tokens\n"


@pytest.mark.parametrize("name, text, line, field, problem", [
    ("t.csv", "TIMESTAMP,ContextTokens\n" + f"{TS},1\n", 1, "GeneratedTokens", "is missing"),
    ("t.csv", "arrival,prompt_tokens\n1,2\n", 1, "output_tokens", "is missing"),
    ("t.csv", "a,b,c\n1,2,3\n", 1, None, "no known columns"),
    ("t.csv", AZURE_HEAD + OK + f"{TS},x,5\n", 3, "ContextTokens", "not an integer: 'x'"),
    ("t.csv", AZURE_HEAD + OK + f"{TS},10,12.5\n", 3, "GeneratedTokens", "not an integer"),
    ("t.csv", AZURE_HEAD + OK + f"{TS},,5\n", 3, "ContextTokens", "is empty"),
    ("t.csv", AZURE_HEAD + OK + f"{TS},0,5\n", 3, "ContextTokens", "must be >= 1 token, got 0"),
    ("t.csv", AZURE_HEAD + OK + f"{TS},10,-3\n", 3, "GeneratedTokens", "must be >= 1 token"),
    ("t.csv", AZURE_HEAD + OK + "yesterday,10,5\n", 3, "TIMESTAMP", "is not a timestamp"),
    ("t.csv", AZURE_HEAD + OK + "2023-11-16 18:17:03.12345678901,1,1\n", 3, "TIMESTAMP",
     "is not a timestamp"),
    ("t.csv", AZURE_HEAD + OK + "2023-02-30 18:17:03,10,5\n", 3, "TIMESTAMP", "impossible date"),
    ("t.csv", AZURE_HEAD + OK + "2023-11-16 25:17:03,10,5\n", 3, "TIMESTAMP",
     "impossible time of day"),
    ("t.csv", AZURE_HEAD + OK + f"{TS},10\n", 3, "GeneratedTokens", "has 2 fields, the header "
                                                                    "has 3"),
    ("t.csv", AZURE_HEAD + OK + f"{TS},10,5,7\n", 3, None, "has 4 fields, the header has 3"),
    ("t.csv", AZURE_HEAD + OK + "\n\n" + f"{TS},10,x\n", 5, "GeneratedTokens", "not an integer"),
    ("t.csv", PLAIN_HEAD + "0.5,1,1\nnan,1,1\n", 3, "arrival", "not a finite number"),
    ("t.csv", PLAIN_HEAD + "soon,1,1\n", 2, "arrival", "not a finite number"),
    ("t.csv", AZURE_HEAD, 1, None, "has a header but no requests"),
    ("t.csv", "", None, None, "is empty"),
    ("t.jsonl", '{"arrival": 0, "prompt_tokens": 1, "output_tokens": 1}\n{oops\n', 2, None,
     "is not valid JSON"),
    ("t.jsonl", "[1, 2, 3]\n", 1, None, "must be a JSON object"),
    ("t.jsonl", '\n{"arrival": 0, "prompt_tokens": 1}\n', 2, "output_tokens", "is missing"),
    ("t.jsonl", '{"arrival": 0, "prompt_tokens": 1, "output_tokens": 1}\n'
                '{"arrival": 1, "output_tokens": 1}\n', 2, "prompt_tokens", "is missing"),
    ("t.jsonl", '{"arrival": 0, "prompt_tokens": true, "output_tokens": 1}\n', 1,
     "prompt_tokens", "not an integer: True"),
    ("t.jsonl", '{"arrival": "later", "prompt_tokens": 1, "output_tokens": 1}\n', 1, "arrival",
     "not a finite number"),
    ("t.jsonl", '{"TIMESTAMP": 17, "ContextTokens": 1, "GeneratedTokens": 1}\n', 1,
     "TIMESTAMP", "is not a timestamp"),
    ("t.jsonl", "\n\n", None, None, "is empty"),
])
def test_trace_errors_name_line_and_field(tmp_path, name, text, line, field, problem):
    path = write(tmp_path, text, name)
    with pytest.raises(TraceError) as info:
        load_trace(path)
    err = info.value
    assert (err.path, err.line, err.field) == (str(path), line, field)
    assert problem in err.problem
    where = str(path) if line is None else f"{path}:{line}"
    assert str(err).startswith(where) and (field is None or repr(field) in str(err))


def test_missing_trace_file(tmp_path):
    with pytest.raises(TraceError, match="not found") as info:
        load_trace(tmp_path / "nope.csv")
    assert info.value.line is None
