"""The sequential dual-stream calibrator on random models of every family (CPU, fast)."""

import pytest
import torch

from conftest import assert_layers_agree, calibrate_following, nudge_weights
from fade.calibration.layer import ConstantAlpha, LayerStatistics, QuantizerSettings, output_error
from fade.calibration.sequential import SequentialCalibrator
from fade.data.manifest import read_manifest
from fade.errors import QuantizationError
from fade.models import get_family, load_model
from fade.quant import GridSpec

FAMILIES = ["whisper", "moonshine", "qwen3_asr"]


def _calibrate(family, utterances, *, method="gptq", policy=None, bits=4, group_size=32, **kwargs):
    loaded = load_model(family, "random", seed=0)
    calibrator = SequentialCalibrator(get_family(family), loaded, QuantizerSettings(method, GridSpec(bits=bits, group_size=group_size)),
                                      policy=policy, batch_size=2, **kwargs)
    return loaded, calibrator.run(utterances)


@pytest.mark.parametrize("family", FAMILIES)
def test_every_block_linear_gets_a_record_and_a_grid_weight(family, tiny_manifest):
    utterances = read_manifest(tiny_manifest)
    loaded, result = _calibrate(family, utterances, policy=ConstantAlpha(0.5))
    stages = get_family(family).stages(loaded)
    expected = set()
    for stage in stages:
        module = result.model.get_submodule(stage.path)
        for prefix, block in ([(stage.path, module)] if stage.single else [(f"{stage.path}.{i}", b) for i, b in enumerate(module)]):
            expected |= {f"{prefix}.{n}" for n, m in block.named_modules() if isinstance(m, torch.nn.Linear)}
    assert {r["name"] for r in result.records} == expected
    for record in result.records:
        weight = result.model.get_submodule(record["name"]).weight
        assert torch.isfinite(weight).all()
        # 4-bit groups of 32: at most 16 distinct values per row and group.
        assert len(torch.unique(weight[0, :32])) <= 16
        assert record["err_final"] is not None and record["tokens"] > 0
    # The first Linear sees exactly the full-precision input; later layers inherit quantization error.
    first, last = result.records[0], result.records[-1]
    assert first["err_input_only"] == 0.0 and last["err_input_only"] > 0.0
    # The full-precision model is left untouched.
    fresh = load_model(family, "random", seed=0).model.state_dict()
    assert all(torch.equal(fresh[k], v) for k, v in loaded.model.state_dict().items())


def test_qep_with_alpha_zero_is_plain_gptq_bit_for_bit(tiny_manifest):
    utterances = read_manifest(tiny_manifest)
    _, plain = _calibrate("whisper", utterances)
    _, zero = _calibrate("whisper", utterances, policy=ConstantAlpha(0.0))
    a, b = plain.model.state_dict(), zero.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_qep_lowers_the_error_against_full_precision_on_later_layers(tiny_manifest):
    _, result = _calibrate("whisper", read_manifest(tiny_manifest), policy=ConstantAlpha(1.0), bits=3)
    later = [r for r in result.records if r["err_input_only"] > 1e-4]
    assert later, "no layer inherited any error"
    better = sum(r["err_final"] < r["err_uncorrected"] for r in later)
    assert better >= 0.8 * len(later)


def test_decoder_statistics_count_only_real_tokens(tiny_manifest):
    utterances = read_manifest(tiny_manifest)
    loaded, result = _calibrate("whisper", utterances, track_fp=False)
    family = get_family("whisper")
    batch = family.calibration_batch(loaded, [u.load() for u in utterances], [u.text for u in utterances])
    real_tokens = int(batch.masks["decoder"].sum())
    records = {r["name"]: r for r in result.records}
    assert records["model.decoder.layers.0.fc1"]["tokens"] == real_tokens
    assert records["model.encoder.layers.0.fc1"]["tokens"] == len(utterances) * 1500
    ids = batch.model_inputs["decoder_input_ids"][0]
    tokenizer = loaded.processor.tokenizer
    assert ids[0] == tokenizer.convert_tokens_to_ids("<|startoftranscript|>")
    assert tokenizer.decode(ids[batch.masks["decoder"][0]], skip_special_tokens=True).strip() == utterances[0].text


def test_rtn_without_compensation_needs_no_data():
    loaded = load_model("moonshine", "random", seed=0)
    calibrator = SequentialCalibrator(get_family("moonshine"), loaded, QuantizerSettings("rtn", GridSpec(bits=4)), track_fp=False)
    result = calibrator.run([])
    assert len(result.records) == len(calibrator.plan(loaded.model))


def test_settings_that_do_not_fit_fail_before_any_work(tiny_manifest):
    loaded = load_model("whisper", "random", seed=0)
    family = get_family("whisper")
    with pytest.raises(QuantizationError, match="group_size=128 is larger than the input width"):
        SequentialCalibrator(family, loaded, QuantizerSettings("gptq", GridSpec(4, group_size=128))).plan(loaded.model)
    with pytest.raises(QuantizationError, match="pattern 'lm_head' matches no quantizable Linear"):
        SequentialCalibrator(family, loaded, QuantizerSettings("gptq", GridSpec(4)), exclude=["lm_head"]).plan(loaded.model)


