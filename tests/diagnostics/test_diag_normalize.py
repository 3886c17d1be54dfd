"""Cross-layer normalisation: batch z-scores, the running normaliser, the oracle."""

import math

import numpy as np
import pytest

from fade.diagnostics.normalize import OracleNormalizer, RunningNormalizer, location_scale, zscore

RNG = np.random.default_rng(0)
VALUES = {f"l{i}": float(v) for i, v in enumerate(RNG.standard_normal(11) * 3 + 2)}
PARTS = {name: ("encoder" if i < 6 else "decoder") for i, name in enumerate(VALUES)}


def test_global_zscore_matches_numpy_and_sign_flips():
    arr = np.array(list(VALUES.values()))
    z = zscore(VALUES)
    np.testing.assert_allclose(list(z.values()), (arr - arr.mean()) / arr.std(), rtol=1e-12)
    flipped = zscore(VALUES, sign=-1)
    np.testing.assert_allclose(list(flipped.values()), -(arr - arr.mean()) / arr.std(), rtol=1e-12)


def test_per_part_zscore_matches_numpy_within_each_part():
    z = zscore(VALUES, parts=PARTS)
    for part in ("encoder", "decoder"):
        names = [n for n in VALUES if PARTS[n] == part]
        arr = np.array([VALUES[n] for n in names])
        np.testing.assert_allclose([z[n] for n in names], (arr - arr.mean()) / arr.std(), rtol=1e-12)


def test_robust_zscore_uses_median_and_scaled_mad():
    values = dict(VALUES, outlier=1e6)
    arr = np.array(list(values.values()))
    med = np.median(arr)
    mad = 1.4826 * np.median(np.abs(arr - med))
    z = zscore(values, robust=True)
    np.testing.assert_allclose(list(z.values()), (arr - med) / mad, rtol=1e-12)
    # The outlier does not crush the spread of the other layers' scores, as it does in a plain z-score.
    plain = zscore(values)
    assert np.std([z[n] for n in VALUES]) > 0.5 > 100 * np.std([plain[n] for n in VALUES])


def test_non_finite_values_score_zero_and_do_not_enter_the_population():
    values = dict(VALUES, broken=float("nan"), inf=float("inf"))
    z = zscore(values)
    assert z["broken"] == 0.0 and z["inf"] == 0.0
    assert z["l3"] == pytest.approx(zscore(VALUES)["l3"])
    assert zscore({"a": 1.0}) == {"a": 0.0}  # population of one: no scale
    assert zscore({"a": 2.0, "b": 2.0}) == {"a": 0.0, "b": 0.0}  # zero scale
    assert location_scale([1.0]) == (0.0, 0.0)


def test_running_normalizer_tracks_numpy_mean_and_std_of_values_seen():
    stream = list(RNG.standard_normal(25) * 5 - 1)
    norm = RunningNormalizer(warmup=0)
    for i, v in enumerate(stream):
        before = np.array(stream[:i])
        z = norm.normalize(v)
        if i >= 2:
            assert z == pytest.approx((v - before.mean()) / before.std(), rel=1e-10)
        else:
            assert z == 0.0  # fewer than two earlier values: no scale yet
        seen = np.array(stream[: i + 1])
        assert norm.count == i + 1
        assert norm.mean == pytest.approx(seen.mean(), rel=1e-12, abs=1e-12)
        assert norm.std == pytest.approx(seen.std(), rel=1e-10, abs=1e-12)


def test_running_normalizer_warmup_prior_sign_and_nan():
    stream = [1.0, 4.0, 2.0, 8.0, -3.0, 5.0]
    norm = RunningNormalizer(warmup=3, sign=-1)
    zs = [norm.normalize(v) for v in stream]
    assert zs[:3] == [0.0, 0.0, 0.0]
    prev = np.array(stream[:3])
    assert zs[3] == pytest.approx(-(8.0 - prev.mean()) / prev.std())
    # nan: contribution 0, not counted.
    assert norm.normalize(float("nan")) == 0.0 and norm.count == len(stream)

    prior = RunningNormalizer(warmup=2, prior_mean=1.0, prior_std=2.0)
    assert prior.normalize(5.0) == pytest.approx(2.0)
    assert prior.normalize(-1.0) == pytest.approx(-1.0)
    assert prior.normalize(3.0) == pytest.approx((3.0 - 2.0) / 3.0)  # now from the values seen: mean 2, std 3
    with pytest.raises(ValueError):
        RunningNormalizer(prior_mean=0.0)


def test_running_normalizer_include_current_and_robust():
    stream = [3.0, -1.0, 7.0, 2.0, 2.5, 40.0]
    inc = RunningNormalizer(warmup=0, include_current=True)
    for i, v in enumerate(stream):
        seen = np.array(stream[: i + 1])
        z = inc.normalize(v)
        expected = 0.0 if i == 0 else (v - seen.mean()) / seen.std()
        assert z == pytest.approx(expected, abs=1e-12)
    rob = RunningNormalizer(warmup=0, robust=True)
    for i, v in enumerate(stream):
        z = rob.normalize(v)
        if i >= 2:
            before = np.array(stream[:i])
            med = np.median(before)
            assert z == pytest.approx((v - med) / (1.4826 * np.median(np.abs(before - med))))


def test_oracle_normalizer_equals_the_batch_zscore():
    oracle = OracleNormalizer(VALUES, parts=PARTS, sign=-1)
    z = zscore(VALUES, parts=PARTS, sign=-1)
    for name in VALUES:
        assert oracle.normalize(name) == pytest.approx(z[name])
    # A fresh value is scored against its part's complete population.
    enc = np.array([VALUES[n] for n in VALUES if PARTS[n] == "encoder"])
    assert oracle.normalize("l0", 10.0) == pytest.approx(-(10.0 - enc.mean()) / enc.std())
    assert math.isfinite(oracle.normalize("unknown"))
