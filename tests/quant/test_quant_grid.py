"""Quantization grid: exact checks against direct per-group references."""

import pytest
import torch

from fade.errors import QuantizationError
from fade.quant import (
    GridSpec,
    dequantize,
    expand_groups,
    fake_quantize,
    fit_scales,
    quantize_codes,
    rtn_quantize,
)

SPECS = [
    GridSpec(bits=b, symmetric=s, group_size=g)
    for b in (2, 3, 4, 8)
    for s in (False, True)
    for g in (None, 32, 128)
]


def _weight(out=16, width=288, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(out, width, generator=g) * torch.rand(out, 1, generator=g) * 3


def _direct_rtn(w, bits, symmetric, group_size):
    """Plain loop over rows and groups: min/max (or absmax) grid, round, clamp."""
    maxq = 2**bits - 1
    out, width = w.shape
    g = width if group_size is None else group_size
    codes = torch.zeros(out, width, dtype=torch.int64)
    deq = torch.zeros(out, width)
    for r in range(out):
        for start in range(0, width, g):
            x = w[r, start : start + g]
            lo, hi = min(x.min().item(), 0.0), max(x.max().item(), 0.0)
            if symmetric:
                hi = max(-lo, hi)
                lo = -hi
            if lo == 0 and hi == 0:
                lo, hi = -1.0, 1.0
            scale = torch.tensor((hi - lo) / maxq, dtype=torch.float32)
            zero = 2 ** (bits - 1) if symmetric else torch.round(-torch.tensor(lo) / scale)
            q = torch.clamp(torch.round(x / scale) + zero, 0, maxq)
            codes[r, start : start + g] = q.long()
            deq[r, start : start + g] = scale * (q - zero)
    return codes, deq


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_rtn_matches_direct_per_group_reference(spec):
    w = _weight()
    res = rtn_quantize(w, spec)
    codes, deq = _direct_rtn(w, spec.bits, spec.symmetric, spec.group_size)
    assert torch.equal(res.codes.long(), codes)
    torch.testing.assert_close(res.weight_q, deq, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_fake_quantize_lies_on_grid(spec):
    w = _weight(seed=1)
    scale, zero = fit_scales(w, spec)
    s, z = expand_groups(scale, spec.group_size, w.shape[1]), expand_groups(zero, spec.group_size, w.shape[1])
    codes = quantize_codes(w, s, z, spec.bits)
    assert codes.dtype == torch.uint8
    assert int(codes.min()) >= 0 and int(codes.max()) <= 2**spec.bits - 1
    fq = fake_quantize(w, spec)
    assert torch.equal(fq, dequantize(codes, s, z))
    level = fq / s + z  # must be an integer level in [0, maxq]
    torch.testing.assert_close(level, level.round(), rtol=0, atol=1e-4)
    assert level.min() > -1e-4 and level.max() < 2**spec.bits - 1 + 1e-4
    # zero point is an integer inside the code range, scales positive
    assert torch.equal(zero, zero.round()) and zero.min() >= 0 and zero.max() <= 2**spec.bits - 1
    assert (scale > 0).all()
    # nearest level: at most half a step unless clamped at the ends, and never a full step
    err = (w - fq).abs()
    unclamped = ((w / s + z) >= 0) & ((w / s + z) <= 2**spec.bits - 1)
    assert (err[unclamped] <= s[unclamped] / 2 * (1 + 1e-5)).all()
    assert (err <= s * (1 + 1e-5)).all()


def test_ragged_last_group():
    w = _weight(out=4, width=288)
    spec = GridSpec(bits=4, group_size=128)
    scale, zero = fit_scales(w, spec)
    assert scale.shape == (4, 3)
    tail_scale, tail_zero = fit_scales(w[:, 256:], GridSpec(bits=4))
    torch.testing.assert_close(scale[:, 2:], tail_scale, rtol=0, atol=0)
    torch.testing.assert_close(zero[:, 2:], tail_zero, rtol=0, atol=0)
    # the tail group only sees its 32 columns: blowing up column 255 leaves it alone
    w2 = w.clone()
    w2[:, 255] = 100.0
    scale2, _ = fit_scales(w2, spec)
    assert torch.equal(scale2[:, 2], scale[:, 2]) and not torch.equal(scale2[:, 1], scale[:, 1])
    fq = fake_quantize(w, spec)
    torch.testing.assert_close(fq[:, 256:], fake_quantize(w[:, 256:], GridSpec(bits=4)), rtol=0, atol=0)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_symmetric_grid_is_symmetric(bits):
    w = _weight(seed=2)
    spec = GridSpec(bits=bits, symmetric=True, group_size=32)
    scale, zero = fit_scales(w, spec)
    assert (zero == 2 ** (bits - 1)).all()
    absmax = w.abs().reshape(w.shape[0], -1, 32).amax(dim=2)
    torch.testing.assert_close(scale, 2 * absmax / (2**bits - 1))
    # negating the weight negates its fake-quantized value (the grid is symmetric about
    # 0), except at ±absmax where the single extra negative level breaks the tie
    inside = w.abs() < expand_groups(absmax, 32, w.shape[1])
    assert torch.equal(fake_quantize(-w, spec)[inside], -fake_quantize(w, spec)[inside])


def test_all_zero_rows_and_groups_are_safe():
    w = _weight(out=3, width=64)
    w[0] = 0
    w[1, :32] = 0
    for spec in (GridSpec(bits=4), GridSpec(bits=3, group_size=32), GridSpec(bits=4, symmetric=True, group_size=32)):
        scale, zero = fit_scales(w, spec)
        assert torch.isfinite(scale).all() and (scale > 0).all()
        fq = fake_quantize(w, spec)
        assert torch.isfinite(fq).all()
        assert (fq[0] == 0).all() and (fq[1, :32] == 0).all()


@pytest.mark.parametrize("bits", [0, 1, 9, 16, 4.0, True, "4"])
def test_bad_bits_raise_naming_value(bits):
    with pytest.raises(QuantizationError, match=f"bits={bits!r}".replace("(", r"\(")):
        GridSpec(bits=bits)


@pytest.mark.parametrize("group_size", [0, -1, -128, 32.0])
def test_bad_group_size_raises_naming_value(group_size):
    with pytest.raises(QuantizationError, match=f"group_size={group_size!r}"):
        GridSpec(bits=4, group_size=group_size)


def test_group_wider_than_layer_names_width_and_fix():
    w = _weight(out=2, width=96)
    spec = GridSpec(bits=4, group_size=128)
    with pytest.raises(QuantizationError) as err:
        fit_scales(w, spec, layer_name="encoder.conv1")
    msg = str(err.value)
    assert "group_size=128" in msg and "in_features=96" in msg and "encoder.conv1" in msg
    assert "group_size=None" in msg
    with pytest.raises(QuantizationError, match="in_features=96"):
        rtn_quantize(w, spec)
    # exactly the layer width is allowed: one group
    assert fit_scales(w, GridSpec(bits=4, group_size=96))[0].shape == (2, 1)
