"""GPTQ (Frantar et al., 2023): quantize a weight column by column, compensating each
column's rounding error on the columns not yet quantized, so that ‖(W − Q) X‖² stays
small for the calibration inputs X summarised by H = Σ x xᵀ.

This follows the reference ``gptq.py`` (IST-DASLab/gptq): dead columns, damping
λ = percdamp · mean(diag H), the upper Cholesky factor U of H⁻¹ (H⁻¹ = Uᵀ U), blocks of
``block_size`` columns with the updates to later blocks applied lazily in one matmul,
and optional act-order. Deliberate differences, all documented where they occur:

* Precision. H is factorised in float64 (cheap, [in, in]) and U is cast to
  ``compute_dtype`` (float32 by default, as in the reference) for the column sweep.
  float64 makes the sweep match a plain column-by-column OBQ solve to ~1e-12 (tests).
* Escalating damping instead of crashing on a non-positive-definite H (see damping.py).
* Dynamic groups (scales fitted when the sweep reaches a group's first column) are
  fitted on fully error-updated weights. The reference fits on its global ``W``, which
  lacks the pending in-block updates when a group starts inside a block, so its result
  depends on block_size; here block boundaries are moved to group starts where needed
  and the result equals the unblocked algorithm for any block_size.
* Act-order + groups: with act-order, groups defined in permuted order need a g_idx
  (per-column group index) at inference ("desc_act"), which many kernels handle slowly
  or not at all. So ``static_groups=None`` (default) means: static groups whenever
  act_order is on and group_size is set. Static groups fit scales per contiguous group
  on the (dead-column-zeroed) weight *before* the solve, so groups stay contiguous in
  the original column order and g_idx is the trivial j // group_size. Passing
  ``static_groups=False`` with act-order gives the reference's permuted groups, with
  the non-trivial ``g_idx`` returned.
* Per-channel scales are fitted on the original weight before the solve, as in the
  reference.
"""

from __future__ import annotations

import weakref

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from fade.errors import QuantizationError
from fade.quant.damping import damped_cholesky
from fade.quant.grid import (
    GridSpec,
    check_group_fits,
    dequantize,
    fit_scales,
    group_index,
    num_groups,
    quantize_codes,
)

__all__ = ["GPTQResult", "gptq_quantize"]


@dataclass
class GPTQResult:
    """A GPTQ-quantized weight.

    weight_q: dequantized weight [out, in] in ``compute_dtype``, original column order.
    codes: uint8 [out, in], original column order.
    scale, zero: [out, n_groups]; column j uses group g_idx[j].
    g_idx: int32 [in], group of each input column (j // group_size unless act-order
        with dynamic groups; all zeros for per-channel).
    perm: sweep order of the columns (act-order), or None.
    damp_used: the percdamp actually used (larger than requested if escalated).
    loss: Σ over columns of (w − q)² / [H⁻¹]_jj, which equals tr((W − Q) H_d (W − Q)ᵀ)
        for the damped Hessian H_d and the weight with dead columns zeroed.
    static_groups: whether group scales were fitted before the solve.
    warnings: messages that were also logged (damping escalations).
    """

    weight_q: torch.Tensor
    codes: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor
    g_idx: torch.Tensor
    perm: torch.Tensor | None
    damp_used: float
    loss: float
    static_groups: bool
    warnings: list[str] = field(default_factory=list)


#: Linears that share an input share one Hessian (q/k/v; a weight quantized with and without
#: QEP's correction): its damped inverse factor is computed once per Hessian tensor. Keyed weakly
#: on the caller's tensor and its version counter, so an in-place change invalidates the entry.
#: (Tensors compare element-wise, so the table is keyed by id and checked through a weak reference.)
_FACTOR_CACHE: dict[int, tuple] = {}


def _fingerprint(tensor: torch.Tensor):
    """The version counter, or for inference tensors (which have none) the storage and a checksum."""
    if tensor.is_inference():
        return ("inference", tensor.data_ptr(), float(tensor.sum()))
    return ("version", tensor._version)


