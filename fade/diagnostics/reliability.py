r"""Calibration reliability R_calib(l): how far the data-driven QEP correction of layer l
can be trusted. **Higher = more trustworthy = α should go up.**

Everything is computed from the layer's statistics (``fade.calibration.layer.LayerStatistics``,
sums over the N calibration tokens, float64 [in, in]):

    Ĥ = Σ x̂x̂ᵀ,  C = Σ (x − x̂)x̂ᵀ = Σ δx̂ᵀ,  H = Σ xxᵀ,  M = Σ x x̂ᵀ = C + Ĥ,
    D = Σ δδᵀ = H − M − Mᵀ + Ĥ = H − C − Cᵀ − Ĥ,
    ΔW(α) = α · W C (Ĥ + μI)⁻¹,  μ = damp · mean(diag Ĥ)      (``fade.quant.qep_target``),
    e(W') = ‖W X − W' X̂‖²_F = tr(W H Wᵀ) − 2 tr(W M W'ᵀ) + tr(W' Ĥ W'ᵀ),
    e(W + Δ) = e₀ − 2 tr(W C Δᵀ) + tr(Δ Ĥ Δᵀ),   e₀ = e(W) = tr(W D Wᵀ).

Raw quantities (exported functions) and the registered, signed scores (``RELIABILITY``):

=========================  ===================================================  ==========================
registry name              score (higher = trust the correction more)           why this sign
=========================  ===================================================  ==========================
``correction_size``        −log(‖ΔW(1)‖_F / ‖W‖_F)                              a large relative step is
                           (raw: ``relative_correction_norm``)                  more likely fitted noise
``hessian_effective_rank`` erank(Ĥ) / in,  erank = exp(−Σ pᵢ log pᵢ),           a spread spectrum: the
                           pᵢ = λᵢ / Σλ (eigenvalues of Ĥ, clamped ≥ 0)         solve amplifies nothing
``hessian_conditioning``   −log κ(Ĥ_d),  Ĥ_d = Ĥ + μI (dead inputs → 1, as QEP) ill-conditioned solve =
                           (raw: ``hessian_log_condition``)                     noisy ΔW directions
``input_discrepancy``      log(‖δ‖/‖X̂‖) = ½ log(tr D / tr Ĥ)                    more incoming error =
                           (raw: ``input_discrepancy``)                         more signal to correct
``predicted_gain``         log(e₀ / e(W*(1))) = −log(1 − reduction)             the correction explains
                           (raw: ``predicted_error_reduction`` = 1 − e₁/e₀)     δ well (in-sample)
``heldout_gain``           mean over (A→B, B→A) of 1 − e_B(W + ΔW_A) / e_B(W)   the fitted correction
                           (needs ``SplitStatistics``)                          generalises (can be < 0)
``heldout_alpha``          mean of the held-out optimal step                    what the other half
                           α*_{B|A} = tr(W C_B ΔW_Aᵀ) / tr(ΔW_A Ĥ_B ΔW_Aᵀ)      prefers (needs split)
``heldout_alpha_full``     2a / (1 + a) for a = ``heldout_alpha`` > 0, else a   the step the correction
                           (``extrapolate_split_half_step``)                    fitted on *all* the data
                                                                                should take (a step,
                                                                                for ``mapping=direct``)
=========================  ===================================================  ==========================

Split-half extrapolation (``heldout_alpha_full``). Model the correction fitted on n utterances as
ΔW_n = S + E_n, a signal S plus an estimation error E_n, uncorrelated, with E[‖E_n‖²] ∝ 1/n
measured in the output metric of the held-out data. The step along ΔW_n that minimises the
expected held-out error is α*(n) = ‖S‖² / (‖S‖² + E‖E_n‖²). The split-half estimate measures
a = α*(n/2) = ‖S‖² / (‖S‖² + 2ε) (ε = E‖E_n‖²), so the full-data step is
α*(n) = ‖S‖² / (‖S‖² + ε) = 2a / (1 + a): 0.3 → 0.46, 0.5 → 0.67, 0.8 → 0.89. A measured a ≤ 0 (a
correction that points the wrong way on the other half) is kept as it is and clipped by the
policy. Stated as a model, not a theorem: it ignores that the test utterances differ from the
calibration ones more than one calibration half from the other.

Transforms: ratios that span orders of magnitude across depth (correction size,
discrepancy, in-sample gain, condition number) are log-transformed so the z-scoring
compares orders of magnitude; bounded scores (effective-rank fraction, held-out gain and
α*) are left raw. In-sample the ridge step never increases e (e(W*) + μ‖ΔW‖² ≤ e₀), so
``predicted_error_reduction`` ∈ [0, 1] and is optimistic when N is not ≫ in; the held-out
scores measure the same thing on tokens the correction was not fitted on.

Undefined values are ``nan`` (and the normalisers give them contribution 0): without the
full-precision stream (``cross``/``hessian_fp`` None), or when there is no incoming error
(C = 0, e.g. the first group of the encoder, where X̂ = X): then ΔW = 0 and α is irrelevant.

Numerics: D = H − C − Cᵀ − Ĥ cancels when δ ≪ x; in float64 with ‖δ‖/‖x‖ ≥ 1e-4 the
relative error of tr D is still ≲ 1e-8. Results are clamped at 0 where a square is meant.

Held-out statistics. ``SplitStatistics(a, b)`` holds the statistics of two disjoint halves
of the calibration *utterances* (split by utterance, not by token: tokens of one utterance
are strongly correlated, a token-level split would leak). The sequential runner currently
only accumulates pooled statistics; to use ``heldout_*`` it must accumulate two
``QEPStatistics``/``HessianAccumulator`` sets (e.g. even / odd calibration batches) and pass
``SplitStatistics(a, b).pooled()`` — a ``SplitLayerStatistics``: the ordinary pooled
``LayerStatistics`` (Ĥ = Ĥ_A + Ĥ_B, …) with ``.split`` attached — to ``process_linear``;
``FadePolicy`` reads ``stats.split``. ``needs_split(name)`` says which signals need it.
Registered functions all have the signature ``f(weight, stats, damp=0.01, *, split=None)``.

Cost: ``hessian_effective_rank``/``hessian_conditioning`` need eigvalsh(Ĥ) (O(in³), once per
Hessian: cached for the Ĥ tensor shared by q/k/v); the others need one Cholesky solve per
fit (held-out: two).
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import Callable

import torch

from fade.calibration.layer import LayerStatistics
from fade.quant import DEFAULT_QEP_DAMP, qep_target

__all__ = [
    "RELIABILITY",
    "ReliabilityFn",
    "SplitLayerStatistics",
    "SplitStatistics",
    "STEP_VALUED",
    "correction_delta",
    "correction_error",
    "extrapolate_split_half_step",
    "heldout_error_reduction",
    "heldout_optimal_alpha",
    "hessian_effective_rank",
    "hessian_log_condition",
    "input_discrepancy",
    "needs_split",
    "predicted_error_reduction",
    "relative_correction_norm",
    "split_of",
]

ReliabilityFn = Callable[..., float]
NAN = float("nan")


# --- split statistics ------------------------------------------------------------------------------


@dataclass
class SplitLayerStatistics(LayerStatistics):
    """Pooled statistics with the two halves they were summed from attached (``split``)."""

    split: "SplitStatistics | None" = None


@dataclass
class SplitStatistics:
    """Statistics of two disjoint halves (A, B) of the calibration utterances."""

    a: LayerStatistics
    b: LayerStatistics

    def pooled(self) -> SplitLayerStatistics:
        """A + B (what the runner would have accumulated without splitting), with ``split=self``."""

        def add(x, y):
            return None if x is None or y is None else x + y

        return SplitLayerStatistics(
            hessian_q=self.a.hessian_q + self.b.hessian_q,
            cross=add(self.a.cross, self.b.cross),
            hessian_fp=add(self.a.hessian_fp, self.b.hessian_fp),
            num_tokens=self.a.num_tokens + self.b.num_tokens,
            split=self,
        )


def split_of(stats: LayerStatistics) -> SplitStatistics | None:
    """The split attached to ``stats`` (a ``SplitLayerStatistics``), or None."""
    return getattr(stats, "split", None)


# --- shared pieces -----------------------------------------------------------------------------------


def _has_fp(stats: LayerStatistics) -> bool:
    return stats.cross is not None and stats.hessian_fp is not None


def correction_delta(weight: torch.Tensor, stats: LayerStatistics, damp: float = DEFAULT_QEP_DAMP,
                     alpha: float = 1.0) -> torch.Tensor:
    """ΔW(α) = α · W C (Ĥ + μI)⁻¹ in float64 (via ``qep_target`` on a float64 weight)."""
    if stats.cross is None:
        raise ValueError("the correction needs the cross statistics C (full-precision stream)")
    w = weight.detach().to(torch.float64)
    target = qep_target(w, stats.hessian_q, stats.cross, alpha, damp).weight_target
    return target - w


def _e0(w: torch.Tensor, stats: LayerStatistics) -> torch.Tensor:
    """e(W) = tr(W D Wᵀ), D = H − C − Cᵀ − Ĥ."""
    c = stats.cross.to(torch.float64)
    d = stats.hessian_fp.to(torch.float64) - c - c.T - stats.hessian_q.to(torch.float64)
    return torch.sum((w @ d) * w).clamp_min(0)


def _linear_and_quadratic(w: torch.Tensor, delta: torch.Tensor, stats: LayerStatistics) -> tuple[torch.Tensor, torch.Tensor]:
    """(tr(W C Δᵀ), tr(Δ Ĥ Δᵀ)): e(W + αΔ) = e₀ − 2α·first + α²·second."""
    lin = torch.sum((w @ stats.cross.to(torch.float64)) * delta)
    quad = torch.sum((delta @ stats.hessian_q.to(torch.float64)) * delta)
    return lin, quad


def correction_error(weight: torch.Tensor, delta: torch.Tensor, stats: LayerStatistics) -> float:
    """‖W X − (W + Δ) X̂‖²_F from the statistics (absolute, not relative)."""
    if not _has_fp(stats):
        raise ValueError("the output error needs the full-precision statistics (cross, hessian_fp)")
    w = weight.detach().to(torch.float64)
    lin, quad = _linear_and_quadratic(w, delta.to(torch.float64), stats)
    return float((_e0(w, stats) - 2 * lin + quad).clamp_min(0))


_EIG_CACHE: dict[str, object] = {}


def _eigvalsh(h: torch.Tensor) -> torch.Tensor:
    """Eigenvalues of a symmetric matrix, cached for the last tensor seen (q/k/v share Ĥ).

    The key is a weak reference plus the tensor's in-place version counter, so the cache
    keeps no [in, in] matrix alive and notices in-place updates.
    """
    ref = _EIG_CACHE.get("ref")
    if ref is not None and ref() is h and _EIG_CACHE.get("version") == h._version:
        return _EIG_CACHE["values"]  # type: ignore[return-value]
    values = torch.linalg.eigvalsh(h.to(torch.float64))
    _EIG_CACHE.update(ref=weakref.ref(h), version=h._version, values=values)
    return values


# --- raw quantities --------------------------------------------------------------------------------


def relative_correction_norm(weight: torch.Tensor, stats: LayerStatistics, damp: float = DEFAULT_QEP_DAMP) -> float:
    """‖ΔW(1)‖_F / ‖W‖_F (nan without C; 0 for W = 0)."""
    if stats.cross is None:
        return NAN
    w_norm = torch.linalg.matrix_norm(weight.detach().to(torch.float64))
    if w_norm <= 0:
        return 0.0
    return float(torch.linalg.matrix_norm(correction_delta(weight, stats, damp)) / w_norm)


def hessian_effective_rank(stats: LayerStatistics) -> float:
    """exp(entropy of the normalised eigenvalues of Ĥ) / in_features ∈ (0, 1]; nan for Ĥ = 0."""
    lam = _eigvalsh(stats.hessian_q).clamp_min(0)
    total = lam.sum()
    if total <= 0:
        return NAN
    p = lam[lam > 0] / total
    return float(torch.exp(-(p * p.log()).sum()) / lam.numel())


def hessian_log_condition(stats: LayerStatistics, damp: float = DEFAULT_QEP_DAMP) -> float:
    """log κ(Ĥ + μI), the matrix QEP solves with (dead inputs get Ĥ_ii = 1 first, as in QEP)."""
    h = stats.hessian_q.to(torch.float64)
    dead = torch.diagonal(h) == 0
    if bool(dead.any()):
        h = h.clone()
        h[dead, dead] = 1
    lam = _eigvalsh(h).clamp_min(0) + damp * torch.diagonal(h).mean()
    if lam[0] <= 0:
        return math.inf
    return float(torch.log(lam[-1] / lam[0]))


def input_discrepancy(stats: LayerStatistics) -> float:
    """‖δ‖_F / ‖X̂‖_F = sqrt(tr D / tr Ĥ), tr D = tr H − 2 tr C − tr Ĥ (nan without the FP stream)."""
    if not _has_fp(stats):
        return NAN
    tr_hq = torch.trace(stats.hessian_q.to(torch.float64))
    if tr_hq <= 0:
        return NAN
    tr_d = torch.trace(stats.hessian_fp.to(torch.float64)) - 2 * torch.trace(stats.cross.to(torch.float64)) - tr_hq
    return float(torch.sqrt(tr_d.clamp_min(0) / tr_hq))


def predicted_error_reduction(weight: torch.Tensor, stats: LayerStatistics, damp: float = DEFAULT_QEP_DAMP,
                              alpha: float = 1.0) -> float:
    """(e(W) − e(W + ΔW(α))) / e(W), in-sample; nan when e(W) = 0 or without the FP stream."""
    if not _has_fp(stats):
        return NAN
    w = weight.detach().to(torch.float64)
    e0 = _e0(w, stats)
    if e0 <= 0:
        return NAN
    lin, quad = _linear_and_quadratic(w, correction_delta(weight, stats, damp, alpha), stats)
    e1 = (e0 - 2 * lin + quad).clamp_min(0)
    return float((e0 - e1) / e0)


def _heldout_terms(weight: torch.Tensor, fit: LayerStatistics, test: LayerStatistics, damp: float):
    """ΔW fitted on ``fit`` (α = 1); returns (e₀, tr(W C Δᵀ), tr(Δ Ĥ Δᵀ)) on ``test``."""
    w = weight.detach().to(torch.float64)
    delta = correction_delta(weight, fit, damp)
    lin, quad = _linear_and_quadratic(w, delta, test)
    return _e0(w, test), lin, quad


def _check_split(split: SplitStatistics | None) -> SplitStatistics:
    if split is None:
        raise ValueError("this held-out score needs SplitStatistics (two disjoint halves of the calibration set)")
    for half in (split.a, split.b):
        if not _has_fp(half):
            raise ValueError("both halves of the split need the full-precision statistics (cross, hessian_fp)")
    return split


def _mean_finite(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else NAN


def heldout_error_reduction(weight: torch.Tensor, split: SplitStatistics, damp: float = DEFAULT_QEP_DAMP) -> float:
    """Mean over (fit A, test B) and (fit B, test A) of 1 − e_test(W + ΔW_fit) / e_test(W).

    1 = the correction fitted on one half removes all error on the other; 0 = no gain;
    negative = the correction fitted on one half makes the other half worse.
    """
    split = _check_split(split)
    scores = []
    for fit, test in ((split.a, split.b), (split.b, split.a)):
        e0, lin, quad = _heldout_terms(weight, fit, test, damp)
        scores.append(float((2 * lin - quad) / e0) if e0 > 0 else NAN)
    return _mean_finite(scores)


def heldout_optimal_alpha(weight: torch.Tensor, split: SplitStatistics, damp: float = DEFAULT_QEP_DAMP) -> float:
    """Mean of α*_{test|fit} = tr(W C_test ΔW_fitᵀ) / tr(ΔW_fit Ĥ_test ΔW_fitᵀ), the step along the
    correction fitted on one half that minimises the other half's error (e is quadratic in α)."""
    split = _check_split(split)
    values = []
    for fit, test in ((split.a, split.b), (split.b, split.a)):
        _, lin, quad = _heldout_terms(weight, fit, test, damp)
        values.append(float(lin / quad) if quad > 0 else NAN)
    return _mean_finite(values)


