"""Synthetic layers with explicit token matrices, so statistics-based formulas can be
checked against the same quantity computed directly from X, X̂."""

from __future__ import annotations

import numpy as np
import torch

from fade.calibration.layer import LayerStatistics


def tokens(n_tokens: int, width: int, rng: np.random.Generator, *, correlated: bool = True) -> np.ndarray:
    """X̂ as [tokens, in] (rows are tokens), with a non-trivial covariance."""
    z = rng.standard_normal((n_tokens, width))
    if correlated:
        z = z @ rng.standard_normal((width, width)) + 0.3 * rng.standard_normal(width)
    return z


def stats_from_tokens(x: np.ndarray, xq: np.ndarray) -> LayerStatistics:
    """LayerStatistics from explicit FP (x) and quantized-model (xq) tokens, [tokens, in]."""
    delta = x - xq
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(torch.float64)  # noqa: E731
    return LayerStatistics(hessian_q=t(xq.T @ xq), cross=t(delta.T @ xq), hessian_fp=t(x.T @ x), num_tokens=x.shape[0])


def paired(n_tokens: int, width: int, rng: np.random.Generator, *, mixing: np.ndarray | None = None, noise: float = 0.1):
    """(X, X̂) with δ = X − X̂ = X̂ · mixingᵀ + noise (rows are tokens)."""
    xq = tokens(n_tokens, width, rng)
    delta = noise * rng.standard_normal((n_tokens, width)) * xq.std()
    if mixing is not None:
        delta = delta + xq @ mixing.T
    return xq + delta, xq