def _cached_inverse_factor(hessian: torch.Tensor, prepared: torch.Tensor, percdamp: float, act_order: bool,
                           compute_dtype: torch.dtype, what: str) -> tuple[torch.Tensor, float, list[str]]:
    key = (_fingerprint(hessian), float(percdamp), bool(act_order), compute_dtype)
    cached = _FACTOR_CACHE.get(id(hessian))
    if cached is not None and cached[0]() is hessian and cached[1] == key:
        factor, damp_used, warnings = cached[2]
        return factor, damp_used, list(warnings)
    factor, damp_used, warnings = damped_cholesky(prepared, percdamp, upper_inverse=True, tol_dtype=compute_dtype, what=what)
    factor = factor.to(compute_dtype)
    for stale in [k for k, v in _FACTOR_CACHE.items() if v[0]() is None]:
        del _FACTOR_CACHE[stale]
    _FACTOR_CACHE[id(hessian)] = (weakref.ref(hessian), key, (factor, damp_used, tuple(warnings)))
    return factor, damp_used, list(warnings)


def _block_ranges(columns: int, block_size: int, group_size: int | None) -> Iterator[tuple[int, int]]:
    """Column blocks [i1, i2). With dynamic groups, a group that starts inside a block
    must end inside it, else its scale would be fitted on columns still missing this
    block's lazy updates: such a block is cut at that group's first column."""
    i1 = 0
    while i1 < columns:
        i2 = min(i1 + block_size, columns)
        if group_size is not None:
            last_start = (i2 - 1) // group_size * group_size
            if last_start > i1 and min(last_start + group_size, columns) > i2:
                i2 = last_start
        yield i1, i2
        i1 = i2


def _validate(weight: torch.Tensor, hessian: torch.Tensor, block_size: int, layer_name: str | None) -> str:
    what = f"layer {layer_name!r}" if layer_name else "layer"
    if weight.dim() != 2:
        raise QuantizationError(
            f"{what}: expected a 2-D weight [out_features, in_features], got shape "
            f"{tuple(weight.shape)}; flatten convolution kernels to 2-D first."
        )
    n = weight.shape[1]
    if hessian.shape != (n, n):
        raise QuantizationError(
            f"{what}: Hessian has shape {tuple(hessian.shape)} but the weight has "
            f"in_features={n}; expected ({n}, {n}) from the same layer's inputs."
        )
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size <= 0:
        raise QuantizationError(f"block_size={block_size!r} must be a positive integer (default 128).")
    if not bool(torch.isfinite(hessian).all()):
        raise QuantizationError(
            f"{what}: Hessian contains inf/NaN; check the calibration activations "
            "(overflow in fp16 activations is a common cause)."
        )
    if not bool(torch.isfinite(weight).all()):
        raise QuantizationError(f"{what}: weight contains inf/NaN; it cannot be quantized.")
    return what


