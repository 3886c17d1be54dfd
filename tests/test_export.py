"""Packed compressed-tensors export: calibrate a random model, export, load back, compare bit for bit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from fade.calibration.layer import QuantizerSettings
from fade.calibration.sequential import SequentialCalibrator
from fade.data.manifest import read_manifest
from fade.export import ExportError, export_packed, load_packed
from fade.export.compressed import REPORT_NAME, SAFETENSORS_NAME, _pack_zero_point
from fade.models import get_family, load_model
from fade.quant import GridSpec
from fade.quant.packing import _unpack_plain

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _few_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _calibrate(loaded, utterances, grid: GridSpec, method: str = "gptq", **settings):
    family = get_family(loaded.family)
    calibrator = SequentialCalibrator(family, loaded, QuantizerSettings(method, grid, **settings), batch_size=4, track_fp=False)
    return calibrator.run(utterances)


def _generate(loaded, utterances) -> torch.Tensor:
    family = get_family(loaded.family)
    inputs = family.prepare_inputs(loaded, [u.load() for u in utterances])
    with torch.inference_mode():
        return loaded.model.generate(**inputs, max_new_tokens=12, do_sample=False, num_beams=1)


def _check_round_trip(loaded, result, out: Path, utterances, *, method: str = "auto") -> dict:
    """Every tensor of the reloaded model equals the calibrated model's, and so do generated ids."""
    back = load_packed(out, loaded.family, method=method)
    expected = result.model.state_dict()
    got = back.model.state_dict()
    assert set(got) == set(expected)
    for name in result.quantized:  # quantized Linears: dequantized weights bit for bit
        assert torch.equal(got[f"{name}.weight"], expected[f"{name}.weight"]), name
    for key in expected:  # everything else untouched
        assert got[key].dtype == expected[key].dtype and torch.equal(got[key], expected[key]), key
    reference = _generate(loaded, utterances)
    assert torch.equal(_generate(back, utterances), reference)
    # Random models generate degenerate token runs: teacher-forced logits are the sharper check
    # (and the reloaded processor must tokenize and featurize as the original one did).
    family = get_family(loaded.family)
    audios, texts = [u.load() for u in utterances], [u.text for u in utterances]
    with torch.inference_mode():
        logits = loaded.model(**family.calibration_batch(loaded, audios, texts).model_inputs, use_cache=False).logits
        logits_back = back.model(**family.calibration_batch(back, audios, texts).model_inputs, use_cache=False).logits
    assert torch.equal(logits_back, logits)
    return back.info


