r"""Normalising diagnostic signals across layers, so V_int and R_calib are comparable and
the mapping to α sees a unit-free score.

Standard score of a value v within a reference population P (finite values only):

    plain:   z = sign · (v − mean(P)) / std(P)                   (population std, ddof = 0)
    robust:  z = sign · (v − median(P)) / (1.4826 · MAD(P)),     MAD(P) = median(|P − median(P)|)

(1.4826 makes the robust scale equal the std for Gaussian data.) ``sign`` (+1 / −1) flips a
signal's direction without touching its definition. A population with fewer than
``MIN_POPULATION`` (2) finite values, or with zero scale, gives z = 0; a non-finite v (an
undefined diagnostic) gives z = 0 and never enters a population.

Scopes (``normalization`` in ``FadePolicy``): ``"global"`` — one population over all layers;
``"per_part"`` — one per part (encoder / projector / decoder, from ``parts: name → part``),
because the decoder's inputs (text tokens, few per utterance) and the encoder's (audio
frames) give statistics of different scale and token count.

Timing in the sequential loop (what is known when):

* V_int depends only on the weights, which ``AlphaPolicy.prepare`` receives for *all*
  layers before calibration: :func:`zscore` normalises it over the full population at once.
* R_calib depends on statistics that exist only when the loop reaches the layer, and the
  layer's α must be chosen then. :class:`RunningNormalizer` scores each new value against
  the layers seen *before* it (Welford running mean/variance; for ``robust`` the stored
  values — a few hundred floats). The current value is added *after* it is scored
  (``include_current=True`` scores it against a population containing itself instead).
  For the first ``warmup`` finite values (default 3) the reference population is too small
  to trust: the contribution is 0 (neutral α from R_calib) unless a prior is given
  (``prior_mean``, ``prior_std``: then z = sign·(v − prior_mean)/prior_std during warmup,
  e.g. from a previous run of the same model). Choice: warmup-with-zero by default, since a
  data-free prior for R_calib's scale does not exist (it depends on model, bits and
  calibration set) and the first layers see very little incoming error anyway (X̂ ≈ X, so α
  barely matters there).
* :class:`OracleNormalizer` (ablation only) z-scores R_calib over *all* layers at once. That
  needs every layer's R_calib before the first α is chosen, i.e. a first calibration pass
  that recorded them (``r_calib_raw`` in the records). It is approximate even then: R_calib
  of a layer depends on X̂, which depends on the α chosen for earlier layers in that pass.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

__all__ = [
    "MAD_TO_STD",
    "MIN_POPULATION",
    "OracleNormalizer",
    "RunningNormalizer",
    "location_scale",
    "zscore",
]

MAD_TO_STD = 1.4826
MIN_POPULATION = 2
_GLOBAL = "all"


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    mid = n // 2
    return ordered[mid] if n % 2 else 0.5 * (ordered[mid - 1] + ordered[mid])


def location_scale(values: Iterable[float], robust: bool = False) -> tuple[float, float]:
    """(mean, std) or (median, 1.4826·MAD) of the finite values; (0, 0) if fewer than 2."""
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    if len(finite) < MIN_POPULATION:
        return 0.0, 0.0
    if robust:
        med = _median(finite)
        return med, MAD_TO_STD * _median([abs(v - med) for v in finite])
    mean = sum(finite) / len(finite)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in finite) / len(finite))


def _standardise(value: float | None, location: float, scale: float, sign: float) -> float:
    if value is None or not math.isfinite(value) or scale <= 0 or not math.isfinite(scale):
        return 0.0
    return sign * (value - location) / scale


def zscore(values: Mapping[str, float], *, parts: Mapping[str, str] | None = None, robust: bool = False,
           sign: float = 1.0) -> dict[str, float]:
    """Standard scores of ``values`` (name → raw), over all names or within each part.

    Names missing from ``parts`` form their own population ("all" of the unassigned).
    """
    return _scored(values, parts, robust, sign)[0]


def _scored(values: Mapping[str, float], parts: Mapping[str, str] | None, robust: bool, sign: float):
    groups: dict[str, list[str]] = {}
    for name in values:
        groups.setdefault(parts.get(name, _GLOBAL) if parts is not None else _GLOBAL, []).append(name)
    stats = {g: location_scale((values[n] for n in names), robust) for g, names in groups.items()}
    out = {}
    for g, names in groups.items():
        loc, scale = stats[g]
        for n in names:
            out[n] = _standardise(values[n], loc, scale, sign)
    return out, stats


class OracleNormalizer:
    """Static z-scores from a complete set of values (ablation: needs a first pass, see module doc).

    ``normalize(name, value=None)`` returns the z-score of the stored value of ``name`` (or of
    ``value`` against the population of ``name``'s part when given).
    """

    def __init__(self, values: Mapping[str, float], *, parts: Mapping[str, str] | None = None,
                 robust: bool = False, sign: float = 1.0):
        self.values = dict(values)
        self.parts = dict(parts) if parts is not None else None
        self.sign = sign
        self.scores, self.stats = _scored(self.values, self.parts, robust, sign)

    def group(self, name: str) -> str:
        return self.parts.get(name, _GLOBAL) if self.parts is not None else _GLOBAL

    def normalize(self, name: str, value: float | None = None) -> float:
        if value is None:
            return self.scores.get(name, 0.0)
        loc, scale = self.stats.get(self.group(name), (0.0, 0.0))
        return _standardise(value, loc, scale, self.sign)


class RunningNormalizer:
    """Scores a stream of values, each against the values seen before it (see module doc).

    ``normalize(v)`` returns the score of v and then adds v to the population (non-finite v:
    returns 0, not added). ``mean``/``std`` are the Welford running mean and population std
    of the values added so far; ``count`` how many.
    """

    def __init__(self, *, warmup: int = 3, robust: bool = False, sign: float = 1.0,
                 prior_mean: float | None = None, prior_std: float | None = None, include_current: bool = False):
        if warmup < 0:
            raise ValueError(f"warmup={warmup} must be >= 0")
        if (prior_mean is None) != (prior_std is None):
            raise ValueError("give both prior_mean and prior_std, or neither")
        if prior_std is not None and not prior_std > 0:
            raise ValueError(f"prior_std={prior_std} must be > 0")
        self.warmup = max(int(warmup), 0)
        self.robust = robust
        self.sign = sign
        self.prior_mean = prior_mean
        self.prior_std = prior_std
        self.include_current = include_current
        self.count = 0
        self._mean = 0.0
        self._m2 = 0.0
        self._values: list[float] = []

    @property
    def mean(self) -> float:
        return self._mean

    @property
    def std(self) -> float:
        return math.sqrt(self._m2 / self.count) if self.count else 0.0

    def add(self, value: float) -> None:
        """Welford update with one finite value."""
        self.count += 1
        d = value - self._mean
        self._mean += d / self.count
        self._m2 += d * (value - self._mean)
        self._values.append(value)

    def location_scale(self) -> tuple[float, float]:
        """The current reference population's (location, scale)."""
        if self.robust:
            return location_scale(self._values, robust=True)
        if self.count < MIN_POPULATION:
            return 0.0, 0.0
        return self._mean, self.std

    def normalize(self, value: float | None) -> float:
        if value is None or not math.isfinite(value):
            return 0.0
        if self.include_current:
            self.add(value)
        seen = self.count - (1 if self.include_current else 0)  # values before this one
        if seen < self.warmup:
            z = 0.0 if self.prior_mean is None else self.sign * (value - self.prior_mean) / self.prior_std
        else:
            z = _standardise(value, *self.location_scale(), self.sign)
        if not self.include_current:
            self.add(value)
        return z
