"""QEP correction: the ridge problem it solves, α=0 neutrality, streamed statistics."""

import logging

import pytest
import torch

from fade.errors import QuantizationError
from fade.quant import GridSpec, QEPStatistics, gptq_quantize, qep_target


def _paired(out=20, width=32, tokens=300, noise=0.2, seed=0):
    """W, full-precision inputs X and perturbed (quantized-model) inputs X̂, [in, tokens]."""
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(out, width, generator=g, dtype=torch.float64)
    X = torch.randn(width, width, generator=g, dtype=torch.float64) @ torch.randn(width, tokens, generator=g, dtype=torch.float64)
    Xq = X + noise * torch.randn(width, tokens, generator=g, dtype=torch.float64) * X.std()
    return W, X, Xq


def _stats(X, Xq):
    return Xq @ Xq.T, (X - Xq) @ Xq.T


def test_alpha_one_is_the_ridge_least_squares_solution():
    W, X, Xq = _paired()
    Hq, C = _stats(X, Xq)
    damp = 0.05
    res = qep_target(W, Hq, C, alpha=1.0, damp=damp)
    # W' = argmin ‖W X − W' X̂‖² + μ ‖W' − W‖², μ = damp · mean(diag Ĥ); as a stacked
    # least-squares system in W'ᵀ: [X̂ᵀ; √μ I] W'ᵀ ≈ [(W X)ᵀ; √μ Wᵀ].
    mu = damp * torch.diagonal(Hq).mean()
    A = torch.cat([Xq.T, mu.sqrt() * torch.eye(W.shape[1], dtype=W.dtype)])
    B = torch.cat([(W @ X).T, mu.sqrt() * W.T])
    expected = torch.linalg.lstsq(A, B).solution.T
    assert res.weight_target.dtype == torch.float64
    torch.testing.assert_close(res.weight_target, expected, rtol=0, atol=1e-9)
    delta = expected - W
    assert res.delta_norm_ratio == pytest.approx(float(delta.norm() / W.norm()), rel=1e-8)
    assert res.damp_used == damp
    # and it does reduce the propagated-error objective relative to keeping W
    assert (W @ X - res.weight_target @ Xq).norm() < (W @ X - W @ Xq).norm()


def test_alpha_scales_the_correction_linearly():
    W, X, Xq = _paired(seed=1)
    Hq, C = _stats(X, Xq)
    full = qep_target(W, Hq, C, alpha=1.0)
    half = qep_target(W, Hq, C, alpha=0.5)
    torch.testing.assert_close(half.weight_target - W, 0.5 * (full.weight_target - W), rtol=0, atol=1e-12)
    assert half.delta_norm_ratio == pytest.approx(0.5 * full.delta_norm_ratio, rel=1e-9)
    # invariant to a common scale of the statistics (the reference averages with 2/N)
    scaled = qep_target(W, Hq * (2 / 300), C * (2 / 300), alpha=0.5)
    torch.testing.assert_close(scaled.weight_target, half.weight_target, rtol=0, atol=1e-10)


def test_alpha_zero_is_exactly_plain_gptq():
    W, X, Xq = _paired(seed=2)
    W = W.float()
    Hq, C = _stats(X, Xq)
    res = qep_target(W, Hq, C, alpha=0.0)
    assert torch.equal(res.weight_target, W) and res.delta_norm_ratio == 0.0
    spec = GridSpec(bits=3, group_size=16)
    corrected = gptq_quantize(res.weight_target, Hq, spec, act_order=True)
    plain = gptq_quantize(W, Hq, spec, act_order=True)
    assert torch.equal(corrected.codes, plain.codes) and torch.equal(corrected.weight_q, plain.weight_q)
    # bf16 weights come back as float32 (GPTQ's working precision), same values
    bf = W.bfloat16()
    assert torch.equal(qep_target(bf, Hq, C, alpha=0.0).weight_target, bf.float())


def test_streamed_statistics_give_the_same_target():
    W, X, Xq = _paired(seed=3, tokens=120)
    tok, tokq = X.T.reshape(4, 30, -1), Xq.T.reshape(4, 30, -1)
    mask = torch.rand(4, 30, generator=torch.Generator().manual_seed(0)) > 0.25
    stats = QEPStatistics(X.shape[0])
    for b in range(4):
        stats.add(tok[b : b + 1], tokq[b : b + 1], mask=mask[b : b + 1])
    kept, keptq = tok[mask].T, tokq[mask].T
    one_shot = qep_target(W, *_stats(kept, keptq), alpha=0.7)
    streamed = qep_target(W, stats.hessian_q, stats.cross, alpha=0.7)
    torch.testing.assert_close(streamed.weight_target, one_shot.weight_target, rtol=0, atol=1e-10)


def test_dead_input_keeps_original_column():
    W, X, Xq = _paired(seed=4)
    X[3], Xq[3] = 1.0, 0.0  # the quantized model zeroes feature 3
    Hq, C = _stats(X, Xq)
    res = qep_target(W, Hq, C, alpha=1.0)
    assert torch.isfinite(res.weight_target).all()
    assert torch.equal(res.weight_target[:, 3], W[:, 3])
    assert not torch.allclose(res.weight_target, W)


def test_rank_deficient_escalates_damping(caplog):
    W, X, Xq = _paired(width=32, tokens=10, seed=5)  # 10 tokens < 32 features
    Hq, C = _stats(X, Xq)
    with caplog.at_level(logging.WARNING, logger="fade.quant"):
        res = qep_target(W, Hq, C, alpha=1.0, damp=0.0, layer_name="enc.q_proj")
    assert res.damp_used > 0 and res.warnings
    assert any("enc.q_proj" in r.message for r in caplog.records)
    assert torch.isfinite(res.weight_target).all()


def test_bad_inputs_raise():
    W, X, Xq = _paired(seed=6)
    Hq, C = _stats(X, Xq)
    with pytest.raises(QuantizationError, match="cross has shape"):
        qep_target(W, Hq, C[:-1], alpha=0.5)
    with pytest.raises(QuantizationError, match="alpha=nan"):
        qep_target(W, Hq, C, alpha=float("nan"))
    with pytest.raises(QuantizationError, match="damp"):
        qep_target(W, Hq, C, alpha=0.5, damp=-1.0)
