"""Statistics for comparing quantization methods: across calibration seeds and across utterances.

Two sources of variation matter and are tested separately:
- the calibration draw (seeds): paired t-test and Wilcoxon signed-rank test on per-seed WERs,
  pairing runs that share a seed (the same 128 calibration utterances);
- the test utterances: a paired bootstrap that resamples utterances (the same resample for both
  methods and all seeds) and recomputes the corpus-level WER difference.
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
