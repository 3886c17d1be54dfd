r"""``FadePolicy``: FADE's per-layer compensation strength α_l for QEP.

For layer l (``fade.calibration.layer.AlphaPolicy``):

    v_l = z_V( sign_V · V_int(W_l) )              (normalised over all layers in ``prepare``)
    r_l = z_R( sign_R · R_calib(W_l, stats_l) )   (running normaliser, at the layer's turn)
    s_l = w_V · v_l + w_R · r_l
    α_l = clip(α_min + (α_max − α_min) · σ(s_l), α_min, α_max),   σ(s) = 1 / (1 + e^{−s})

``mapping="direct"`` (a level-preserving alternative, docs/fade.md §5) skips the z-scores and the
sigmoid for an R_calib that is itself a step (``STEP_VALUED``: ``heldout_alpha``,
``heldout_alpha_full``): α_l = clip(R_calib(l), α_min, α_max), with V_int off. It keeps what the
z-score throws away, the level: a correction that over-fits everywhere gets a small α everywhere.
An undefined step (no incoming error, so no correction to scale) gives the neutral α.

Defaults α_min = 0.2, α_max = 0.7: the neutral value at s = 0 is (α_min + α_max)/2 = 0.45,
the value the FADE paper's mapping gives at s = 0 (QEP's global constant is 0.5). With both
signals off (``v_int=None, r_calib=None``) every layer gets the neutral α. The clip is a
no-op for finite s (σ ∈ (0, 1)) and guards round-off.

Signals are chosen by name from ``VULNERABILITY`` / ``RELIABILITY`` (or given as callables
with the same signatures) and are already oriented (higher V = more vulnerable, higher R =
correction more trustworthy; both raise α with the default signs +1, as in the paper's
s_l = V_int + R_calib). ``v_sign`` / ``r_sign`` = −1 flip a signal for ablations. An
undefined value (nan, e.g. R_calib of a layer with no incoming error) contributes 0.

Timing: V_int of every layer is computed in ``prepare`` from the original weights (the
runner's tensors are views of the quantized model's parameters, overwritten later, so only
the scalars are kept) and z-scored over all layers (``normalization="global"``) or within
each part (``"per_part"``: parts from ``context["parts"]`` if given, else from the stages:
a name belongs to the stage whose ``path`` prefixes it). R_calib is computed when the loop
reaches the layer and scored by a ``RunningNormalizer`` (one per part for ``"per_part"``)
against the layers before it; the first ``warmup`` layers (per population) get r = 0. Pass
``r_oracle`` (name → R_calib raw from a first pass) to z-score against that complete
population instead (ablation only; see ``fade.diagnostics.normalize``).

Held-out R_calib candidates (``needs_split``) read ``stats.split`` (a
``SplitLayerStatistics`` from the runner) or the ``split`` argument of ``alpha``; without
one, ``alpha`` raises.

Diagnostics returned beside α (every key always present): ``v_int_raw`` / ``r_calib_raw`` —
the registered (signed, transformed) scores before normalisation, nan when the signal is off
or undefined; ``v_int`` / ``r_calib`` — their normalised values (0 when off, undefined or in
warmup); ``s``; ``alpha``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch

from fade.calibration.layer import LayerStatistics
from fade.diagnostics.normalize import OracleNormalizer, RunningNormalizer, location_scale
from fade.diagnostics.reliability import RELIABILITY, STEP_VALUED, needs_split, split_of
from fade.diagnostics.vulnerability import VULNERABILITY
from fade.quant import DEFAULT_QEP_DAMP

__all__ = ["DEFAULT_ALPHA_MAX", "DEFAULT_ALPHA_MIN", "FadePolicy", "alpha_from_score", "neutral_alpha", "parts_from_stages"]

DEFAULT_ALPHA_MIN = 0.2
DEFAULT_ALPHA_MAX = 0.7
NORMALIZATIONS = ("global", "per_part")
MAPPINGS = ("sigmoid", "direct")
_GLOBAL = "all"
NAN = float("nan")


def _sigmoid(s: float) -> float:
    if s >= 0:
        return 1.0 / (1.0 + math.exp(-s))
    e = math.exp(s)
    return e / (1.0 + e)


def alpha_from_score(s: float, alpha_min: float = DEFAULT_ALPHA_MIN, alpha_max: float = DEFAULT_ALPHA_MAX) -> float:
    """clip(α_min + (α_max − α_min) · σ(s), α_min, α_max)."""
    if math.isnan(s):
        s = 0.0
    return min(max(alpha_min + (alpha_max - alpha_min) * _sigmoid(s), alpha_min), alpha_max)


def neutral_alpha(alpha_min: float = DEFAULT_ALPHA_MIN, alpha_max: float = DEFAULT_ALPHA_MAX) -> float:
    """α at s = 0: (α_min + α_max) / 2 (0.45 with the defaults)."""
    return alpha_from_score(0.0, alpha_min, alpha_max)


def parts_from_stages(names, stages) -> dict[str, str]:
    """name → stage.part for the stage whose path is the longest prefix of the name."""
    parts = {}
    for name in names:
        best = None
        for stage in stages or ():
            path = stage.path
            if (name == path or name.startswith(path + ".")) and (best is None or len(path) > len(best.path)):
                best = stage
        if best is not None:
            parts[name] = best.part
    return parts


def _resolve(kind: str, spec, registry: Mapping[str, Callable], kwargs: Mapping[str, Any] | None):
    if spec is None:
        return None, None
    if isinstance(spec, str):
        if spec not in registry:
            raise KeyError(f"unknown {kind} candidate {spec!r}; choose from {sorted(registry)}")
        fn, label = registry[spec], spec
    elif callable(spec):
        fn, label = spec, getattr(spec, "__name__", repr(spec))
    else:
        raise TypeError(f"{kind} must be a registry name, a callable or None, got {spec!r}")
    return (functools.partial(fn, **kwargs) if kwargs else fn), label


class FadePolicy:
    """Per-layer α from intrinsic vulnerability and calibration reliability (module doc)."""

    def __init__(self, v_int: str | Callable | None = "rtn_error", r_calib: str | Callable | None = "predicted_gain", *,
                 normalization: str = "global", v_sign: float = 1.0, r_sign: float = 1.0,
                 v_weight: float = 1.0, r_weight: float = 1.0,
                 alpha_min: float = DEFAULT_ALPHA_MIN, alpha_max: float = DEFAULT_ALPHA_MAX,
                 qep_damp: float = DEFAULT_QEP_DAMP, warmup: int = 3, robust: bool = False,
                 v_kwargs: Mapping[str, Any] | None = None, r_kwargs: Mapping[str, Any] | None = None,
                 r_oracle: Mapping[str, float] | None = None, parts: Mapping[str, str] | None = None,
                 mapping: str = "sigmoid"):
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization={normalization!r}; use one of {NORMALIZATIONS}")
        if mapping not in MAPPINGS:
            raise ValueError(f"mapping={mapping!r}; use one of {MAPPINGS}")
        if mapping == "direct" and (v_int is not None or not (isinstance(r_calib, str) and r_calib in STEP_VALUED)):
            raise ValueError(f"mapping='direct' uses R_calib as the step itself: set v_int=null and r_calib to one of "
                             f"{sorted(STEP_VALUED)} (got v_int={v_int!r}, r_calib={r_calib!r})")
        self.mapping = mapping
        for label, sign in (("v_sign", v_sign), ("r_sign", r_sign)):
            if sign not in (1, -1):
                raise ValueError(f"{label}={sign!r} must be +1 or -1")
        if not (0.0 <= alpha_min <= alpha_max):
            raise ValueError(f"need 0 <= alpha_min <= alpha_max, got alpha_min={alpha_min}, alpha_max={alpha_max}")
        self.v_fn, self.v_name = _resolve("V_int", v_int, VULNERABILITY, v_kwargs)
        self.r_fn, self.r_name = _resolve("R_calib", r_calib, RELIABILITY, r_kwargs)
        self.r_needs_split = isinstance(r_calib, str) and needs_split(r_calib)
        self.normalization = normalization
        self.v_sign, self.r_sign = float(v_sign), float(r_sign)
        self.v_weight, self.r_weight = float(v_weight), float(r_weight)
        self.alpha_min, self.alpha_max = float(alpha_min), float(alpha_max)
        self.qep_damp = qep_damp
        self.warmup = warmup
        self.robust = robust
        self.r_oracle = dict(r_oracle) if r_oracle is not None else None
        self.explicit_parts = dict(parts) if parts is not None else None
        self._reset()

    # -- state ---------------------------------------------------------------------------------

    def _reset(self) -> None:
        self.grid = None
        self.parts: dict[str, str] = dict(self.explicit_parts or {})
        self.v_raw: dict[str, float] = {}
        self.v_norm: dict[str, float] = {}
        self._v_stats: dict[str, tuple[float, float]] = {}
        self._running: dict[str, RunningNormalizer] = {}
        self._oracle: OracleNormalizer | None = None
        self._prepared = False

    def _group(self, name: str) -> str:
        return self.parts.get(name, _GLOBAL) if self.normalization == "per_part" else _GLOBAL

    # -- AlphaPolicy -------------------------------------------------------------------------------

    def prepare(self, weights: dict[str, torch.Tensor], context: dict[str, Any]) -> None:
        """Compute and z-score V_int of every layer; reset the running R_calib normalisers."""
        self._reset()
        context = context or {}
        self.grid = context.get("grid")
        if self.explicit_parts is None:
            self.parts = dict(context.get("parts") or parts_from_stages(weights, context.get("stages")))
        if self.v_fn is not None:
            with torch.no_grad():
                self.v_raw = {name: float(self.v_fn(w, self.grid)) for name, w in weights.items()}
            groups: dict[str, list[float]] = {}
            for name, value in self.v_raw.items():
                groups.setdefault(self._group(name), []).append(value)
            self._v_stats = {g: location_scale(vals, self.robust) for g, vals in groups.items()}
            self.v_norm = {name: self._standardise_v(name, value) for name, value in self.v_raw.items()}
        if self.r_oracle is not None:
            self._oracle = OracleNormalizer(self.r_oracle, parts=self.parts if self.normalization == "per_part" else None,
                                            robust=self.robust, sign=self.r_sign)
        self._prepared = True

    def _standardise_v(self, name: str, value: float) -> float:
        loc, scale = self._v_stats.get(self._group(name), (0.0, 0.0))
        if not math.isfinite(value) or scale <= 0:
            return 0.0
        return self.v_sign * (value - loc) / scale

    def _running_for(self, name: str) -> RunningNormalizer:
        group = self._group(name)
        if group not in self._running:
            self._running[group] = RunningNormalizer(warmup=self.warmup, robust=self.robust, sign=self.r_sign)
        return self._running[group]

    def alpha(self, name: str, weight: torch.Tensor, stats: LayerStatistics, split=None) -> tuple[float, dict[str, Any]]:
        v_raw, v = NAN, 0.0
        if self.v_fn is not None:
            if not self._prepared:
                raise RuntimeError("FadePolicy.prepare(weights, context) must run before alpha(): V_int is "
                                   "normalised over all layers")
            if name in self.v_raw:
                v_raw, v = self.v_raw[name], self.v_norm[name]
            else:  # a layer prepare did not see: score it against its part's population
                with torch.no_grad():
                    v_raw = float(self.v_fn(weight, self.grid))
                v = self._standardise_v(name, v_raw)
        r_raw, r = NAN, 0.0
        if self.r_fn is not None:
            split = split if split is not None else split_of(stats)
            if self.r_needs_split and split is None:
                raise ValueError(
                    f"R_calib {self.r_name!r} needs split statistics (two disjoint halves of the calibration "
                    "utterances): pass SplitStatistics(a, b).pooled() as the layer's statistics")
            with torch.no_grad():
                r_raw = float(self.r_fn(weight, stats, self.qep_damp, split=split))
            if self.mapping == "direct":
                alpha = (neutral_alpha(self.alpha_min, self.alpha_max) if not math.isfinite(r_raw)
                         else min(max(r_raw, self.alpha_min), self.alpha_max))
                return alpha, {"v_int_raw": v_raw, "v_int": v, "r_calib_raw": r_raw, "r_calib": r_raw, "s": r_raw,
                               "alpha": alpha}
            if self._oracle is not None:
                r = self._oracle.normalize(name, r_raw)
            else:
                r = self._running_for(name).normalize(r_raw)
        s = self.v_weight * v + self.r_weight * r
        alpha = alpha_from_score(s, self.alpha_min, self.alpha_max)
        return alpha, {"v_int_raw": v_raw, "v_int": v, "r_calib_raw": r_raw, "r_calib": r, "s": s, "alpha": alpha}
