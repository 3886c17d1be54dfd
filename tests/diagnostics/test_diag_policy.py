"""FadePolicy: the α mapping, the AlphaPolicy protocol, timing of the normalisers."""

import math

import numpy as np
import pytest
import torch

from diag_synthetic import paired, stats_from_tokens
from fade.calibration.layer import ConstantAlpha, QuantizerSettings, process_linear
from fade.diagnostics import (
    RELIABILITY,
    VULNERABILITY,
    FadePolicy,
    SplitStatistics,
    alpha_from_score,
    neutral_alpha,
    parts_from_stages,
)
from fade.models.base import LinearGroup, Stage
from fade.diagnostics.reliability import input_discrepancy
from fade.quant import GridSpec

KEYS = {"v_int_raw", "v_int", "r_calib_raw", "r_calib", "s", "alpha"}
GRID = GridSpec(bits=4, group_size=8)
STAGES = [Stage("encoder", "model.encoder.layers", (LinearGroup(("fc1",)),), mask="encoder"),
          Stage("projector", "model.proj", (LinearGroup(("linear",)),), mask="encoder", single=True),
          Stage("decoder", "model.decoder.layers", (LinearGroup(("fc1",)),), mask="decoder")]


def _model(n_enc=4, n_dec=4, width=16, seed=0):
    """Weights of different tail-heaviness and per-layer statistics with growing input error."""
    rng = np.random.default_rng(seed)
    names = [f"model.encoder.layers.{i}.fc1" for i in range(n_enc)] + ["model.proj.linear"]
    names += [f"model.decoder.layers.{i}.fc1" for i in range(n_dec)]
    weights, stats = {}, {}
    for i, name in enumerate(names):
        w = rng.standard_t(2 + i, size=(12, width)) * (0.5 + i)
        weights[name] = torch.from_numpy(w).to(torch.float32)
        x, xq = paired(120, width, rng, mixing=0.05 * (i + 1) * rng.standard_normal((width, width)), noise=0.02 * (i + 1))
        stats[name] = stats_from_tokens(x, xq)
    return weights, stats


def _run(policy, weights, stats):
    policy.prepare(dict(weights), {"grid": GRID, "stages": STAGES})
    return {name: policy.alpha(name, weights[name], stats[name]) for name in weights}


def test_alpha_mapping_neutral_monotone_clipped():
    for lo, hi in ((0.2, 0.7), (0.0, 1.0), (0.3, 0.3)):
        assert alpha_from_score(0.0, lo, hi) == pytest.approx((lo + hi) / 2)
        grid = np.linspace(-50, 50, 2001)
        alphas = np.array([alpha_from_score(s, lo, hi) for s in grid])
        assert np.all(np.diff(alphas) >= 0)
        assert alphas.min() >= lo and alphas.max() <= hi
        for extreme in (-1e6, 1e6, -800.0, 800.0):  # no overflow in exp
            assert lo <= alpha_from_score(extreme, lo, hi) <= hi
    assert np.all(np.diff([alpha_from_score(s) for s in np.linspace(-5, 5, 101)]) > 0)  # strictly, off saturation
    assert alpha_from_score(1e6, 0.2, 0.7) == pytest.approx(0.7) and alpha_from_score(-1e6, 0.2, 0.7) == pytest.approx(0.2)
    # The paper's neutral value with the defaults.
    assert neutral_alpha() == pytest.approx(0.45)
    # σ(1) = 1 / (1 + e^-1), written out.
    assert alpha_from_score(1.0, 0.2, 0.7) == pytest.approx(0.2 + 0.5 / (1 + math.exp(-1)))


def test_no_signals_gives_the_neutral_alpha_everywhere():
    weights, stats = _model()
    policy = FadePolicy(v_int=None, r_calib=None, alpha_min=0.1, alpha_max=0.9)
    for alpha, diag in _run(policy, weights, stats).values():
        assert alpha == pytest.approx(0.5)
        assert set(diag) == KEYS and diag["s"] == 0.0 and math.isnan(diag["v_int_raw"]) and math.isnan(diag["r_calib_raw"])