def gptq_quantize(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    spec: GridSpec,
    *,
    block_size: int = 128,
    percdamp: float = 0.01,
    act_order: bool = False,
    static_groups: bool | None = None,
    compute_dtype: torch.dtype = torch.float32,
    layer_name: str | None = None,
) -> GPTQResult:
    """Quantize ``weight`` [out, in] given ``hessian`` = Σ x xᵀ [in, in] (any float dtype).

    ``static_groups=None`` means True when act_order and group_size are both set
    (export-friendly contiguous groups), else False. Inputs are not modified; the work
    happens on their device.
    """
    what = _validate(weight, hessian, block_size, layer_name)
    check_group_fits(spec, weight.shape[1], layer_name)
    group_size = spec.group_size
    if static_groups is None:
        static_groups = act_order and group_size is not None
    dynamic_groups = group_size is not None and not static_groups
    out_features, columns = weight.shape

    W = weight.to(compute_dtype).clone()
    H = hessian.to(torch.float64).clone()

    if group_size is None:  # per-channel: one grid per row, from the original weight
        scale, zero = fit_scales(W, spec)

    # Dead columns: an input that is always 0 carries no information. H_ii = 1 keeps H
    # invertible; zeroing W[:, i] makes that column quantize to exactly 0 and pass no
    # error on (its H row is zero, so it is decoupled from the other columns).
    dead = torch.diagonal(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0

    if static_groups and group_size is not None:
        scale, zero = fit_scales(W, spec)  # contiguous groups, original column order
    if dynamic_groups:
        scale = torch.zeros(out_features, num_groups(columns, group_size), dtype=W.dtype, device=W.device)
        zero = torch.zeros_like(scale)

    perm = None
    if act_order:
        # Quantize high-activation-energy columns first, while many columns remain to
        # absorb their error. stable=True keeps ties in their original order.
        perm = torch.argsort(torch.diagonal(H), descending=True, stable=True)
        W = W[:, perm]
        H = H[perm][:, perm]

    Hinv, damp_used, warnings = _cached_inverse_factor(hessian, H, percdamp, act_order, compute_dtype, what)

    # Group used by each column in sweep order.
    if group_size is None:
        sweep_group = [0] * columns
    elif static_groups:
        original_group = group_index(columns, group_size, device=W.device)
        sweep_group = (original_group[perm] if perm is not None else original_group).tolist()
    else:
        sweep_group = [j // group_size for j in range(columns)]
    row_spec = GridSpec(bits=spec.bits, symmetric=spec.symmetric, group_size=None)

    codes = torch.empty(out_features, columns, dtype=torch.uint8, device=W.device)
    loss = torch.zeros((), dtype=W.dtype, device=W.device)
    for i1, i2 in _block_ranges(columns, block_size, group_size if dynamic_groups else None):
        W1 = W[:, i1:i2]  # a view: in-block updates land directly in W
        Hinv1 = Hinv[i1:i2, i1:i2]
        Err1 = torch.zeros(out_features, i2 - i1, dtype=W.dtype, device=W.device)
        for i in range(i2 - i1):
            j = i1 + i
            if dynamic_groups and j % group_size == 0:
                # Fit this group's grid on the error-updated weights (columns j.. of W
                # already hold every update from the columns before j; see _block_ranges).
                g = j // group_size
                s, z = fit_scales(W[:, j : j + group_size], row_spec)
                scale[:, g : g + 1], zero[:, g : g + 1] = s, z
            g = sweep_group[j]
            s, z = scale[:, g : g + 1], zero[:, g : g + 1]
            w = W1[:, i : i + 1]
            q_codes = quantize_codes(w, s, z, spec.bits)
            codes[:, j : j + 1] = q_codes
            # OBS step: error scaled by U_jj, spread over the remaining in-block columns.
            err = (w - dequantize(q_codes, s, z)) / Hinv1[i, i]
            W1[:, i:] -= err @ Hinv1[i : i + 1, i:]
            Err1[:, i : i + 1] = err
        # Lazy batch update: the whole block's effect on all later columns at once.
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
        loss += Err1.square().sum()

    if perm is not None:
        inverse_perm = torch.argsort(perm)
        codes = codes[:, inverse_perm]
    if dynamic_groups:
        sweep_index = torch.arange(columns, device=W.device, dtype=torch.int32) // group_size
        g_idx = sweep_index[inverse_perm] if perm is not None else sweep_index
    else:
        g_idx = group_index(columns, group_size, device=W.device)

    g_cols = g_idx.long()
    weight_q = dequantize(codes, scale[:, g_cols], zero[:, g_cols])
    if not bool(torch.isfinite(weight_q).all()):  # cannot happen with a finite factor; guard anyway
        raise QuantizationError(f"{what}: GPTQ produced non-finite weights; try a larger percdamp.")
    return GPTQResult(
        weight_q=weight_q,
        codes=codes,
        scale=scale,
        zero=zero,
        g_idx=g_idx,
        perm=perm,
        damp_used=damp_used,
        loss=float(loss),
        static_groups=bool(static_groups and group_size is not None),
        warnings=warnings,
    )
