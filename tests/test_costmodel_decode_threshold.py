"""`decode_threshold`: rows of a few tokens (speculative decoding's verify steps, DeepSeek's
MTP) priced on the attention's decode path instead of as prefill chunks."""

from __future__ import annotations

import pytest

from batchlab.core import Batch, ConfigError
from batchlab.costmodel import batch_features, make_devices


def test_features_put_rows_up_to_the_threshold_on_the_decode_side():
    batch = Batch([0, 1, 2], [1, 2, 50], [10, 100, 0])
    # (T, R, TP, CP, AP, RD, CD, TD, QD), worked by hand: a row of n tokens over c cached
    # reads c + n keys and computes n*c + n(n+1)/2 query-key pairs
    assert batch_features(batch) == (53, 3, 52, 152, 200 + 0.5 * (4 + 2500 + 52), 1, 11, 1, 11)
    assert batch_features(batch, 2) == (53, 3, 50, 50, 0.5 * (2500 + 50), 2, 113, 3,
                                        11 + 200 + 3)
    # one-token rows are decode rows whatever the threshold
    decode = Batch.decode([0, 1], [7, 9])
    assert batch_features(decode, 4) == batch_features(decode) == (2, 2, 0, 0, 0, 2, 18, 2, 18)


@pytest.fixture(scope="module")
def ep128():
    return {k: make_devices("deepseek-v3", "h800", 128, tp=1, ep=128, decode_threshold=k)[0]
            for k in (1, 2)}


def test_an_mla_row_of_two_tokens_is_a_decode_with_the_threshold(ep128):
    g = ep128[1].num_gpus
    mtp = Batch(range(64 * g), [2] * (64 * g), [4095] * (64 * g))  # 64 rows/GPU, 2 tokens
    single = Batch.decode(range(128 * g), [4096] * (128 * g))      # the same tokens, 1 a row
    as_prefill, as_decode = ep128[1].run(mtp), ep128[2].run(mtp)
    # the prefill path decompresses every cached key of every row: many times the work
    assert as_prefill.duration > 5 * as_decode.duration
    # the decode path computes what two one-token rows a row would (the same query-key
    # pairs, compute-bound in FlashMLA), but reads each row's keys once
    a, b = ep128[2].explain(mtp), ep128[2].explain(single)
    assert a["attention"] == pytest.approx(b["attention"], rel=0.03)
    assert as_decode.cost.bytes < ep128[2].run(single).cost.bytes
    # and its expert-parallel traffic goes by DeepEP's low-latency kernels, as a decode's
    assert a["ffn_comm"] == pytest.approx(b["ffn_comm"], rel=1e-9)
    assert ep128[1].explain(mtp)["ffn_comm"] != pytest.approx(b["ffn_comm"], rel=0.05)


def test_grouped_query_attention_costs_the_same_on_either_path():
    # without MLA a row's attention costs the same either way (keys read once, the same
    # query-key pairs); without expert parallelism or attention groups nothing else changes
    for model, gpus in (("llama-3-8b", 1), ("llama-3-70b", 2), ("mixtral-8x7b", 2)):
        one, two = (make_devices(model, "h100", gpus, decode_threshold=k)[0] for k in (1, 2))
        for batch in (Batch([0, 1, 2], [2, 1, 2], [3000, 10, 500]),
                      Batch([0, 1], [2, 300], [100, 0]), Batch.decode(range(8), [64] * 8)):
            assert two.run(batch).duration == pytest.approx(one.run(batch).duration,
                                                            rel=1e-12)
    assert two._decode is not None or model == "mixtral-8x7b"  # the decode fast path


def test_a_batch_of_verify_rows_is_a_decode_batch_for_expert_parallelism():
    # DeepEP's low-latency kernels, as for the same tokens one a row (no overlap here, so
    # the step's communication is the dispatch and combine themselves)
    dev = make_devices("deepseek-v3", "h800", 32, tp=1, ep=32, decode_threshold=2)[0]
    g = dev.num_gpus
    mtp = dev.run(Batch(range(32 * g), [2] * (32 * g), [2000] * (32 * g))).cost
    single = dev.run(Batch.decode(range(64 * g), [2000] * (64 * g))).cost
    assert mtp.communication == pytest.approx(single.communication, rel=1e-9)
    # with the default threshold the same rows are prefill rows: the high-throughput kernels
    one = make_devices("deepseek-v3", "h800", 32, tp=1, ep=32)[0]
    prefill = one.run(Batch(range(32 * g), [2] * (32 * g), [2000] * (32 * g))).cost
    assert prefill.communication != pytest.approx(single.communication, rel=0.05)


def test_the_busiest_attention_group_keeps_decode_rows_and_tokens_whole():
    from batchlab.costmodel.groups import group_candidates
    # 10 rows over 4 groups: some group holds 3 whole rows; with a prompt among them, the
    # average group still holds 3 whole decode rows (not 0.3 of the 9), and their tokens
    decode = Batch(range(10), [50] + [1] * 9, [0] + [100] * 9)
    out = group_candidates(decode, batch_features(decode), 4)[0]
    assert out[1] == out[5] == out[7] == 3.0  # rows, decode rows, decode tokens
    mtp = Batch(range(10), [50] + [2] * 9, [0] + [100] * 9)
    out = group_candidates(mtp, batch_features(mtp, 2), 4, 2)[0]
    assert (out[1], out[5], out[7]) == (3.0, 3.0, 6.0)


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "2"])
def test_a_bad_threshold_is_named(value):
    with pytest.raises(ConfigError, match="decode_threshold"):
        make_devices("llama-3-8b", "h100", 1, decode_threshold=value)


def test_the_cli_and_configs_pass_it_to_the_devices(capsys):
    from batchlab.cli import main
    from batchlab.studies.scenario import build_devices
    devs = build_devices({"model": "deepseek-v3", "gpu": "h800", "gpus": 32, "tp": 1, "ep": 32,
                          "decode_threshold": 2})
    assert devs[0].step_model.decode_threshold == 2
    prefill, decode = build_devices({"deployment": "deepseek-v3-production",
                                     "decode_threshold": 3})
    assert prefill.step_model.decode_threshold == decode.step_model.decode_threshold == 3
    # the affine device and attention/FFN disaggregation have no such setting: said, not
    # ignored
    assert main(["run", "--requests", "5", "--decode-threshold", "2"]) == 2
    assert "--decode-threshold needs --model and --gpu" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="does not model decode_threshold"):
        build_devices({"model": "deepseek-v3", "gpu": "h800", "attention_gpus": 8,
                       "ffn_gpus": 8, "decode_threshold": 2})
    assert main(["run", "--model", "llama-3-8b", "--gpu", "h100", "--requests", "5",
                 "--decode-threshold", "0"]) == 2
    assert "--decode-threshold must be an integer from 1 to" in capsys.readouterr().err