@pytest.mark.parametrize("v_int", sorted(VULNERABILITY))
@pytest.mark.parametrize("r_calib", [n for n in sorted(RELIABILITY) if not n.startswith("heldout")])
def test_end_to_end_alpha_in_bounds_and_diagnostics_complete(v_int, r_calib):
    weights, stats = _model()
    policy = FadePolicy(v_int, r_calib, alpha_min=0.2, alpha_max=0.7, warmup=2)
    results = _run(policy, weights, stats)
    for name, (alpha, diag) in results.items():
        assert set(diag) == KEYS
        assert 0.2 <= alpha <= 0.7 and diag["alpha"] == alpha
        assert all(math.isfinite(diag[k]) for k in ("v_int", "r_calib", "s"))
        assert math.isfinite(diag["v_int_raw"])
        assert diag["v_int_raw"] == pytest.approx(VULNERABILITY[v_int](weights[name], GRID))
        assert diag["s"] == pytest.approx(diag["v_int"] + diag["r_calib"])
        assert alpha == pytest.approx(alpha_from_score(diag["s"], 0.2, 0.7))
    v = np.array([d["v_int"] for _, d in results.values()])
    assert v.mean() == pytest.approx(0, abs=1e-9) and v.std() == pytest.approx(1, rel=1e-9)


def test_r_calib_is_scored_against_earlier_layers_after_warmup():
    weights, stats = _model()
    policy = FadePolicy(None, "input_discrepancy", warmup=3)
    results = list(_run(policy, weights, stats).values())
    # r_calib_raw is the registered score before normalisation: log(‖δ‖/‖X̂‖).
    raw = [d["r_calib_raw"] for _, d in results]
    np.testing.assert_allclose(raw, [math.log(input_discrepancy(stats[n])) for n in weights], rtol=1e-12)
    assert [d["r_calib"] for _, d in results[:3]] == [0.0, 0.0, 0.0]
    for i in range(3, len(raw)):
        before = np.array(raw[:i])
        assert results[i][1]["r_calib"] == pytest.approx((raw[i] - before.mean()) / before.std(), rel=1e-9)
    # Inputs get worse along depth here, so later layers score above the running mean: α above neutral.
    assert all(a > neutral_alpha() for a, _ in results[4:])


def test_per_part_normalisation_and_parts_from_stages():
    weights, stats = _model()
    parts = parts_from_stages(weights, STAGES)
    assert parts["model.encoder.layers.0.fc1"] == "encoder" and parts["model.proj.linear"] == "projector"
    assert parts["model.decoder.layers.3.fc1"] == "decoder"
    policy = FadePolicy("kurtosis", "input_discrepancy", normalization="per_part", warmup=3)
    results = _run(policy, weights, stats)
    for part in ("encoder", "decoder"):
        v = np.array([d["v_int"] for n, (_, d) in results.items() if parts[n] == part])
        assert v.mean() == pytest.approx(0, abs=1e-9) and v.std() == pytest.approx(1, rel=1e-9)
        # Each part warms up on its own: its first three layers get r = 0.
        first = [d["r_calib"] for n, (_, d) in results.items() if parts[n] == part][:3]
        assert first == [0.0, 0.0, 0.0]
    assert results["model.proj.linear"][1]["v_int"] == 0.0  # a part of one layer has no spread


def test_signs_and_weights():
    weights, stats = _model()
    plus = _run(FadePolicy("crest_factor", None), weights, stats)
    minus = _run(FadePolicy("crest_factor", None, v_sign=-1, v_weight=2.0), weights, stats)
    for name in weights:
        assert minus[name][1]["v_int"] == pytest.approx(-plus[name][1]["v_int"])
        assert minus[name][1]["s"] == pytest.approx(-2 * plus[name][1]["v_int"])
    # With only V_int, α is increasing in the raw vulnerability (v_sign = +1).
    order = sorted(weights, key=lambda n: plus[n][1]["v_int_raw"])
    alphas = [plus[n][0] for n in order]
    assert alphas == sorted(alphas) and alphas[0] < neutral_alpha() < alphas[-1]