# --- registered, signed scores ----------------------------------------------------------------------


def extrapolate_split_half_step(a: float) -> float:
    """The optimal step of a correction fitted on all the data from that of one fitted on half of it:
    2a / (1 + a) for a > 0 (module doc), a itself otherwise."""
    return 2.0 * a / (1.0 + a) if math.isfinite(a) and a > 0 else a


def _neg_log(x: float) -> float:
    return -math.log(x) if x > 0 and math.isfinite(x) else NAN


def _log(x: float) -> float:
    return math.log(x) if x > 0 and math.isfinite(x) else NAN


def score_correction_size(weight, stats, damp=DEFAULT_QEP_DAMP, *, split=None) -> float:
    """−log(‖ΔW(1)‖/‖W‖): small corrections are trusted more."""
    return _neg_log(relative_correction_norm(weight, stats, damp))


def score_hessian_effective_rank(weight, stats, damp=DEFAULT_QEP_DAMP, *, split=None) -> float:
    """erank(Ĥ)/in: a well-spread input spectrum is trusted more."""
    return hessian_effective_rank(stats)


def score_hessian_conditioning(weight, stats, damp=DEFAULT_QEP_DAMP, *, split=None) -> float:
    """−log κ(Ĥ + μI): a well-conditioned solve is trusted more."""
    value = hessian_log_condition(stats, damp)
    return -value if math.isfinite(value) else NAN