def _check_report(out: Path, report: dict, result, grid: GridSpec) -> None:
    assert json.loads((out / REPORT_NAME).read_text()) == report
    with safe_open(str(out / SAFETENSORS_NAME), "pt") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    quantized_keys = set()
    for name, layer in report["layers"].items():
        packed, scale = tensors[f"{name}.weight_packed"], tensors[f"{name}.weight_scale"]
        assert packed.dtype == torch.int32 and f"{name}.weight" not in tensors
        assert layer["packed_bytes"] == packed.nbytes == packed.shape[0] * -(-layer["in_features"] * grid.bits // 32) * 4
        assert layer["scale_bytes"] == scale.nbytes
        zero = tensors.get(f"{name}.weight_zero_point")
        assert layer["zero_point_bytes"] == (0 if zero is None else zero.nbytes)
        assert (zero is None) == grid.symmetric
        assert tensors[f"{name}.weight_shape"].tolist() == [layer["out_features"], layer["in_features"]]
        assert f"{name}.weight_g_idx" not in tensors  # trivial g_idx is never written
        quantized_keys |= {k for k in tensors if k.startswith(f"{name}.weight_")}
        payload = layer["packed_bytes"] + layer["scale_bytes"] + layer["zero_point_bytes"]
        assert layer["bits_per_weight"] == pytest.approx(8 * payload / layer["weights"])
    assert set(report["layers"]) == set(result.quantized)
    totals = report["totals"]
    assert totals["quantized_tensor_bytes"] == sum(tensors[k].nbytes for k in quantized_keys)
    assert totals["unquantized_tensor_bytes"] == sum(t.nbytes for k, t in tensors.items() if k not in quantized_keys)
    assert totals["safetensors_file_bytes"] == (out / SAFETENSORS_NAME).stat().st_size
    assert totals["checkpoint_bytes_on_disk"] == sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    weights = sum(layer["weights"] for layer in report["layers"].values())
    payload = sum(layer["packed_bytes"] + layer["scale_bytes"] + layer["zero_point_bytes"] for layer in report["layers"].values())
    assert totals["bits_per_quantized_weight"] == pytest.approx(8 * payload / weights)


def _check_config(out: Path, loaded, result, grid: GridSpec) -> dict:
    qconfig = json.loads((out / "config.json").read_text())["quantization_config"]
    assert (qconfig["quant_method"], qconfig["format"], qconfig["quantization_status"]) == ("compressed-tensors", "pack-quantized", "compressed")
    targets = [t for group in qconfig["config_groups"].values() for t in group["targets"]]
    assert sorted(targets) == sorted(result.quantized)  # exactly the quantized Linears, each once
    linears = {n for n, m in result.model.named_modules() if isinstance(m, torch.nn.Linear)}
    assert set(qconfig["ignore"]) == linears - set(result.quantized) and "proj_out" in qconfig["ignore"]
    for group in qconfig["config_groups"].values():
        weights = group["weights"]
        assert (weights["num_bits"], weights["type"], weights["symmetric"]) == (grid.bits, "int", grid.symmetric)
        assert weights["strategy"] == ("channel" if grid.group_size is None else "group")
    return qconfig


@pytest.mark.parametrize("family", ["whisper", "moonshine"])
@pytest.mark.parametrize("bits, group_size", [(4, 32), (3, None)], ids=["w4g32", "w3-channel"])
def test_export_round_trip_is_bit_exact(family, bits, group_size, tiny_manifest, tmp_path):
    utterances = read_manifest(tiny_manifest)
    loaded = load_model(family, "random", seed=0)
    grid = GridSpec(bits=bits, group_size=group_size)
    result = _calibrate(loaded, utterances, grid)
    out = tmp_path / "packed"
    report = export_packed(loaded, result, grid, out)

    qconfig = _check_config(out, loaded, result, grid)
    assert len(qconfig["config_groups"]) == 1
    assert next(iter(qconfig["config_groups"].values()))["weights"]["group_size"] == group_size
    _check_report(out, report, result, grid)
    for name in ("generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        assert (out / name).is_file(), name

    info = _check_round_trip(loaded, result, out, utterances)  # transformers' own loader
    assert info["load_method"] == "transformers"
    _check_round_trip(loaded, result, out, utterances[:2], method="explicit")  # fade's safetensors decompression


def test_symmetric_grid_stores_no_zero_point(tiny_manifest, tmp_path):
    utterances = read_manifest(tiny_manifest)[:2]
    loaded = load_model("whisper", "random", seed=0)
    grid = GridSpec(bits=4, symmetric=True, group_size=64)
    result = _calibrate(loaded, utterances, grid, method="rtn")
    report = export_packed(loaded, result, grid, tmp_path / "packed")
    _check_report(tmp_path / "packed", report, result, grid)
    _check_round_trip(loaded, result, tmp_path / "packed", utterances)


def test_ragged_groups_export_with_their_gcd(tiny_manifest, tmp_path):
    """Width 96 with g=64 (groups of 64 and 32) is written as g=32 with repeated scales; width 384 stays g=64."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    utterances = read_manifest(tiny_manifest)[:2]
    loaded = load_model("whisper", "random", seed=0)
    config = loaded.model.config.to_dict()
    config.update(d_model=96, encoder_ffn_dim=384, decoder_ffn_dim=384)
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(WhisperConfig(**config)).eval()
    model.generation_config = loaded.model.generation_config
    loaded.model = model
    grid = GridSpec(bits=4, group_size=64)
    result = _calibrate(loaded, utterances, grid)
    out = tmp_path / "packed"
    report = export_packed(loaded, result, grid, out)

    qconfig = _check_config(out, loaded, result, grid)
    sizes = {group["weights"]["group_size"]: set(group["targets"]) for group in qconfig["config_groups"].values()}
    assert sizes[64] == {n for n in result.quantized if n.endswith("fc2")}
    assert sizes[32] == set(result.quantized) - sizes[64]
    assert report["layers"]["model.encoder.layers.0.fc1"]["export_group_size"] == 32
    _check_report(out, report, result, grid)
    info = _check_round_trip(loaded, result, out, utterances)
    assert info["load_method"] == "explicit"  # transformers decompresses every layer with the first group's scheme


def test_zero_point_bits_are_fade_zero_points():
    """compressed-tensors' signed zero point (z − 2^(b−1)), packed along the output dimension, stores z's bits."""
    for bits in (2, 3, 4, 8):
        zero = torch.randint(0, 1 << bits, (40, 3), generator=torch.Generator().manual_seed(bits)).to(torch.float32)
        packed = _pack_zero_point(zero, bits)
        assert packed.dtype == torch.int32 and packed.shape == (-(-40 * bits // 32), 3)
        assert torch.equal(_unpack_plain(packed.T.contiguous(), bits, 40).T.to(torch.float32), zero)


def test_non_trivial_g_idx_and_existing_folder_are_refused(tiny_manifest, tmp_path):
    utterances = read_manifest(tiny_manifest)[:2]
    loaded = load_model("whisper", "random", seed=0)
    grid = GridSpec(bits=4, group_size=32)
    result = _calibrate(loaded, utterances, grid, act_order=True, static_groups=False)
    assert any(not torch.equal(q.g_idx, torch.arange(q.g_idx.numel()) // 32) for q in result.quantized.values())
    with pytest.raises(ExportError, match="g_idx"):
        export_packed(loaded, result, grid, tmp_path / "packed")
    assert not (tmp_path / "packed").exists() and not list(tmp_path.glob(".packed.*"))  # atomic: nothing left behind
    (tmp_path / "packed").mkdir()
    static = _calibrate(load_model("whisper", "random", seed=0), utterances, grid, act_order=True)
    with pytest.raises(ExportError, match="already exists"):
        export_packed(loaded, static, grid, tmp_path / "packed")
    report = export_packed(loaded, static, grid, tmp_path / "packed", overwrite=True, actorder="weight")
    assert report["actorder"] == "weight"
    qconfig = json.loads((tmp_path / "packed" / "config.json").read_text())["quantization_config"]
    assert qconfig["config_groups"]["group_0"]["weights"]["actorder"] == "weight"


def test_quantize_task_exports_when_asked(tiny_manifest, tmp_path):
    run = tmp_path / "run"
    args = ["model=whisper_random", "task=quantize", "dataset=manifest", f"dataset.source.manifest={tiny_manifest}",
            "calibration.source=${dataset.source}", "calibration.num_samples=2", "quantizer=rtn", "compensation=none",
            "bits=w4", "export=true", "runner.progress_bar=false", "runner.threads=1", "runner.max_new_tokens_floor=2",
            "runner.max_new_tokens_per_second=1", f"hydra.run.dir={run}"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "fade", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((run / "packed" / REPORT_NAME).read_text())
    assert report["bits"] == 4 and report["group_size"] is None and report["quantized_linears"] == 32
    back = load_packed(run / "packed", "whisper")
    assert back.info["load_method"] == "transformers"
