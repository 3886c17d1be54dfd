"""R_calib candidates: statistics-based formulas against explicit token matrices."""

import math

import numpy as np
import pytest
import torch

from diag_synthetic import paired, stats_from_tokens, tokens
from fade.calibration.layer import LayerStatistics, output_error
from fade.diagnostics.reliability import (
    RELIABILITY,
    SplitLayerStatistics,
    SplitStatistics,
    correction_delta,
    correction_error,
    heldout_error_reduction,
    heldout_optimal_alpha,
    hessian_effective_rank,
    hessian_log_condition,
    input_discrepancy,
    needs_split,
    predicted_error_reduction,
    relative_correction_norm,
)

OUT, IN = 10, 12
DAMP = 0.05


def _layer(seed=0, n_tokens=200, noise=0.1, mixing_scale=0.05):
    rng = np.random.default_rng(seed)
    mixing = mixing_scale * rng.standard_normal((IN, IN))
    x, xq = paired(n_tokens, IN, rng, mixing=mixing, noise=noise)
    w = rng.standard_normal((OUT, IN))
    return w, x, xq, stats_from_tokens(x, xq)


def _ridge_delta(w, x, xq, damp, alpha=1.0):
    """α · W C (Ĥ + μI)⁻¹ with C, Ĥ formed from the tokens in numpy."""
    hq = xq.T @ xq
    c = (x - xq).T @ xq
    mu = damp * np.mean(np.diag(hq))
    return alpha * w @ c @ np.linalg.inv(hq + mu * np.eye(hq.shape[0]))


def test_correction_delta_and_its_relative_norm_match_a_numpy_ridge_solve():
    w, x, xq, stats = _layer()
    ref = _ridge_delta(w, x, xq, DAMP)
    np.testing.assert_allclose(correction_delta(torch.from_numpy(w), stats, DAMP).numpy(), ref, rtol=1e-8, atol=1e-12)
    assert relative_correction_norm(torch.from_numpy(w), stats, DAMP) == pytest.approx(
        np.linalg.norm(ref) / np.linalg.norm(w), rel=1e-8)


def test_input_discrepancy_matches_the_token_matrices():
    _, x, xq, stats = _layer(seed=1, noise=0.3)
    expected = np.linalg.norm(x - xq) / np.linalg.norm(xq)
    assert input_discrepancy(stats) == pytest.approx(expected, rel=1e-9)


def test_predicted_error_reduction_matches_direct_output_errors():
    w, x, xq, stats = _layer(seed=2)
    for alpha in (1.0, 0.4):
        w_star = w + _ridge_delta(w, x, xq, DAMP, alpha)
        e0 = np.sum((x @ w.T - xq @ w.T) ** 2)
        e1 = np.sum((x @ w.T - xq @ w_star.T) ** 2)
        got = predicted_error_reduction(torch.from_numpy(w), stats, DAMP, alpha=alpha)
        assert got == pytest.approx((e0 - e1) / e0, rel=1e-8)
        assert 0 < got < 1


def test_correction_error_of_any_candidate_matches_direct_and_the_layer_module():
    w, x, xq, stats = _layer(seed=3)
    delta = np.random.default_rng(30).standard_normal(w.shape) * 0.1
    direct = np.sum((x @ w.T - xq @ (w + delta).T) ** 2)
    assert correction_error(torch.from_numpy(w), torch.from_numpy(delta), stats) == pytest.approx(direct, rel=1e-9)
    relative = output_error(torch.from_numpy(w), torch.from_numpy(w + delta), stats)
    assert relative == pytest.approx(direct / np.sum((x @ w.T) ** 2), rel=1e-8)


def test_effective_rank_matches_numpy_svd_of_the_tokens():
    _, _, xq, stats = _layer(seed=4)
    s = np.linalg.svd(xq, compute_uv=False)
    p = s**2 / np.sum(s**2)
    expected = np.exp(-np.sum(p * np.log(p))) / IN
    assert hessian_effective_rank(stats) == pytest.approx(expected, rel=1e-9)
    # Isotropic inputs have (almost) full effective rank; rank-2 inputs have rank ≤ 2.
    rng = np.random.default_rng(40)
    iso = rng.standard_normal((20000, IN))
    assert hessian_effective_rank(stats_from_tokens(iso, iso)) > 0.95
    low = rng.standard_normal((500, 2)) @ rng.standard_normal((2, IN))
    assert hessian_effective_rank(stats_from_tokens(low, low)) <= 2 / IN + 1e-9