def _split_halves(rng):
    """Statistics of two disjoint halves of 80 tokens each, and their SplitStatistics."""
    halves = [stats_from_tokens(*paired(80, 16, rng, mixing=0.1 * np.eye(16), noise=0.01)) for _ in range(2)]
    return halves, SplitStatistics(*halves)


def test_heldout_signal_needs_the_split_and_uses_it():
    weights, _ = _model()
    name = "model.encoder.layers.2.fc1"
    halves, split = _split_halves(np.random.default_rng(3))
    policy = FadePolicy("rtn_error", "heldout_gain", warmup=0)
    policy.prepare(dict(weights), {"grid": GRID, "stages": STAGES})
    with pytest.raises(ValueError, match="split"):
        policy.alpha(name, weights[name], halves[0])
    alpha, diag = policy.alpha(name, weights[name], split.pooled())
    assert 0.2 <= alpha <= 0.7 and diag["r_calib_raw"] == pytest.approx(RELIABILITY["heldout_gain"](weights[name], split.pooled(), 0.01))
    _, diag2 = policy.alpha(name, weights[name], halves[0], split=split)
    assert diag2["r_calib_raw"] == pytest.approx(diag["r_calib_raw"])


def test_layer_without_incoming_error_contributes_zero():
    weights, stats = _model()
    name = next(iter(weights))
    rng = np.random.default_rng(4)
    x = rng.standard_normal((50, 16))
    policy = FadePolicy(None, "predicted_gain", warmup=0)
    policy.prepare(dict(weights), {"grid": GRID})
    alpha, diag = policy.alpha(name, weights[name], stats_from_tokens(x, x))
    assert math.isnan(diag["r_calib_raw"]) and diag["r_calib"] == 0.0 and alpha == pytest.approx(neutral_alpha())


def test_prepare_is_required_and_arguments_are_checked():
    weights, stats = _model()
    name = next(iter(weights))
    with pytest.raises(RuntimeError, match="prepare"):
        FadePolicy("kurtosis", None).alpha(name, weights[name], stats[name])
    for bad in (dict(v_int="nope"), dict(r_calib="nope")):
        with pytest.raises(KeyError):
            FadePolicy(**bad)
    with pytest.raises(ValueError):
        FadePolicy(normalization="per_layer")
    with pytest.raises(ValueError):
        FadePolicy(alpha_min=0.8, alpha_max=0.2)
    with pytest.raises(ValueError):
        FadePolicy(v_sign=0)


def test_callables_and_kwargs_are_accepted():
    weights, stats = _model()
    custom = FadePolicy(lambda w, grid: float(w.abs().max()), None)
    results = _run(custom, weights, stats)
    assert all(d["v_int_raw"] == pytest.approx(float(weights[n].abs().max())) for n, (_, d) in results.items())
    k2 = _run(FadePolicy("outlier_ratio", None, v_kwargs={"k": 2.0}), weights, stats)
    name = next(iter(weights))
    assert k2[name][1]["v_int_raw"] == pytest.approx(VULNERABILITY["outlier_ratio"](weights[name], k=2.0))


def test_oracle_normalisation_uses_the_complete_population():
    weights, stats = _model()
    first = _run(FadePolicy(None, "correction_size", warmup=0), weights, stats)
    oracle_values = {n: d["r_calib_raw"] for n, (_, d) in first.items()}
    second = _run(FadePolicy(None, "correction_size", r_oracle=oracle_values), weights, stats)
    arr = np.array(list(oracle_values.values()))
    for name, (_, diag) in second.items():
        assert diag["r_calib"] == pytest.approx((oracle_values[name] - arr.mean()) / arr.std())


