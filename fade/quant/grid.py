"""Uniform integer quantization grid: scales, zero points, codes.

A weight ``w`` of shape [out_features, in_features] is quantized with one (scale, zero)
pair per output row and per *group* of input columns (dim 1). With ``group_size=None``
there is one group per row (per-channel). When in_features is not a multiple of the
group size, the last group is shorter (ragged): width 288 with g=128 gives groups of
128, 128 and 32 columns, so scales have ceil(288 / 128) = 3 columns.

Conventions (the ones GPTQ, AutoGPTQ and compressed-tensors share):

* codes are unsigned integers 0 .. 2**bits - 1, ``w ≈ scale * (code - zero)``;
* asymmetric: the range [min(w), max(w)] is widened to include 0 (so 0 is exactly
  representable and ``zero`` is an integer in [0, 2**bits - 1]);
* symmetric: ``zero = 2**(bits-1)`` and ``scale = 2 * absmax / (2**bits - 1)``, i.e. the
  signed code ``code - zero`` covers [-2**(bits-1), 2**(bits-1) - 1]: one more level on
  the negative side. (The GPTQ reference leaves rows with no negative entry at
  ``xmin = 0``, which clips their positive half; we always use ``-absmax``.)
* a group that is all zeros gets the range [-1, 1] so its scale is never 0.

``round`` is round-half-to-even (``torch.round``), as in the references.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch

from fade.errors import QuantizationError

__all__ = [
    "GridSpec",
    "check_group_fits",
    "num_groups",
    "group_index",
    "expand_groups",
    "fit_scales",
    "quantize_codes",
    "dequantize",
    "fake_quantize",
    "working_dtype",
]

MIN_BITS, MAX_BITS = 2, 8


@dataclass(frozen=True)
class GridSpec:
    """How a weight is quantized.

    bits: code width, 2..8.
    symmetric: False (default) = asymmetric with a zero point per group;
        True = zero point fixed at 2**(bits-1).
    group_size: input columns sharing one scale; None = one scale per output channel.
    """

    bits: int = 4
    symmetric: bool = False
    group_size: int | None = None

    def __post_init__(self) -> None:
        # Accept any integer type (e.g. numpy ints from a config), store a plain int.
        for name in ("bits", "group_size"):
            value = getattr(self, name)
            if isinstance(value, numbers.Integral) and not isinstance(value, bool):
                object.__setattr__(self, name, int(value))
        if isinstance(self.bits, bool) or not isinstance(self.bits, int) or not (
            MIN_BITS <= self.bits <= MAX_BITS
        ):
            raise QuantizationError(
                f"bits={self.bits!r} is not supported; use an integer bit width from "
                f"{MIN_BITS} to {MAX_BITS}."
            )
        if not isinstance(self.symmetric, bool):
            raise QuantizationError(
                f"symmetric={self.symmetric!r} must be True or False."
            )
        if self.group_size is not None and (
            isinstance(self.group_size, bool)
            or not isinstance(self.group_size, int)
            or self.group_size <= 0
        ):
            raise QuantizationError(
                f"group_size={self.group_size!r} is invalid; use a positive integer "
                "(e.g. 128) or None for one scale per output channel."
            )

    @property
    def maxq(self) -> int:
        """Largest code, 2**bits - 1."""
        return (1 << self.bits) - 1


def check_group_fits(spec: GridSpec, in_features: int, layer_name: str | None = None) -> None:
    """Raise QuantizationError when the group size is wider than the layer."""
    if spec.group_size is not None and spec.group_size > in_features:
        where = f"layer {layer_name!r}" if layer_name else "this layer"
        raise QuantizationError(
            f"group_size={spec.group_size} is larger than the input width of {where} "
            f"(in_features={in_features}); use a group size of at most {in_features} "
            "(e.g. 32 or 64) or group_size=None for per-channel scales."
        )


def num_groups(in_features: int, group_size: int | None) -> int:
    """Number of column groups; the last one may be ragged."""
    return 1 if group_size is None else math.ceil(in_features / group_size)


def group_index(in_features: int, group_size: int | None, device=None) -> torch.Tensor:
    """Group of each input column, [in_features] int32 (all zeros for per-channel)."""
    cols = torch.arange(in_features, device=device, dtype=torch.int32)
    return torch.zeros_like(cols) if group_size is None else cols // group_size


def expand_groups(per_group: torch.Tensor, group_size: int | None, in_features: int) -> torch.Tensor:
    """[out, n_groups] -> [out, in_features]: repeat each group's value over its columns."""
    if group_size is None:
        return per_group.expand(-1, in_features)
    return per_group.repeat_interleave(group_size, dim=1)[:, :in_features]


