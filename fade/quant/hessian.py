"""Streamed second-order statistics of layer inputs.

Layer-wise PTQ only needs sums of outer products of the input tokens, so calibration
batches are folded in one at a time and never stacked:

* ``HessianAccumulator``: H = Σ x xᵀ over tokens (GPTQ's Hessian, up to the factor 2/N
  the reference applies; GPTQ and QEP are invariant to a common scale of their
  statistics because damping is relative to mean(diag H)).
* ``QEPStatistics``: from paired inputs of the full-precision model (x) and of the
  partially quantized model (x̂), Ĥ = Σ x̂ x̂ᵀ and C = Σ (x − x̂) x̂ᵀ.

Inputs have shape [..., in_features]; all leading dims are flattened to tokens. An
optional boolean ``mask`` of shape [...] (the leading dims) keeps only positions where
it is True, so padded frames/tokens do not enter the statistics.

Sums are accumulated in float64 by default: with 10^5-10^6 tokens a float32 running sum
loses about log10(N) of its ~7 significant digits, and GPTQ then inverts the result.
float32 is accepted for devices without float64 (e.g. Apple MPS).

``product_dtype`` is the precision of each batch's matrix product, which dominates the
cost (2·tokens·d² flops). float64 (default) is exact to float64 rounding. float32 is 2-4×
faster on CPUs and GPUs; one batch's product then carries a relative error of about
eps32·sqrt(tokens per batch) (≈ 1e-5 for 10^4 tokens; tested bound 1e-4 relative to the
largest entry), and the float64 running sum across batches adds none. For δ = x − x̂ the
difference is still formed before the product, in the input's own precision.
"""

from __future__ import annotations

import torch

from fade.errors import QuantizationError

__all__ = ["HessianAccumulator", "QEPStatistics", "gram"]

_ALLOWED_DTYPES = (torch.float64, torch.float32)


def _check_dtype(dtype: torch.dtype) -> None:
    if dtype not in _ALLOWED_DTYPES:
        raise QuantizationError(
            f"statistics dtype {dtype} is not supported; use torch.float64 (default) or torch.float32."
        )


def _tokens(x: torch.Tensor, in_features: int, mask: torch.Tensor | None, what: str) -> torch.Tensor:
    """[..., in] -> [tokens, in], dropping masked-out positions."""
    if x.dim() < 1 or x.shape[-1] != in_features:
        raise QuantizationError(
            f"{what} has shape {tuple(x.shape)} but the layer expects in_features={in_features} "
            "in the last dimension; pass the layer's input activations [..., in_features]."
        )
    tokens = x.reshape(-1, in_features)
    if mask is None:
        return tokens
    if mask.shape != x.shape[:-1]:
        raise QuantizationError(
            f"mask has shape {tuple(mask.shape)} but must match the leading dims "
            f"{tuple(x.shape[:-1])} of {what} (one flag per token)."
        )
    return tokens[mask.reshape(-1).to(device=tokens.device, dtype=torch.bool)]


#: Inputs at least this wide get their Gram matrix by blocks (see ``gram``); narrower ones are
#: faster as one product (measured on 2 CPU threads: 384-wide blocks lose, 1536-wide inputs gain 1.6×).
GRAM_BLOCK_MIN_FEATURES = 1024
GRAM_BLOCK = 512


def gram(tokens: torch.Tensor) -> torch.Tensor:
    """tokensᵀ · tokens, computing only the blocks on and below the diagonal.

    The product is symmetric, so wide inputs (an MLP's second layer: 1536 in tiny.en, 2048 in
    base) skip the blocks above the diagonal and mirror the ones below, as BLAS ``syrk`` would:
    with three 512-wide blocks, 6 of 9 block products. Each entry is the same dot product over the
    same tokens as in the full product.
    """
    d = tokens.shape[-1]
    if d < GRAM_BLOCK_MIN_FEATURES:
        return tokens.T @ tokens
    out = torch.empty(d, d, dtype=tokens.dtype, device=tokens.device)
    for start in range(0, d, GRAM_BLOCK):
        stop = min(start + GRAM_BLOCK, d)
        out[start:stop, :stop] = tokens[:, start:stop].T @ tokens[:, :stop]
        out[:start, start:stop] = out[start:stop, :start].T
    return out


