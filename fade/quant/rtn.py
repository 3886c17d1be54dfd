"""Round-to-nearest (RTN): quantize every weight independently on its group's grid."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fade.quant.grid import GridSpec, dequantize, expand_groups, fit_scales, quantize_codes

__all__ = ["QuantResult", "rtn_quantize"]


@dataclass
class QuantResult:
    """A quantized weight.

    weight_q: dequantized weight [out, in], float32 (float64 for a float64 weight); the
        caller casts it to the layer dtype.
    codes: uint8 [out, in], values 0 .. 2**bits - 1.
    scale, zero: [out, n_groups], same dtype as weight_q; column j uses group
        j // group_size (GPTQ with act-order may use another map, see GPTQResult.g_idx).
    """

    weight_q: torch.Tensor
    codes: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor


def rtn_quantize(weight: torch.Tensor, spec: GridSpec, *, layer_name: str | None = None) -> QuantResult:
    """Round each weight to the nearest level of its (row, group) min/max or absmax grid."""
    scale, zero = fit_scales(weight, spec, layer_name=layer_name)
    in_features = weight.shape[1]
    scale_cols = expand_groups(scale, spec.group_size, in_features)
    zero_cols = expand_groups(zero, spec.group_size, in_features)
    codes = quantize_codes(weight, scale_cols, zero_cols, spec.bits)
    weight_q = dequantize(codes, scale_cols, zero_cols)
    return QuantResult(weight_q=weight_q, codes=codes, scale=scale, zero=zero)
