"""What happens to one Linear: choose α, correct the target (QEP), quantize (GPTQ or RTN), measure.

Everything here acts on tensors and statistics; the sequential runner supplies them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from fade.quant import GridSpec, gptq_quantize, qep_target, rtn_quantize


@dataclass
class LayerStatistics:
    """Second-order statistics of one Linear's input over the calibration tokens.

    ``hessian_q`` = Σ x̂x̂ᵀ (partially quantized model), ``cross`` = Σ (x − x̂)x̂ᵀ, and
    ``hessian_fp`` = Σ xxᵀ (full-precision model). Without the full-precision stream only
    ``hessian_q`` exists.
    """

    hessian_q: torch.Tensor
    cross: torch.Tensor | None = None
    hessian_fp: torch.Tensor | None = None
    num_tokens: int = 0


def output_error(weight: torch.Tensor, candidate: torch.Tensor, stats: LayerStatistics) -> float | None:
    """‖WX − W'X̂‖²_F / ‖WX‖²_F from statistics alone (biases cancel; None without the FP stream).

    With M = Σ x x̂ᵀ = C + Ĥ: ‖WX − W'X̂‖² = tr(W H Wᵀ) − 2 tr(W M W'ᵀ) + tr(W' Ĥ W'ᵀ).
    """
    if stats.hessian_fp is None or stats.cross is None:
        return None
    w = weight.to(torch.float64)
    c = candidate.to(torch.float64)
    reference = torch.sum((w @ stats.hessian_fp) * w)
    if reference <= 0:
        return 0.0
    mixed = stats.cross + stats.hessian_q
    error = reference - 2 * torch.sum((w @ mixed) * c) + torch.sum((c @ stats.hessian_q) * c)
    return float(error.clamp_min(0) / reference)


def local_error(weight: torch.Tensor, candidate: torch.Tensor, hessian: torch.Tensor) -> float:
    """‖(W − W')X̂‖²_F / ‖WX̂‖²_F: the error GPTQ minimises, on the quantized model's own input."""
    w = weight.to(torch.float64)
    diff = w - candidate.to(torch.float64)
    reference = torch.sum((w @ hessian) * w)
    return float(torch.sum((diff @ hessian) * diff) / reference) if reference > 0 else 0.0


@dataclass
class QuantizerSettings:
    method: str  # "rtn" | "gptq"
    grid: GridSpec
    block_size: int = 128
    percdamp: float = 0.01
    act_order: bool = False
    static_groups: bool | None = None


@dataclass
class QuantizedWeight:
    """The result kept for the model and for export."""

    weight_q: torch.Tensor
    codes: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor
    g_idx: torch.Tensor | None
    damp_used: float | None
    warnings: list[str] = field(default_factory=list)


def quantize_weight(weight: torch.Tensor, hessian: torch.Tensor, settings: QuantizerSettings, name: str) -> QuantizedWeight:
    if settings.method == "rtn":
        r = rtn_quantize(weight, settings.grid, layer_name=name)
        return QuantizedWeight(r.weight_q, r.codes, r.scale, r.zero, None, None)
    if settings.method == "gptq":
        r = gptq_quantize(weight, hessian, settings.grid, block_size=settings.block_size, percdamp=settings.percdamp,
                          act_order=settings.act_order, static_groups=settings.static_groups, layer_name=name)
        return QuantizedWeight(r.weight_q, r.codes, r.scale, r.zero, r.g_idx, r.damp_used, list(r.warnings))
    raise ValueError(f"unknown quantizer {settings.method!r}")


class AlphaPolicy(Protocol):
    """Chooses each layer's compensation strength α (QEP: one constant; FADE: per layer)."""

    def prepare(self, weights: dict[str, torch.Tensor], context: dict[str, Any]) -> None:
        """Called once with every quantizable weight before calibration starts."""

    def alpha(self, name: str, weight: torch.Tensor, stats: LayerStatistics) -> tuple[float, dict[str, Any]]:
        """α for this layer, and diagnostics to record beside it."""


@dataclass
class ConstantAlpha:
    """QEP's global α (the paper's default 0.5); α = 0 is plain GPTQ/RTN."""

    value: float = 0.5

    def prepare(self, weights, context) -> None:
        pass

    def alpha(self, name, weight, stats) -> tuple[float, dict[str, Any]]:
        return self.value, {}


def process_linear(name: str, weight: torch.Tensor, stats: LayerStatistics, settings: QuantizerSettings, *,
                   policy: AlphaPolicy | None, qep_damp: float, record_uncorrected: bool) -> tuple[QuantizedWeight, dict[str, Any]]:
    """Correct (if a policy is given) then quantize one weight; return it and its record."""
    start = time.perf_counter()
    weight = weight.to(torch.float32)
    record: dict[str, Any] = {"alpha": 0.0, "delta_norm_ratio": 0.0, "qep_damp_used": None}
    target = weight
    if policy is not None and stats.cross is not None:
        alpha, diagnostics = policy.alpha(name, weight, stats)
        record.update(diagnostics)
        record["alpha"] = float(alpha)
        if alpha != 0:
            corrected = qep_target(weight, stats.hessian_q, stats.cross, alpha, qep_damp, layer_name=name)
            target = corrected.weight_target.to(torch.float32)
            record.update(delta_norm_ratio=corrected.delta_norm_ratio, qep_damp_used=corrected.damp_used)
    quantized = quantize_weight(target, stats.hessian_q, settings, name)
    record["err_input_only"] = output_error(weight, weight, stats)
    record["err_final"] = output_error(weight, quantized.weight_q, stats)
    record["err_local"] = local_error(target, quantized.weight_q, stats.hessian_q)
    if record_uncorrected and target is not weight:
        plain = quantize_weight(weight, stats.hessian_q, settings, name)
        record["err_uncorrected"] = output_error(weight, plain.weight_q, stats)
    else:
        record["err_uncorrected"] = record["err_final"]
    record["gptq_damp_used"] = quantized.damp_used
    record["warnings"] = "; ".join(quantized.warnings)
    record["seconds"] = round(time.perf_counter() - start, 4)
    return quantized, record