def test_effective_rank_cache_sees_in_place_updates():
    _, _, xq, stats = _layer(seed=5)
    first = hessian_effective_rank(stats)
    assert hessian_effective_rank(stats) == first
    bump = np.diag(np.linspace(0, 50 * np.trace(xq.T @ xq) / IN, IN))
    stats.hessian_q.add_(torch.from_numpy(bump))
    lam = np.linalg.eigvalsh(xq.T @ xq + bump)
    p = lam / lam.sum()
    assert hessian_effective_rank(stats) == pytest.approx(np.exp(-np.sum(p * np.log(p))) / IN, rel=1e-9)


def test_log_condition_is_of_the_damped_matrix_qep_solves_with():
    _, _, xq, stats = _layer(seed=6)
    hq = xq.T @ xq
    lam = np.linalg.eigvalsh(hq + DAMP * np.mean(np.diag(hq)) * np.eye(IN))
    assert hessian_log_condition(stats, DAMP) == pytest.approx(np.log(lam[-1] / lam[0]), rel=1e-9)
    # More damping, better conditioned.
    assert hessian_log_condition(stats, 1.0) < hessian_log_condition(stats, DAMP)


def _split_layer(seed, n_per_half, *, generalises, width=16):
    rng = np.random.default_rng(seed)
    mixing = 0.3 * rng.standard_normal((width, width)) if generalises else None
    noise = 0.02 if generalises else 0.3
    halves = [paired(n_per_half, width, rng, mixing=mixing, noise=noise) for _ in range(2)]
    w = rng.standard_normal((8, width))
    return w, halves, SplitStatistics(stats_from_tokens(*halves[0]), stats_from_tokens(*halves[1]))


def test_heldout_reduction_matches_direct_errors_on_the_other_half():
    w, halves, split = _split_layer(7, 60, generalises=True)
    scores, alphas = [], []
    for (xa, xqa), (xb, xqb) in ((halves[0], halves[1]), (halves[1], halves[0])):
        delta = _ridge_delta(w, xa, xqa, DAMP)
        target = xb @ w.T
        e0 = np.sum((target - xqb @ w.T) ** 2)
        e1 = np.sum((target - xqb @ (w + delta).T) ** 2)
        scores.append(1 - e1 / e0)
        # Best step along this direction on the held-out half, by least squares on the tokens.
        step = xqb @ delta.T
        alphas.append(np.sum((target - xqb @ w.T) * step) / np.sum(step**2))
    assert heldout_error_reduction(torch.from_numpy(w), split, DAMP) == pytest.approx(np.mean(scores), rel=1e-8)
    assert heldout_optimal_alpha(torch.from_numpy(w), split, DAMP) == pytest.approx(np.mean(alphas), rel=1e-8)


def test_heldout_score_is_high_when_the_correction_generalises_and_low_for_noise():
    w, _, good = _split_layer(8, 400, generalises=True)
    w2, _, noise = _split_layer(8, 20, generalises=False)
    good_score = heldout_error_reduction(torch.from_numpy(w), good, 0.01)
    noise_score = heldout_error_reduction(torch.from_numpy(w2), noise, 0.01)
    assert good_score > 0.8
    assert noise_score < 0.0 < good_score
    # In-sample, the pure-noise fit still looks useful: exactly what the held-out score exposes.
    assert predicted_error_reduction(torch.from_numpy(w2), noise.pooled(), 0.01) > 0.2
    assert heldout_optimal_alpha(torch.from_numpy(w), good, 0.01) > heldout_optimal_alpha(torch.from_numpy(w2), noise, 0.01)


def test_pooled_split_statistics_equal_statistics_of_all_tokens():
    _, halves, split = _split_layer(9, 30, generalises=True)
    x = np.concatenate([halves[0][0], halves[1][0]])
    xq = np.concatenate([halves[0][1], halves[1][1]])
    full = stats_from_tokens(x, xq)
    pooled = split.pooled()
    assert isinstance(pooled, SplitLayerStatistics) and isinstance(pooled, LayerStatistics) and pooled.split is split
    for field in ("hessian_q", "cross", "hessian_fp"):
        torch.testing.assert_close(getattr(pooled, field), getattr(full, field))
    assert pooled.num_tokens == full.num_tokens == 60


