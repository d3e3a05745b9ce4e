"""Calibration (batchlab.backends.torch.calibrate): the fits recover known parameters, profiles round-trip
into the cost model, and `calibrate_main` runs end to end on the torch backend.

The fitting and profile tests need no torch (synthetic measurements from a cost-model device
with known efficiencies); the end-to-end one skips cleanly without it.
"""

from __future__ import annotations

import numpy as np
import pytest

from batchlab.backends.torch import calibrate as C
from batchlab.backends.torch.calibrate_cli import calibrate_main
from batchlab.backends.affine import AffineDevice
from batchlab.core import Batch
from batchlab.costmodel import Efficiency, ModelConfig, make_devices

MODEL = ModelConfig("tiny", vocab_size=256, hidden_size=64, num_layers=2, num_heads=4,
                    num_kv_heads=2, head_dim=16, intermediate_size=128, weight_dtype="fp32",
                    kv_dtype="fp32", act_dtype="fp32")
HOST = {"name": "test host", "flops": 5e10, "bandwidth": 2e10, "memory_bytes": 8 * 2**30}


def batches():
    out = [Batch.decode(range(b), [c] * b) for b in (1, 4, 16, 64) for c in (32, 512)]
    out += [Batch(range(b), [p] * b, [0] * b) for b, p in ((1, 64), (1, 512), (4, 128))]
    out += [Batch(range(17), [1] * 16 + [128], [256] * 16 + [0])]
    out += [Batch(range(32), [1] * 32, [128] * 32, num_micro_batches=m) for m in (2, 4)]
    return out


def synthetic(device):
    return [C.Measurement(f"shape {i}", b, device.run(b).duration)
            for i, b in enumerate(batches())]


def test_fit_efficiency_recovers_the_parameters_that_made_the_times():
    gpu = C.host_gpu_spec(HOST, model=MODEL, kv_capacity_tokens=4096)
    truth = Efficiency("truth", compute=0.4, memory=0.25, step_overhead=8e-4,
                       kernel_overhead=2e-5)
    ms = synthetic(make_devices(MODEL, gpu, 1, efficiency=truth)[0])
    eff, pred = C.fit_efficiency(ms, MODEL, gpu)
    y = np.array([m.seconds for m in ms])
    assert np.sqrt(np.mean(((pred - y) / y) ** 2)) < 0.02
    assert eff.compute == pytest.approx(0.4, rel=0.15)
    assert eff.memory == pytest.approx(0.25, rel=0.15)
    assert eff.step_overhead == pytest.approx(8e-4, rel=0.2)
    assert eff.kernel_overhead == pytest.approx(2e-5, rel=0.2)


def test_fit_affine_recovers_an_affine_device_exactly():
    truth = AffineDevice(fixed=2e-3, per_token=5e-5, per_context_token=3e-7)
    params, pred = C.fit_affine(synthetic(truth))
    assert params["fixed"] == pytest.approx(2e-3, rel=1e-6)
    assert params["per_token"] == pytest.approx(5e-5, rel=1e-6)
    assert params["per_context_token"] == pytest.approx(3e-7, rel=1e-6)


def test_fits_never_go_negative():
    # Times that fall with the batch size would want a negative per-token cost.
    ms = [C.Measurement("x", Batch.decode(range(b), [8] * b), 0.01 / b) for b in (1, 2, 4, 8)]
    params, _ = C.fit_affine(ms)
    assert min(params.values()) >= 0


def test_profile_round_trips_and_feeds_the_cost_model(tmp_path):
    gpu = C.host_gpu_spec(HOST, model=MODEL, kv_capacity_tokens=5000)
    eff = Efficiency("calibrated", compute=0.3, memory=0.5, step_overhead=1e-3,
                     kernel_overhead=1e-5)
    profile = C.Profile(gpu, MODEL, eff, {"fixed": 1e-3, "per_token": 1e-5,
                                          "per_context_token": 1e-8}, 5000,
                        {"name": "tiny"}, {"costmodel_rms_rel_err": 0.1})
    path = C.write_profile(tmp_path / "p.toml", profile)
    back = C.load_profile(path)
    assert back.gpu == gpu and back.model == MODEL and back.efficiency == eff
    assert back.affine == profile.affine and back.kv_capacity_tokens == 5000
    # The file is what make_devices (and the CLI's --model/--gpu) read, and its memory plan
    # holds the torch device's KV capacity.
    dev = make_devices(str(path), str(path), 1, efficiency=str(path))[0]
    assert abs(dev.kv_capacity_tokens - 5000) <= 1
    batch = Batch.decode([0, 1], [10, 20])
    assert dev.run(batch).duration == pytest.approx(back.devices()[0].run(batch).duration)
    assert back.devices(2, "affine")[1].name == "dev1"


def test_load_profile_names_a_file_that_is_not_one(tmp_path):
    bad = tmp_path / "x.toml"
    bad.write_text("[gpu]\nname = 'x'\n")
    with pytest.raises(C.ConfigError, match="not a calibration profile"):
        C.load_profile(bad)


def test_calibrate_main_end_to_end_on_torch(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    out = tmp_path / "cal.toml"
    try:
        code = calibrate_main(["--model", "tiny-dense", "--device", "cpu", "--threads", "1",
                                 "--quick", "--repeats", "2", "--kv-capacity", "4096",
                                 "--out", str(out), "--rate", "40", "--requests", "10",
                                 "--prompt", "uniform:8:32", "--output", "uniform:2:8"])
    finally:
        torch.set_num_threads(before)
    text = capsys.readouterr().out
    assert code == 0, text
    assert "relative error over 7 shapes" in text and "output_tokens_per_s" in text
    profile = C.load_profile(out)
    assert profile.kv_capacity_tokens == 4096 and profile.model.name == "tiny-dense"
    for key in ("costmodel_rms_rel_err", "affine_rms_rel_err",
                "fidelity_costmodel_throughput_rel_err", "fidelity_costmodel_ttft_p50_rel_err",
                "fidelity_costmodel_tpot_p50_rel_err"):
        assert np.isfinite(profile.fit[key]), key
