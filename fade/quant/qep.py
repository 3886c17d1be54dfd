r"""QEP weight correction (Arai & Ichikawa, "Quantization Error Propagation: Revisiting
Layer-Wise Post-Training Quantization", NeurIPS 2025, arXiv:2504.09629).

Layer-wise PTQ quantizes layer l to reproduce W X, where X are the inputs the
*full-precision* model feeds it. But at inference the layer sees X̂, the inputs produced
by the already-quantized layers before it, and their error accumulates. QEP instead
targets ‖W X − W' X̂‖²: it first moves the weight to a target W' that undoes part of the
incoming error, then quantizes W' with GPTQ/RTN on the Hessian of X̂.

Notation: columns of X, X̂ are tokens ([in, N]); δ = X − X̂ (full precision minus
quantized: sign matters); Ĥ = X̂ X̂ᵀ; C = δ X̂ᵀ = (X − X̂) X̂ᵀ.

Derivation. For a ridge weight μ > 0, minimise over W'

    f(W') = ‖W X − W' X̂‖²_F + μ ‖W' − W‖²_F.

Setting the gradient to zero: (W' X̂ − W X) X̂ᵀ + μ (W' − W) = 0, i.e.

    W' (Ĥ + μ I) = W X X̂ᵀ + μ W = W (X̂ + δ) X̂ᵀ + μ W = W (Ĥ + μ I) + W C,

so W' = W + W C (Ĥ + μ I)⁻¹ exactly. The ridge pulls W' towards W (not towards 0), so
directions X̂ does not excite keep the original weight. QEP scales the step:

    ΔW = α · W C (Ĥ + μ I)⁻¹,   μ = damp · mean(diag Ĥ),   W' = W + ΔW,

α ∈ [0, 1] trading error compensation against over-fitting to the calibration set:
α = 1 is the ridge solution above, α = 0 is plain layer-wise PTQ (ΔW = 0 exactly).
ΔW is invariant to a common scaling of Ĥ and C (as in the reference, which averages
with 2/N), so the sums from ``QEPStatistics`` can be used directly.

Defaults from the authors' code (FujitsuResearch/qep, ``QEPConfig``: percdamp = 0.01,
perccorr = 0.5; ``Quantizer.adjust_weight`` forms the same ΔW with a Cholesky solve):
``damp`` defaults to 0.01 here; α has no default and must be chosen by the caller (the
reference's 0.5; FADE chooses it per layer).

Dead inputs (diag Ĥ = 0) get Ĥ_ii = 1 as in GPTQ. Their row and column of Ĥ and their
column of C are zero, so ΔW[:, i] = 0 and the target keeps W[:, i] (the reference also
zeroes W[:, i] here, which GPTQ does anyway, so downstream results agree).
The solve is done in float64; the target is returned in float32 (float64 for a float64
weight), the precision GPTQ consumes it in.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from fade.errors import QuantizationError
from fade.quant.damping import damped_cholesky
from fade.quant.grid import working_dtype

__all__ = ["QEPResult", "qep_target", "DEFAULT_QEP_DAMP"]

DEFAULT_QEP_DAMP = 0.01  # FujitsuResearch/qep QEPConfig.percdamp


@dataclass
class QEPResult:
    """weight_target = W + ΔW; delta_norm_ratio = ‖ΔW‖_F / ‖W‖_F; damp_used: the damp
    actually used (larger than requested if the factorisation needed escalation)."""

    weight_target: torch.Tensor
    delta_norm_ratio: float
    damp_used: float
    warnings: list[str] = field(default_factory=list)


def qep_target(
    weight: torch.Tensor,
    hessian_q: torch.Tensor,
    cross: torch.Tensor,
    alpha: float,
    damp: float = DEFAULT_QEP_DAMP,
    *,
    layer_name: str | None = None,
) -> QEPResult:
    """Corrected weight W + α · W C (Ĥ + damp · mean(diag Ĥ) · I)⁻¹.

    weight: [out, in]; hessian_q: Ĥ = Σ x̂ x̂ᵀ [in, in]; cross: C = Σ (x − x̂) x̂ᵀ [in, in].
    """
    what = f"layer {layer_name!r}" if layer_name else "layer"
    if weight.dim() != 2:
        raise QuantizationError(
            f"{what}: expected a 2-D weight [out_features, in_features], got {tuple(weight.shape)}."
        )
    n = weight.shape[1]
    for name, t in (("hessian_q", hessian_q), ("cross", cross)):
        if t.shape != (n, n):
            raise QuantizationError(
                f"{what}: {name} has shape {tuple(t.shape)}, expected ({n}, {n}) for in_features={n}."
            )
        if not bool(torch.isfinite(t).all()):
            raise QuantizationError(f"{what}: {name} contains inf/NaN; check the calibration activations.")
    alpha = float(alpha)
    if not (alpha == alpha and abs(alpha) != float("inf")):
        raise QuantizationError(f"{what}: alpha={alpha} must be a finite number (usually in [0, 1]).")

    out_dtype = working_dtype(weight)
    if alpha == 0.0:
        # No correction: return W itself so correct-then-quantize == quantize, bit for bit.
        return QEPResult(weight.to(out_dtype).clone(), 0.0, float(damp))

    W = weight.to(torch.float64)
    H = hessian_q.to(torch.float64).clone()
    dead = torch.diagonal(H) == 0
    H[dead, dead] = 1
    lower, damp_used, warnings = damped_cholesky(H, damp, tol_dtype=torch.float64, what=what)

    # ΔWᵀ = (Ĥ + μI)⁻¹ (W C)ᵀ, a Cholesky solve (Ĥ is symmetric), no explicit inverse.
    rhs = W @ cross.to(torch.float64)
    delta = alpha * torch.cholesky_solve(rhs.T, lower).T
    w_norm = torch.linalg.matrix_norm(W)
    ratio = float(torch.linalg.matrix_norm(delta) / w_norm) if w_norm > 0 else 0.0
    return QEPResult((W + delta).to(out_dtype), ratio, damp_used, warnings)
