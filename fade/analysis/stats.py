"""Statistics for comparing quantization methods: across calibration seeds and across utterances.

Two sources of variation matter and are tested separately:
- the calibration draw (seeds): paired t-test and Wilcoxon signed-rank test on per-seed WERs,
  pairing runs that share a seed (the same 128 calibration utterances), and the Pitman–Morgan test
  of equal spread over those paired seeds (`paired_spread_test`);
- the test utterances: a paired bootstrap that resamples utterances (the same resample for both
  methods and all seeds) and recomputes the corpus-level WER difference.

A third, floating-point detail, is estimated where the same seeds ran on two platforms
(`replicate_split`): the two runs of a seed saw the same calibration utterances, so what differs
between them is rounding alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PairedSeedTest:
    seeds: int
    mean_difference: float  # mean over seeds of WER(a) − WER(b)
    t_pvalue: float | None  # paired t-test (two-sided); None with fewer than 2 seeds or no variance
    wilcoxon_pvalue: float | None  # Wilcoxon signed-rank (two-sided, exact for small n); None if undefined


def paired_seed_test(wer_a: np.ndarray, wer_b: np.ndarray) -> PairedSeedTest:
    from scipy import stats

    a, b = np.asarray(wer_a, dtype=float), np.asarray(wer_b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired tests need two equal-length vectors, got {a.shape} and {b.shape}")
    diff = a - b
    t_p = w_p = None
    if len(diff) >= 2 and np.ptp(diff) > 0:
        t_p = float(stats.ttest_rel(a, b).pvalue)
    if len(diff) >= 2 and np.any(diff != 0):
        w_p = float(stats.wilcoxon(a, b, zero_method="wilcox").pvalue)
    return PairedSeedTest(len(diff), float(diff.mean()) if len(diff) else float("nan"), t_p, w_p)


@dataclass(frozen=True)
class PairedSpreadTest:
    seeds: int
    std_ratio: float | None  # std over seeds of a / that of b; None when b does not vary
    pvalue: float | None  # Pitman–Morgan test of equal variances (two-sided); None with fewer than 3 seeds


def paired_spread_test(wer_a: np.ndarray, wer_b: np.ndarray) -> PairedSpreadTest:
    """Does method a vary less over calibration seeds than method b? (FADE's second claim.)

    The two WER vectors are paired by seed, so an F-test, which assumes independent samples, does
    not apply. Pitman–Morgan: var(a) = var(b) exactly when a + b and a − b are uncorrelated, since
    cov(a + b, a − b) = var(a) − var(b); the sample correlation r of the two is tested with
    t = r·√(n − 2)/√(1 − r²) on n − 2 degrees of freedom. With five seeds it only sees large
    ratios (about 3× in std), so a p-value above 0.05 says "not shown", not "equal".
    """
    from scipy import stats

    a, b = np.asarray(wer_a, dtype=float), np.asarray(wer_b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired tests need two equal-length vectors, got {a.shape} and {b.shape}")
    n = len(a)
    std_a = float(a.std(ddof=1)) if n >= 2 else float("nan")
    std_b = float(b.std(ddof=1)) if n >= 2 else float("nan")
    ratio = std_a / std_b if n >= 2 and std_b > 0 else None
    if n < 3:
        return PairedSpreadTest(n, ratio, None)
    total, diff = a + b, a - b
    if any(np.ptp(x) <= 1e-12 * max(1.0, float(np.abs(x).max())) for x in (total, diff)):
        return PairedSpreadTest(n, ratio, 1.0)  # a − b or a + b constant: the variances are equal exactly
    r = float(np.corrcoef(total, diff)[0, 1])
    if abs(r) >= 1:
        return PairedSpreadTest(n, ratio, 0.0)
    t = r * np.sqrt(n - 2) / np.sqrt(1 - r * r)
    return PairedSpreadTest(n, ratio, float(2 * stats.t.sf(abs(t), n - 2)))


@dataclass(frozen=True)
class BootstrapInterval:
    difference: float  # corpus WER(a) − WER(b), averaged over the paired seeds
    low: float
    high: float
    resamples: int
    confidence: float


def paired_bootstrap(errors_a: np.ndarray, errors_b: np.ndarray, words: np.ndarray, *, resamples: int = 10_000,
                     confidence: float = 0.95, seed: int = 0) -> BootstrapInterval:
    """Percentile interval of WER(a) − WER(b) under resampling of utterances.

    ``errors_a`` and ``errors_b`` are [seeds, utterances] word-error counts (S+D+I) of two methods
    on the same utterances and paired seeds; ``words`` the reference word count per utterance.
    One resample draws utterances with replacement and applies the draw to every seed of both
    methods, so the interval reflects which sentences happened to be in the test set.
    """
    ea, eb = np.atleast_2d(np.asarray(errors_a, dtype=float)), np.atleast_2d(np.asarray(errors_b, dtype=float))
    w = np.asarray(words, dtype=float)
    if ea.shape != eb.shape or ea.shape[1] != w.shape[0]:
        raise ValueError(f"shapes do not pair: {ea.shape}, {eb.shape}, words {w.shape}")
    if w.sum() <= 0:
        raise ValueError("the utterances hold no reference words; WER is undefined")
    per_utterance = (ea - eb).mean(axis=0)  # the seed-averaged error difference of each utterance
    point = float(per_utterance.sum() / w.sum())
    rng = np.random.default_rng(seed)
    n = len(w)
    stats = np.empty(resamples)
    chunk = max(1, 2_000_000 // max(n, 1))  # bound the index matrix's memory
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        index = rng.integers(0, n, size=(stop - start, n))
        stats[start:stop] = per_utterance[index].sum(axis=1) / np.maximum(w[index].sum(axis=1), 1e-12)
    tail = (1 - confidence) / 2
    low, high = np.quantile(stats, [tail, 1 - tail])
    return BootstrapInterval(point, float(low), float(high), resamples, confidence)


@dataclass(frozen=True)
class ReplicateSplit:
    seeds: int
    numerical_std: float  # per-run std from floating-point detail alone, sqrt(mean(d²)/2)
    run_std: float  # per-run std over seeds, the two platforms' sample variances averaged
    draw_share: float  # share of the run-to-run variance the calibration draw explains, in [0, 1]
    correlation: float | None  # Pearson over seeds between the platforms; None without variation


def replicate_split(wer_a: np.ndarray, wer_b: np.ndarray) -> ReplicateSplit:
    """Split the run-to-run spread of one method into the calibration draw and floating-point detail.

    ``wer_a[i]`` and ``wer_b[i]`` are the WERs of calibration seed i on two platforms. Model:
    WER(seed, platform) = μ + s_seed + e_seed,platform with e independent of mean 0 and std σ_num
    (a constant offset between platforms counts as numerical detail too). Then each seed's
    difference d = e_a − e_b has E[d²] = 2σ_num², and the variance over seeds on one platform is
    σ_draw² + σ_num². With few seeds the estimate of σ_draw² can come out negative; the share is
    clipped to [0, 1].
    """
    a, b = np.asarray(wer_a, dtype=float), np.asarray(wer_b, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
        raise ValueError(f"a replicate split needs two equal-length vectors of 2 seeds or more, got {a.shape} and {b.shape}")
    numerical_var = float(np.mean((a - b) ** 2) / 2)
    run_var = float((a.var(ddof=1) + b.var(ddof=1)) / 2)
    share = 0.0 if run_var == 0 else float(np.clip(1 - numerical_var / run_var, 0.0, 1.0))
    correlation = float(np.corrcoef(a, b)[0, 1]) if np.ptp(a) > 0 and np.ptp(b) > 0 else None
    return ReplicateSplit(len(a), float(np.sqrt(numerical_var)), float(np.sqrt(run_var)), share, correlation)