def working_dtype(w: torch.Tensor) -> torch.dtype:
    """float32 for half/bfloat16/float32 weights, float64 for float64 ones."""
    return torch.promote_types(w.dtype, torch.float32)


def _group_min_max(w: torch.Tensor, group_size: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-(row, group) min and max, [out, n_groups] each; handles a ragged last group."""
    if group_size is None:
        return w.amin(dim=1, keepdim=True), w.amax(dim=1, keepdim=True)
    out_features, in_features = w.shape
    full = in_features // group_size * group_size
    body = w[:, :full].reshape(out_features, -1, group_size)
    mins, maxs = [body.amin(dim=2)], [body.amax(dim=2)]
    if full < in_features:  # ragged tail group
        tail = w[:, full:]
        mins.append(tail.amin(dim=1, keepdim=True))
        maxs.append(tail.amax(dim=1, keepdim=True))
    return torch.cat(mins, dim=1), torch.cat(maxs, dim=1)


def fit_scales(
    w: torch.Tensor, spec: GridSpec, *, layer_name: str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Min/max (asymmetric) or absmax (symmetric) scale and zero per (row, group).

    Returns ``scale`` and ``zero`` (integer-valued), both [out, n_groups], in float32
    (float64 when ``w`` is float64).
    """
    if w.dim() != 2:
        raise QuantizationError(
            f"expected a 2-D weight [out_features, in_features], got shape {tuple(w.shape)}; "
            "flatten convolution kernels to 2-D first."
        )
    check_group_fits(spec, w.shape[1], layer_name)
    w = w.to(working_dtype(w))
    wmin, wmax = _group_min_max(w, spec.group_size)
    # The range always contains 0 so that 0 (padding, pruned weights) is exact.
    wmin = wmin.clamp(max=0)
    wmax = wmax.clamp(min=0)
    if spec.symmetric:
        wmax = torch.maximum(-wmin, wmax)
        wmin = -wmax
    # An all-zero group would give scale 0 and 0/0 codes; any range works, use [-1, 1].
    empty = (wmin == 0) & (wmax == 0)
    wmin = torch.where(empty, -1.0, wmin)
    wmax = torch.where(empty, 1.0, wmax)

    scale = (wmax - wmin) / spec.maxq
    if spec.symmetric:
        zero = torch.full_like(scale, float((spec.maxq + 1) // 2))
    else:
        zero = torch.round(-wmin / scale)
    return scale, zero


def quantize_codes(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int) -> torch.Tensor:
    """Integer codes clamp(round(w / scale) + zero, 0, 2**bits - 1) as uint8.

    ``scale`` and ``zero`` must broadcast against ``w`` (e.g. [out, 1] for one column,
    or expanded to [out, in] with :func:`expand_groups`).
    """
    maxq = (1 << bits) - 1
    q = torch.clamp(torch.round(w.to(scale.dtype) / scale) + zero, 0, maxq)
    return q.to(torch.uint8)


def dequantize(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """scale * (codes - zero), in the dtype of ``scale``."""
    return scale * (codes.to(scale.dtype) - zero)


def fake_quantize(w: torch.Tensor, spec: GridSpec, *, layer_name: str | None = None) -> torch.Tensor:
    """dequantize(quantize(w)) with scales fitted on ``w`` itself (float32 or float64)."""
    scale, zero = fit_scales(w, spec, layer_name=layer_name)
    scale = expand_groups(scale, spec.group_size, w.shape[1])
    zero = expand_groups(zero, spec.group_size, w.shape[1])
    return dequantize(quantize_codes(w, scale, zero, spec.bits), scale, zero)