def test_excluded_linears_stay_in_full_precision(tiny_manifest):
    utterances = read_manifest(tiny_manifest)
    loaded, result = _calibrate("whisper", utterances, exclude=["*.fc2"])
    assert not any(r["name"].endswith("fc2") for r in result.records)
    original = loaded.model.get_submodule("model.encoder.layers.1.fc2").weight
    assert torch.equal(result.model.get_submodule("model.encoder.layers.1.fc2").weight, original)


def test_output_error_from_statistics_matches_direct_computation():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 12, generator=g, dtype=torch.float64)
    x_hat = x + 0.1 * torch.randn(200, 12, generator=g, dtype=torch.float64)
    w = torch.randn(5, 12, generator=g, dtype=torch.float64)
    w2 = w + 0.05 * torch.randn(5, 12, generator=g, dtype=torch.float64)
    stats = LayerStatistics(x_hat.T @ x_hat, (x - x_hat).T @ x_hat, x.T @ x, 200)
    direct = ((x @ w.T - x_hat @ w2.T) ** 2).sum() / ((x @ w.T) ** 2).sum()
    assert output_error(w, w2, stats) == pytest.approx(float(direct), rel=1e-9)


def test_fade_policy_with_held_out_reliability_gets_split_statistics(tiny_manifest):
    from fade.diagnostics import FadePolicy

    policy = FadePolicy("rtn_error", "heldout_gain", warmup=1)
    _, result = _calibrate("whisper", read_manifest(tiny_manifest), policy=policy)
    alphas = [r["alpha"] for r in result.records]
    assert all(0.2 <= a <= 0.7 for a in alphas) and len(set(alphas)) > 3
    scored = [r for r in result.records if r["r_calib_raw"] == r["r_calib_raw"]]  # not NaN
    assert scored, "no layer got a held-out reliability score"
    assert all({"v_int", "r_calib", "s"} <= set(r) for r in result.records)


@pytest.mark.parametrize("family", FAMILIES)
def test_replaying_frozen_submodules_changes_nothing(family, tiny_manifest):
    """Kept attention outputs give bit-for-bit the records and weights of recomputing them."""
    from fade.diagnostics import FadePolicy

    utterances = read_manifest(tiny_manifest)
    results = []
    for cache in (True, False):
        policy = FadePolicy("rtn_error", "heldout_gain", warmup=1)  # split statistics too
        loaded = load_model(family, "random", seed=0)
        calibrator = SequentialCalibrator(get_family(family), loaded, QuantizerSettings("gptq", GridSpec(bits=4, group_size=32)),
                                          policy=policy, batch_size=2, cache_frozen_outputs=cache)
        results.append(calibrator.run(utterances))
        # later stages reached their inputs without re-running the finished ones (both streams)
        assert calibrator.replayed_stages == (2 * (len(get_family(family).stages(loaded)) - 1) if cache else 0)
        # and attention outputs came from the output projection alone, without the attention core
        assert (calibrator.shortcut_calls > 0) == cache
    cached, recomputed = results
    assert [r["name"] for r in cached.records] == [r["name"] for r in recomputed.records]
    for a, b in zip(cached.records, recomputed.records):
        assert {k: v for k, v in a.items() if k != "seconds"} == {k: v for k, v in b.items() if k != "seconds"}
    state_a, state_b = cached.model.state_dict(), recomputed.model.state_dict()
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)


def test_forward_time_is_split_by_stream(tiny_manifest):
    utterances = read_manifest(tiny_manifest)
    _, qep = _calibrate("whisper", utterances, policy=ConstantAlpha(0.5))
    t = qep.seconds
    assert t["forward_q"] > 0 and t["forward_fp"] > 0
    assert t["forward"] == pytest.approx(t["forward_q"] + t["forward_fp"], abs=2e-3)  # each rounded to 1 ms
    _, gptq = _calibrate("whisper", utterances, track_fp=False)
    assert gptq.seconds["forward_fp"] == 0 and gptq.seconds["forward"] == pytest.approx(gptq.seconds["forward_q"], abs=1e-3)


def _follower(family, alpha=0.5, nudge=0.0):
    loaded = load_model(family, "random", seed=0)
    if nudge:
        nudge_weights(loaded, nudge)
    settings = QuantizerSettings("gptq", GridSpec(bits=4, group_size=32))
    return SequentialCalibrator(get_family(family), loaded, settings, policy=ConstantAlpha(alpha), batch_size=2)


@pytest.mark.parametrize("family", FAMILIES)
def test_layer_agreement_criterion_tolerates_a_summation_order_nudge(family, tiny_manifest, monkeypatch):
    # tests/test_cuda.py holds GPU calibrations to assert_layers_agree; the criterion must accept
    # what reordering alone does, or a correct GPU path would fail it.
    utterances = read_manifest(tiny_manifest)
    _, reference = _calibrate(family, utterances, policy=ConstantAlpha(0.5))
    other, own = calibrate_following(reference, _follower(family, nudge=1e-6), utterances, monkeypatch)
    assert_layers_agree(reference, other, own)


def test_layer_agreement_criterion_catches_a_different_calibration(tiny_manifest, monkeypatch):
    # ... and must reject a calibration that really differs, here QEP's α 0.4 instead of 0.5.
    utterances = read_manifest(tiny_manifest)
    _, reference = _calibrate("whisper", utterances, policy=ConstantAlpha(0.5))
    other, own = calibrate_following(reference, _follower("whisper", alpha=0.4), utterances, monkeypatch)
    with pytest.raises(AssertionError, match="entries agree|err_final|model"):
        assert_layers_agree(reference, other, own)