class HessianAccumulator:
    """Running H = Σ x xᵀ and token count for one linear layer."""

    def __init__(self, in_features: int, *, dtype: torch.dtype = torch.float64, device=None,
                 product_dtype: torch.dtype | None = None):
        _check_dtype(dtype)
        self.in_features = in_features
        self.dtype = dtype
        self.product_dtype = product_dtype or dtype
        self.device = device  # None: allocate on the device of the first batch
        self._sum: torch.Tensor | None = None
        self.num_tokens = 0

    def add(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        tokens = _tokens(x, self.in_features, mask, "activation")
        if self._sum is None:
            self.device = self.device if self.device is not None else x.device
            self._sum = torch.zeros(self.in_features, self.in_features, dtype=self.dtype, device=self.device)
        tokens = tokens.to(device=self.device, dtype=self.product_dtype)
        self._sum += gram(tokens).to(self.dtype)
        self.num_tokens += tokens.shape[0]

    @property
    def hessian(self) -> torch.Tensor:
        """Σ x xᵀ, [in, in] (zeros before the first batch)."""
        if self._sum is None:
            return torch.zeros(self.in_features, self.in_features, dtype=self.dtype, device=self.device)
        return self._sum


class QEPStatistics:
    """Running Ĥ = Σ x̂ x̂ᵀ and C = Σ (x − x̂) x̂ᵀ from paired (x_fp, x_q) batches."""

    def __init__(self, in_features: int, *, dtype: torch.dtype = torch.float64, device=None,
                 product_dtype: torch.dtype | None = None):
        _check_dtype(dtype)
        self.in_features = in_features
        self.dtype = dtype
        self.product_dtype = product_dtype or dtype
        self.device = device
        self._hessian_q: torch.Tensor | None = None
        self._cross: torch.Tensor | None = None
        self.num_tokens = 0

    def add(self, x_fp: torch.Tensor, x_q: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        # Both inputs must come from the same calibration batch, token for token.
        if x_fp.shape != x_q.shape:
            raise QuantizationError(
                f"full-precision input {tuple(x_fp.shape)} and quantized-model input "
                f"{tuple(x_q.shape)} differ in shape; feed the same calibration batch to both models."
            )
        fp = _tokens(x_fp, self.in_features, mask, "full-precision activation")
        q = _tokens(x_q, self.in_features, mask, "quantized-model activation")
        if self._hessian_q is None:
            self.device = self.device if self.device is not None else x_q.device
            shape = (self.in_features, self.in_features)
            self._hessian_q = torch.zeros(shape, dtype=self.dtype, device=self.device)
            self._cross = torch.zeros(shape, dtype=self.dtype, device=self.device)
        fp = fp.to(device=self.device, dtype=self.product_dtype)
        q = q.to(device=self.device, dtype=self.product_dtype)
        # δ = x − x̂ is formed after the cast (in float32 at least), so small differences
        # between two nearby bf16/fp16 activations are not lost.
        self._hessian_q += gram(q).to(self.dtype)
        self._cross += ((fp - q).T @ q).to(self.dtype)
        self.num_tokens += q.shape[0]

    def _or_zeros(self, t: torch.Tensor | None) -> torch.Tensor:
        if t is None:
            return torch.zeros(self.in_features, self.in_features, dtype=self.dtype, device=self.device)
        return t

    @property
    def hessian_q(self) -> torch.Tensor:
        """Ĥ = Σ x̂ x̂ᵀ, [in, in]."""
        return self._or_zeros(self._hessian_q)

    @property
    def cross(self) -> torch.Tensor:
        """C = Σ (x − x̂) x̂ᵀ, [in, in] (rows index δ, columns index x̂)."""
        return self._or_zeros(self._cross)
