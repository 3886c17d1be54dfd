"""FADE diagnostics: per-layer signals that set QEP's compensation strength α_l.

* ``vulnerability`` — V_int(l) from the weights (``VULNERABILITY`` registry);
* ``reliability`` — R_calib(l) from the calibration statistics (``RELIABILITY`` registry,
  ``SplitStatistics`` for held-out scores, ``needs_split``);
* ``normalize`` — cross-layer z-scores (all at once, running, oracle);
* ``policy`` — ``FadePolicy``, the ``AlphaPolicy`` combining them.

Formulas and conventions: the module docstrings and docs/fade.md.
"""

from fade.diagnostics.normalize import OracleNormalizer, RunningNormalizer, location_scale, zscore
from fade.diagnostics.policy import (
    DEFAULT_ALPHA_MAX,
    DEFAULT_ALPHA_MIN,
    FadePolicy,
    alpha_from_score,
    neutral_alpha,
    parts_from_stages,
)
from fade.diagnostics.reliability import (
    RELIABILITY,
    SplitLayerStatistics,
    SplitStatistics,
    needs_split,
    split_of,
)
from fade.diagnostics.vulnerability import DEFAULT_OUTLIER_K, VULNERABILITY, stable_rank

__all__ = [
    "VULNERABILITY",
    "RELIABILITY",
    "DEFAULT_OUTLIER_K",
    "stable_rank",
    "SplitStatistics",
    "SplitLayerStatistics",
    "needs_split",
    "split_of",
    "zscore",
    "location_scale",
    "RunningNormalizer",
    "OracleNormalizer",
    "FadePolicy",
    "alpha_from_score",
    "neutral_alpha",
    "parts_from_stages",
    "DEFAULT_ALPHA_MIN",
    "DEFAULT_ALPHA_MAX",
]