def test_registered_scores_are_the_documented_transforms_of_the_raw_quantities():
    w, _, _, stats = _layer(seed=10)
    wt = torch.from_numpy(w)
    _, _, split = _split_layer(11, 50, generalises=True, width=IN)
    assert RELIABILITY["correction_size"](wt, stats, DAMP) == pytest.approx(-math.log(relative_correction_norm(wt, stats, DAMP)))
    assert RELIABILITY["input_discrepancy"](wt, stats, DAMP) == pytest.approx(math.log(input_discrepancy(stats)))
    assert RELIABILITY["predicted_gain"](wt, stats, DAMP) == pytest.approx(-math.log(1 - predicted_error_reduction(wt, stats, DAMP)))
    assert RELIABILITY["hessian_conditioning"](wt, stats, DAMP) == pytest.approx(-hessian_log_condition(stats, DAMP))
    assert RELIABILITY["hessian_effective_rank"](wt, stats, DAMP) == pytest.approx(hessian_effective_rank(stats))
    assert RELIABILITY["heldout_gain"](wt, split.pooled(), DAMP) == pytest.approx(heldout_error_reduction(wt, split, DAMP))
    assert RELIABILITY["heldout_alpha"](wt, stats, DAMP, split=split) == pytest.approx(heldout_optimal_alpha(wt, split, DAMP))


def test_needs_split():
    assert needs_split("heldout_gain") and needs_split("heldout_alpha")
    assert not any(needs_split(n) for n in RELIABILITY if not n.startswith("heldout"))
    with pytest.raises(KeyError):
        needs_split("no_such_signal")
    w, _, _, stats = _layer(seed=12)
    with pytest.raises(ValueError, match="SplitStatistics"):
        RELIABILITY["heldout_gain"](torch.from_numpy(w), stats, DAMP)


def test_undefined_without_fp_stream_or_incoming_error():
    rng = np.random.default_rng(13)
    xq = tokens(100, IN, rng)
    w = torch.from_numpy(rng.standard_normal((OUT, IN)))
    same = stats_from_tokens(xq, xq)  # X̂ = X: C = 0, nothing to correct
    only_q = LayerStatistics(same.hessian_q, None, None, 100)
    for name, fn in RELIABILITY.items():
        if needs_split(name) or name.startswith("hessian"):
            continue
        assert math.isnan(fn(w, same, DAMP)), name
        assert math.isnan(fn(w, only_q, DAMP)), name
    # The Hessian-only signals are defined either way.
    assert math.isfinite(RELIABILITY["hessian_effective_rank"](w, only_q, DAMP))


def test_split_half_extrapolation_recovers_the_full_data_step_under_its_model():
    # ΔW_n = S + E_n with E_n ~ N(0, σ²/n): the held-out optimal step of half-data fits, extrapolated,
    # matches that of full-data fits (both estimated by simulation, on held-out targets S).
    from fade.diagnostics.reliability import extrapolate_split_half_step

    rng = np.random.default_rng(12)
    dim, draws = 400, 400
    signal = rng.standard_normal(dim)
    for noise in (0.5, 1.0, 2.0):
        def mean_step(n):
            fits = signal + noise * rng.standard_normal((draws, dim)) / math.sqrt(n)
            return float(np.mean(fits @ signal / np.sum(fits**2, axis=1)))
        half, full = mean_step(0.5), mean_step(1.0)
        assert extrapolate_split_half_step(half) == pytest.approx(full, abs=0.01)
        assert half < full < 1.0
    assert extrapolate_split_half_step(0.5) == pytest.approx(2 / 3)
    assert extrapolate_split_half_step(-0.2) == -0.2 and math.isnan(extrapolate_split_half_step(float("nan")))


def test_heldout_alpha_full_is_the_extrapolated_heldout_alpha():
    w, _, split = _split_layer(13, 60, generalises=True)
    wt = torch.from_numpy(w)
    a = heldout_optimal_alpha(wt, split, DAMP)
    assert 0 < a and RELIABILITY["heldout_alpha_full"](wt, split.pooled(), DAMP) == pytest.approx(2 * a / (1 + a))
    assert needs_split("heldout_alpha_full")