def score_input_discrepancy(weight, stats, damp=DEFAULT_QEP_DAMP, *, split=None) -> float:
    """log(‖δ‖/‖X̂‖): more incoming error, more to correct."""
    return _log(input_discrepancy(stats))


def score_predicted_gain(weight, stats, damp=DEFAULT_QEP_DAMP, *, split=None) -> float:
    """log(e(W)/e(W*(1))) = −log(1 − reduction), in-sample."""
    reduction = predicted_error_reduction(weight, stats, damp)
    return _neg_log(1.0 - reduction) if math.isfinite(reduction) else NAN


def score_heldout_gain(weight, stats, damp=DEFAULT_QEP_DAMP, *, split=None) -> float:
    """Held-out relative error reduction (A→B, B→A averaged)."""
    return heldout_error_reduction(weight, split if split is not None else split_of(stats), damp)


def score_heldout_alpha(weight, stats, damp=DEFAULT_QEP_DAMP, *, split=None) -> float:
    """Held-out optimal step along the correction (A→B, B→A averaged)."""
    return heldout_optimal_alpha(weight, split if split is not None else split_of(stats), damp)


def score_heldout_alpha_full(weight, stats, damp=DEFAULT_QEP_DAMP, *, split=None) -> float:
    """Held-out optimal step, extrapolated from a half-data fit to the full-data correction."""
    return extrapolate_split_half_step(score_heldout_alpha(weight, stats, damp, split=split))


RELIABILITY: dict[str, ReliabilityFn] = {
    "correction_size": score_correction_size,
    "hessian_effective_rank": score_hessian_effective_rank,
    "hessian_conditioning": score_hessian_conditioning,
    "input_discrepancy": score_input_discrepancy,
    "predicted_gain": score_predicted_gain,
    "heldout_gain": score_heldout_gain,
    "heldout_alpha": score_heldout_alpha,
    "heldout_alpha_full": score_heldout_alpha_full,
}

_NEEDS_SPLIT = {"heldout_gain", "heldout_alpha", "heldout_alpha_full"}
#: Scores that are themselves a step α (``FadePolicy(mapping="direct")`` uses them as α).
STEP_VALUED = {"heldout_alpha", "heldout_alpha_full"}


def needs_split(name: str) -> bool:
    """True when the R_calib candidate ``name`` needs ``SplitStatistics`` from the runner."""
    if name not in RELIABILITY:
        raise KeyError(f"unknown R_calib candidate {name!r}; choose from {sorted(RELIABILITY)}")
    return name in _NEEDS_SPLIT
