"""Damped Cholesky factorisation with escalating damping (shared by GPTQ and QEP).

Both solvers factor H + λ·I with λ = percdamp · mean(diag H). A Hessian from too few
tokens, duplicated features or float round-off can be singular or slightly indefinite;
then the factorisation fails, or "succeeds" with pivots at round-off level whose inverse
is garbage. Either way we retry with percdamp × 10 (a zero percdamp escalates to 0.01),
log a warning and report the percdamp actually used, instead of returning NaN weights.
"""

from __future__ import annotations

import logging

import torch

from fade.errors import QuantizationError

logger = logging.getLogger("fade.quant")

__all__ = ["damped_cholesky", "MAX_DAMP_ESCALATIONS"]

# percdamp 0.01 -> 0.1 -> 1 -> 10 -> 100: at 100 × mean(diag H) the damped Hessian is
# dominated by its diagonal; if that still fails the statistics are not finite.
MAX_DAMP_ESCALATIONS = 4
_FIRST_NONZERO_PERCDAMP = 0.01  # what a percdamp of 0 escalates to (the GPTQ default)


def _numerically_pd(lower: torch.Tensor, info: torch.Tensor, damped: torch.Tensor, tol_dtype: torch.dtype) -> bool:
    """Cholesky succeeded and no pivot is at round-off level for ``tol_dtype``.

    A pivot L_ii² bounds the smallest eigenvalue from above, so L_ii² below
    eps(tol_dtype) · max(diag H) means H is singular at the precision the factor is
    used in (the solve downstream would amplify round-off by more than 1/eps).
    """
    if int(info) != 0 or not bool(torch.isfinite(lower).all()):
        return False
    pivots = torch.diagonal(lower).square()
    tol = torch.finfo(tol_dtype).eps * torch.diagonal(damped).max()
    return bool(pivots.min() > tol)


def damped_cholesky(
    hessian: torch.Tensor,
    percdamp: float,
    *,
    upper_inverse: bool = False,
    tol_dtype: torch.dtype = torch.float32,
    what: str = "layer",
) -> tuple[torch.Tensor, float, list[str]]:
    """Factor ``hessian + percdamp · mean(diag) · I`` (float64), escalating percdamp.

    Returns (factor, percdamp_used, warnings). The factor is the lower Cholesky factor L
    of the damped Hessian, or with ``upper_inverse=True`` the upper Cholesky factor U of
    its inverse (H⁻¹ = Uᵀ U), which is what the GPTQ sweep consumes.
    ``hessian`` must be square, finite, with no zero diagonal entries (dead columns
    already replaced by 1); it is not modified.
    """
    if percdamp < 0:
        raise QuantizationError(f"percdamp={percdamp} must be >= 0 (the usual value is 0.01).")
    hessian = hessian.to(torch.float64)
    mean_diag = torch.diagonal(hessian).mean()
    eye = torch.eye(hessian.shape[0], dtype=hessian.dtype, device=hessian.device)
    warnings: list[str] = []
    current = float(percdamp)
    for attempt in range(MAX_DAMP_ESCALATIONS + 1):
        damped = hessian + (current * mean_diag) * eye
        lower, info = torch.linalg.cholesky_ex(damped)
        ok = _numerically_pd(lower, info, damped, tol_dtype)
        factor = lower
        if ok and upper_inverse:
            inverse = torch.cholesky_inverse(lower)
            factor, info = torch.linalg.cholesky_ex(inverse, upper=True)
            ok = int(info) == 0 and bool(torch.isfinite(factor).all())
        if ok:
            return factor, current, warnings
        if attempt == MAX_DAMP_ESCALATIONS:
            break
        nxt = current * 10 if current > 0 else _FIRST_NONZERO_PERCDAMP
        msg = (
            f"{what}: Hessian is not numerically positive definite with percdamp={current:g}; "
            f"retrying with percdamp={nxt:g} (more calibration tokens avoid this)."
        )
        logger.warning(msg)
        warnings.append(msg)
        current = nxt
    raise QuantizationError(
        f"{what}: Hessian could not be factorised even with percdamp={current:g}; "
        "its statistics are degenerate. Check the calibration activations for inf/NaN "
        "or collect more calibration tokens."
    )