def test_process_linear_records_the_diagnostics():
    weights, stats = _model()
    names = list(weights)
    policy = FadePolicy("rtn_error", "predicted_gain", warmup=0)
    policy.prepare(dict(weights), {"grid": GRID, "stages": STAGES})
    settings = QuantizerSettings("gptq", GRID)
    for name in names:
        q, record = process_linear(name, weights[name], stats[name], settings, policy=policy, qep_damp=0.01,
                                   record_uncorrected=True)
        assert KEYS <= set(record) and 0.2 <= record["alpha"] <= 0.7
        assert record["alpha"] == alpha_from_score(record["s"])
        _, constant = process_linear(name, weights[name], stats[name], settings, policy=ConstantAlpha(record["alpha"]),
                                     qep_damp=0.01, record_uncorrected=False)
        assert constant["err_final"] == pytest.approx(record["err_final"])


def test_sequential_runner_with_fade_policy(tiny_manifest):
    from fade.calibration.sequential import SequentialCalibrator
    from fade.data.manifest import read_manifest
    from fade.models import get_family, load_model

    loaded = load_model("whisper", "random", seed=0)
    policy = FadePolicy("rtn_error", "input_discrepancy", normalization="per_part", warmup=2)
    calibrator = SequentialCalibrator(get_family("whisper"), loaded, QuantizerSettings("rtn", GridSpec(bits=4, group_size=32)),
                                      policy=policy, batch_size=2)
    result = calibrator.run(read_manifest(tiny_manifest)[:1])
    assert result.records
    for record in result.records:
        assert KEYS <= set(record) and 0.2 <= record["alpha"] <= 0.7
        assert policy.parts[record["name"]] == record["part"]
    first = result.records[0]
    assert math.isnan(first["r_calib_raw"]) and first["r_calib"] == 0.0  # X̂ = X at the first layer
    for part in ("encoder", "decoder"):
        v = np.array([r["v_int"] for r in result.records if r["part"] == part])
        assert abs(v.mean()) < 1e-9 and v.std() == pytest.approx(1, rel=1e-9)


def test_direct_mapping_uses_the_held_out_step_as_alpha():
    weights, _ = _model()
    name = "model.encoder.layers.2.fc1"
    rng = np.random.default_rng(5)
    _, split = _split_halves(rng)
    step = RELIABILITY["heldout_alpha_full"](weights[name], split.pooled(), 0.01)
    for low, high in ((0.0, 1.0), (0.0, step / 2)):  # inside the bounds it is the step; outside, clipped
        policy = FadePolicy(None, "heldout_alpha_full", mapping="direct", alpha_min=low, alpha_max=high)
        policy.prepare(dict(weights), {"grid": GRID, "stages": STAGES})
        alpha, diag = policy.alpha(name, weights[name], split.pooled())
        assert alpha == pytest.approx(min(max(step, low), high)) and diag["r_calib_raw"] == pytest.approx(step)
    # no incoming error, so no step to take: the neutral α
    x = rng.standard_normal((50, 16))
    flat = SplitStatistics(stats_from_tokens(x[:25], x[:25]), stats_from_tokens(x[25:], x[25:]))
    alpha, _ = policy.alpha(name, weights[name], flat.pooled())
    assert alpha == pytest.approx(neutral_alpha(0.0, step / 2))


def test_direct_mapping_needs_a_step_valued_signal_alone():
    for bad in (dict(v_int="rtn_error", r_calib="heldout_alpha"), dict(v_int=None, r_calib="heldout_gain"),
                dict(v_int=None, r_calib=None)):
        with pytest.raises(ValueError, match="direct"):
            FadePolicy(**bad, mapping="direct")
    with pytest.raises(ValueError, match="mapping"):
        FadePolicy(mapping="linear")
