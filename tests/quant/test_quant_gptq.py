"""GPTQ against RTN, against a plain column-by-column OBQ reference, and under stress."""

import logging

import pytest
import torch

from fade.errors import QuantizationError
from fade.quant import GridSpec, dequantize, fit_scales, gptq_quantize, quantize_codes, rtn_quantize


def _problem(out=48, width=96, tokens=512, seed=0):
    """Weight and correlated inputs X = A Z (columns are tokens)."""
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(out, width, generator=g)
    mixing = torch.randn(width, width, generator=g) / width**0.5
    scales = torch.rand(width, 1, generator=g) * 2 + 0.1
    X = (mixing @ torch.randn(width, tokens, generator=g)) * scales
    return W, X, (X @ X.T).double()


def _output_error(W, Q, X):
    return float(((W - Q) @ X).square().sum())


def slow_gptq(W, H, spec, *, percdamp=0.01, act_order=False, static_groups=False):
    """Unblocked GPTQ/OBQ in float64: quantize one column, spread its error with the
    current inverse Hessian, then remove that column from the inverse (OBQ update)."""
    W, H = W.double().clone(), H.double().clone()
    n, g = W.shape[1], spec.group_size
    row = GridSpec(bits=spec.bits, symmetric=spec.symmetric)
    if g is None:
        scale, zero = fit_scales(W, spec)
    dead = torch.diagonal(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    if g is not None and static_groups:
        scale, zero = fit_scales(W, spec)
    perm = torch.argsort(torch.diagonal(H), descending=True, stable=True) if act_order else torch.arange(n)
    W, H = W[:, perm], H[perm][:, perm]
    H += percdamp * torch.diagonal(H).mean() * torch.eye(n, dtype=H.dtype)
    Hinv = torch.linalg.inv(H)
    Q = torch.zeros_like(W)
    for j in range(n):
        if g is None:
            s, z = scale, zero
        elif static_groups:
            k = int(perm[j]) // g
            s, z = scale[:, k : k + 1], zero[:, k : k + 1]
        elif j % g == 0:
            s, z = fit_scales(W[:, j : j + g], row)
        q = dequantize(quantize_codes(W[:, j : j + 1], s, z, spec.bits), s, z)[:, 0]
        d = Hinv[j, j]
        err = (W[:, j] - q) / d
        W[:, j + 1 :] -= torch.outer(err, Hinv[j, j + 1 :])
        Hinv[j + 1 :, j + 1 :] -= torch.outer(Hinv[j + 1 :, j], Hinv[j, j + 1 :]) / d
        Q[:, j] = q
    return Q[:, torch.argsort(perm)]


@pytest.mark.parametrize("bits", [3, 4])
@pytest.mark.parametrize("group_size", [None, 32])
@pytest.mark.parametrize("act_order", [False, True])
def test_gptq_beats_rtn_on_output_error(bits, group_size, act_order):
    W, X, H = _problem()
    spec = GridSpec(bits=bits, group_size=group_size)
    rtn = _output_error(W, rtn_quantize(W, spec).weight_q, X)
    gptq = _output_error(W, gptq_quantize(W, H, spec, act_order=act_order, block_size=32).weight_q, X)
    assert gptq < 0.8 * rtn


@pytest.mark.parametrize("spec", [GridSpec(bits=4), GridSpec(bits=3, group_size=32), GridSpec(bits=4, symmetric=True, group_size=40)], ids=str)
def test_identity_hessian_equals_rtn_exactly(spec):
    W, _, _ = _problem(width=100, seed=1)
    res = gptq_quantize(W, torch.eye(100), spec, block_size=16)
    rtn = rtn_quantize(W, spec)
    assert torch.equal(res.codes, rtn.codes)
    assert torch.equal(res.weight_q, rtn.weight_q)
    assert torch.equal(res.scale, rtn.scale) and torch.equal(res.zero, rtn.zero)


CASES = [
    dict(spec=GridSpec(bits=4), act_order=False, static_groups=False),
    dict(spec=GridSpec(bits=3), act_order=True, static_groups=False),
    dict(spec=GridSpec(bits=3, group_size=24), act_order=False, static_groups=False),  # groups straddle blocks
    dict(spec=GridSpec(bits=4, group_size=24), act_order=True, static_groups=False),  # permuted groups
    dict(spec=GridSpec(bits=4, group_size=24, symmetric=True), act_order=True, static_groups=True),
    dict(spec=GridSpec(bits=2, group_size=64), act_order=False, static_groups=True),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c['spec']}-ao{c['act_order']}-static{c['static_groups']}")
def test_blocked_equals_slow_reference(case):
    W, X, H = _problem(out=24, width=80, tokens=200, seed=2)
    H[5, :] = H[:, 5] = 0  # a dead input column
    ref = slow_gptq(W, H, **case)
    for block_size in (16, 7, 128):  # float64 sweep: exact up to round-off for any block size
        res = gptq_quantize(W, H, block_size=block_size, compute_dtype=torch.float64, **case)
        torch.testing.assert_close(res.weight_q, ref, rtol=0, atol=1e-9)
    res32 = gptq_quantize(W, H, block_size=16, **case)  # default float32 sweep
    assert res32.weight_q.dtype == torch.float32
    torch.testing.assert_close(res32.weight_q.double(), ref, rtol=0, atol=1e-5)
    assert (res.weight_q[:, 5] == 0).all()


def test_loss_equals_damped_quadratic_form():
    W, X, H = _problem(out=16, width=64, seed=3)
    res = gptq_quantize(W, H, GridSpec(bits=3, group_size=16), percdamp=0.05, compute_dtype=torch.float64, act_order=True)
    damped = H + 0.05 * torch.diagonal(H).mean() * torch.eye(64, dtype=H.dtype)
    E = W.double() - res.weight_q
    assert res.loss == pytest.approx(float(torch.trace(E @ damped @ E.T)), rel=1e-9)
    assert res.damp_used == 0.05 and res.warnings == []


def test_act_order_groups_and_g_idx():
    W, X, H = _problem(seed=4)
    spec = GridSpec(bits=4, group_size=32)
    static = gptq_quantize(W, H, spec, act_order=True)  # default: static groups
    assert static.static_groups and static.perm is not None
    assert torch.equal(static.g_idx, torch.arange(96, dtype=torch.int32) // 32)
    scale, zero = fit_scales(W, spec)  # fitted on the un-permuted weight before the solve
    assert torch.equal(static.scale, scale) and torch.equal(static.zero, zero)
    dyn = gptq_quantize(W, H, spec, act_order=True, static_groups=False)
    assert not dyn.static_groups
    sweep_group = torch.arange(96, dtype=torch.int32) // 32
    assert torch.equal(dyn.g_idx[dyn.perm], sweep_group)
    g = dyn.g_idx.long()
    assert torch.equal(dyn.weight_q, dequantize(dyn.codes, dyn.scale[:, g], dyn.zero[:, g]))


def test_inputs_not_modified_and_no_grad_needed():
    W, X, H = _problem(seed=5)
    H[0, :] = H[:, 0] = 0
    W0, H0 = W.clone(), H.clone()
    gptq_quantize(W, H, GridSpec(bits=4, group_size=32), act_order=True)
    assert torch.equal(W, W0) and torch.equal(H, H0)


@pytest.mark.parametrize("kind", ["few_tokens", "duplicated_columns"])
def test_rank_deficient_inputs_escalate_damping(kind, caplog):
    g = torch.Generator().manual_seed(6)
    W = torch.randn(32, 64, generator=g)
    if kind == "few_tokens":
        X = torch.randn(64, 16, generator=g)  # rank 16 < 64 features
    else:
        base = torch.randn(32, 256, generator=g)
        X = torch.cat([base, base])  # every feature duplicated: rank 32
    H = (X @ X.T).double()
    with caplog.at_level(logging.WARNING, logger="fade.quant"):
        res = gptq_quantize(W, H, GridSpec(bits=4, group_size=32), percdamp=0.0, layer_name="dec.fc1")
    assert res.damp_used > 0 and res.warnings
    assert any("not numerically positive definite" in r.message and "dec.fc1" in r.message for r in caplog.records)
    assert torch.isfinite(res.weight_q).all()
    assert _output_error(W, res.weight_q, X) < _output_error(W, rtn_quantize(W, GridSpec(bits=4, group_size=32)).weight_q, X)


def test_indefinite_hessian_escalates_past_default(caplog):
    W, X, H = _problem(width=64, seed=7)
    eig_min = torch.linalg.eigvalsh(H).min()
    # shift so that λ_min = -5% of the (new) mean diagonal: 1% damping is not enough, 10% is
    shift = (eig_min + 0.05 * torch.diagonal(H).mean()) / 1.05
    H = H - shift * torch.eye(64, dtype=H.dtype)
    assert torch.linalg.eigvalsh(H).min() == pytest.approx(-0.05 * float(torch.diagonal(H).mean()), rel=1e-6)
    with caplog.at_level(logging.WARNING, logger="fade.quant"):
        res = gptq_quantize(W, H, GridSpec(bits=4))
    assert res.damp_used == pytest.approx(0.1)
    assert len(res.warnings) == 1 and len(caplog.records) == 1
    assert torch.isfinite(res.weight_q).all()


def test_bad_inputs_raise():
    W, X, H = _problem(width=64, seed=8)
    with pytest.raises(QuantizationError, match=r"\(63, 63\)"):
        gptq_quantize(W, H[:63, :63], GridSpec(bits=4))
    bad = H.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(QuantizationError, match="inf/NaN"):
        gptq_quantize(W, bad, GridSpec(bits=4))
    with pytest.raises(QuantizationError, match="in_features=64"):
        gptq_quantize(W, H, GridSpec(bits=4, group_size=128), layer_name="enc.fc2")
    with pytest.raises(QuantizationError, match="percdamp=-0.1"):
        gptq_quantize(W, H, GridSpec(bits=4), percdamp=-0.1)
    with pytest.raises(QuantizationError, match="block_size=0"):
        gptq_quantize(W, H, GridSpec(bits=4), block_size=0)


def test_shared_hessian_factor_is_reused_but_invalidated_by_changes(monkeypatch):
    import fade.quant.gptq as gptq_module

    calls = []
    real = gptq_module.damped_cholesky
    monkeypatch.setattr(gptq_module, "damped_cholesky", lambda *a, **k: calls.append(1) or real(*a, **k))
    g = torch.Generator().manual_seed(3)
    x = torch.randn(300, 16, generator=g, dtype=torch.float64)
    hessian = x.T @ x
    spec = GridSpec(bits=4)
    w1, w2 = torch.randn(8, 16, generator=g), torch.randn(5, 16, generator=g)
    first = gptq_quantize(w1, hessian, spec)
    second = gptq_quantize(w2, hessian, spec)
    assert len(calls) == 1
    fresh = gptq_quantize(w2, hessian.clone(), spec)  # a different tensor: computed again, same result
    assert len(calls) == 2 and torch.equal(fresh.weight_q, second.weight_q)
    hessian.mul_(2.0)  # in place: the cached factor must not be reused
    gptq_quantize(w1, hessian, spec)
    assert len(calls) == 3 and first.weight_q.shape == w1.shape
    with torch.inference_mode():  # inference tensors have no version counter: a checksum stands in
        frozen = x.T @ x
        gptq_quantize(w1, frozen, spec)
        gptq_quantize(w2, frozen, spec)
        assert len(calls) == 4
        frozen.mul_(3.0)
        gptq_quantize(w1, frozen, spec)
        assert len(calls) == 5
