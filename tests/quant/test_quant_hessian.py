"""Streamed statistics equal one-shot statistics of the concatenated (unmasked) tokens."""

import pytest
import torch

from fade.errors import QuantizationError
from fade.quant import HessianAccumulator, QEPStatistics

IN = 12


def _batches(seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = [(2, 5, IN), (3, 7, IN), (1, 4, IN)]
    xs = [torch.randn(s, generator=g) for s in shapes]
    masks = [torch.rand(s[:-1], generator=g) > 0.3 for s in shapes]
    return xs, masks


def test_hessian_streamed_with_masks_equals_one_shot():
    xs, masks = _batches()
    extra = torch.randn(6, IN, dtype=torch.float64)  # a 2-D batch without mask
    acc = HessianAccumulator(IN)
    for x, m in zip(xs, masks):
        acc.add(x, mask=m)
    acc.add(extra)
    tokens = torch.cat([x[m].double() for x, m in zip(xs, masks)] + [extra], dim=0)
    assert acc.hessian.dtype == torch.float64
    torch.testing.assert_close(acc.hessian, tokens.T @ tokens, rtol=1e-12, atol=1e-12)
    assert acc.num_tokens == tokens.shape[0] == sum(int(m.sum()) for m in masks) + 6


def test_hessian_no_mask_any_leading_dims_and_float32():
    xs, _ = _batches(1)
    acc64, acc32 = HessianAccumulator(IN), HessianAccumulator(IN, dtype=torch.float32)
    for x in xs:
        acc64.add(x)
        acc32.add(x.reshape(-1, IN))
    tokens = torch.cat([x.reshape(-1, IN) for x in xs]).double()
    torch.testing.assert_close(acc64.hessian, tokens.T @ tokens, rtol=1e-12, atol=1e-12)
    assert acc32.hessian.dtype == torch.float32
    torch.testing.assert_close(acc32.hessian.double(), tokens.T @ tokens, rtol=1e-5, atol=1e-4)
    assert acc64.num_tokens == tokens.shape[0]


def test_hessian_before_any_batch_and_bad_inputs():
    acc = HessianAccumulator(IN)
    assert torch.equal(acc.hessian, torch.zeros(IN, IN, dtype=torch.float64)) and acc.num_tokens == 0
    with pytest.raises(QuantizationError, match="in_features=12"):
        acc.add(torch.randn(3, IN + 1))
    with pytest.raises(QuantizationError, match=r"mask has shape \(3,\)"):
        acc.add(torch.randn(2, 3, IN), mask=torch.ones(3, dtype=torch.bool))
    with pytest.raises(QuantizationError, match="float16"):
        HessianAccumulator(IN, dtype=torch.float16)


def test_qep_statistics_streamed_with_masks_equals_one_shot():
    xs, masks = _batches(2)
    g = torch.Generator().manual_seed(3)
    xqs = [x + 0.1 * torch.randn(x.shape, generator=g) for x in xs]
    stats = QEPStatistics(IN)
    for x, xq, m in zip(xs, xqs, masks):
        stats.add(x, xq, mask=m)
    X = torch.cat([x[m] for x, m in zip(xs, masks)]).double().T  # [in, tokens]
    Xq = torch.cat([x[m] for x, m in zip(xqs, masks)]).double().T
    torch.testing.assert_close(stats.hessian_q, Xq @ Xq.T, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(stats.cross, (X - Xq) @ Xq.T, rtol=1e-12, atol=1e-12)
    assert stats.num_tokens == X.shape[1]
    # sign convention: C = (x_fp − x_q) x_qᵀ, so swapping the inputs changes it
    assert not torch.allclose(stats.cross, (Xq - X) @ Xq.T)


def test_qep_statistics_shape_mismatch_raises():
    stats = QEPStatistics(IN)
    with pytest.raises(QuantizationError, match=r"\(2, 5, 12\).*\(2, 4, 12\)"):
        stats.add(torch.randn(2, 5, IN), torch.randn(2, 4, IN))
    assert stats.num_tokens == 0


def test_float32_products_stay_within_the_stated_bound():
    """float32 per-batch products + float64 running sums: relative error ≤ 1e-4 of the largest entry."""
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(4, 3000, 48, generator=g) @ torch.randn(48, 48, generator=g) for _ in range(3)]
    shifted = [b + 0.01 * torch.randn(b.shape, generator=g) for b in batches]
    exact, fast = QEPStatistics(48), QEPStatistics(48, product_dtype=torch.float32)
    h_exact, h_fast = HessianAccumulator(48), HessianAccumulator(48, product_dtype=torch.float32)
    for x, x_hat in zip(batches, shifted):
        exact.add(x, x_hat)
        fast.add(x, x_hat)
        h_exact.add(x)
        h_fast.add(x)
    assert fast.hessian_q.dtype == torch.float64
    for a, b in ((exact.hessian_q, fast.hessian_q), (exact.cross, fast.cross), (h_exact.hessian, h_fast.hessian)):
        assert (a - b).abs().max() <= 1e-4 * a.abs().max()
        assert not torch.equal(a, b)  # the float32 path really is a different computation


@pytest.mark.parametrize("features", [8, 1024, 1100, 1536])
def test_gram_by_blocks_matches_the_full_product(features):
    """Wide inputs skip the blocks above the diagonal; the result is still the full product."""
    from fade.quant.hessian import gram

    torch.manual_seed(features)
    tokens = torch.randn(300, features, dtype=torch.float64)
    result = gram(tokens)
    torch.testing.assert_close(result, tokens.T @ tokens, rtol=1e-12, atol=1e-9)
    # Blocks above the diagonal are mirrors of those below (a BLAS may round the diagonal blocks
    # asymmetrically in the last bit, as it does in the full product).
    torch.testing.assert_close(result, result.T, rtol=1e-12, atol=1e-9)
