"""fade-aggregate: sweep tables whose numbers match the run files, and the statistics behind them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from fade.analysis.aggregate import aggregate, main
from fade.analysis.stats import paired_bootstrap, paired_seed_test, paired_spread_test, replicate_split
from fade.errors import DataError

# --- statistics against direct references -------------------------------------------------------


def test_paired_seed_test_matches_the_t_formula():
    a = np.array([0.10, 0.12, 0.11, 0.15, 0.09])
    b = np.array([0.12, 0.13, 0.14, 0.15, 0.12])
    result = paired_seed_test(a, b)
    d = a - b
    t = d.mean() / (d.std(ddof=1) / math.sqrt(len(d)))
    assert result.mean_difference == pytest.approx(d.mean())
    assert result.t_pvalue == pytest.approx(2 * stats.t.sf(abs(t), len(d) - 1))
    # Wilcoxon, exact: 4 negative differences out of 4 non-zero → p = 2 · (1/2)^4
    assert result.wilcoxon_pvalue == pytest.approx(2 * 0.5 ** 4)


def test_paired_seed_test_is_undefined_without_variation():
    result = paired_seed_test(np.array([0.1, 0.2]), np.array([0.1, 0.2]))
    assert result.mean_difference == 0 and result.t_pvalue is None and result.wilcoxon_pvalue is None


def test_paired_spread_test_matches_the_variance_ratio_form():
    # Pitman–Morgan written with the variance ratio F and the correlation of a and b:
    # t = (F − 1)·√(n − 2) / (2·√(F·(1 − r²))), an algebraically different route to the same test.
    rng = np.random.default_rng(3)
    for _ in range(5):
        shared = rng.normal(size=6)
        a = 0.08 + 0.002 * shared + 0.004 * rng.normal(size=6)
        b = 0.08 + 0.002 * shared + 0.010 * rng.normal(size=6)
        n, F, r = len(a), a.var(ddof=1) / b.var(ddof=1), np.corrcoef(a, b)[0, 1]
        t = (F - 1) * math.sqrt(n - 2) / (2 * math.sqrt(F * (1 - r * r)))
        result = paired_spread_test(a, b)
        assert result.std_ratio == pytest.approx(math.sqrt(F))
        assert result.pvalue == pytest.approx(2 * stats.t.sf(abs(t), n - 2))
    assert paired_spread_test(np.array([0.1, 0.2, 0.3]), np.array([0.2, 0.3, 0.4])).pvalue == 1.0  # same spread exactly
    assert paired_spread_test(np.array([0.1, 0.2]), np.array([0.2, 0.4])).pvalue is None  # two seeds: no test


def test_bootstrap_point_estimate_and_interval():
    rng = np.random.default_rng(0)
    words = rng.integers(5, 15, size=200)
    errors_b = rng.integers(0, 3, size=(3, 200))
    errors_a = errors_b + (rng.random((3, 200)) < 0.3)  # a makes more errors
    interval = paired_bootstrap(errors_a, errors_b, words, resamples=4000)
    direct = np.mean([(errors_a[s].sum() - errors_b[s].sum()) / words.sum() for s in range(3)])
    assert interval.difference == pytest.approx(direct)
    assert 0 < interval.low < interval.difference < interval.high
    same = paired_bootstrap(errors_b, errors_b, words, resamples=500)
    assert same.low == same.high == same.difference == 0


def test_bootstrap_rejects_unpaired_shapes():
    with pytest.raises(ValueError, match="pair"):
        paired_bootstrap(np.zeros((2, 3)), np.zeros((2, 4)), np.ones(3))


# --- tables from a real sweep -------------------------------------------------------------------


def _run_files(sweep: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sweep.rglob("metrics.json") if p.parent.name not in ("fp", "quantized")]


def test_aggregated_table_matches_the_run_files(random_sweep, tmp_path):
    result = aggregate([random_sweep], tmp_path / "tables", resamples=500)
    files = _run_files(random_sweep)
    assert result["runs"] == len(files) == 8
    rows = {(r["model"], r["method"]): r for r in result["summary"] if r["precision"] != "fp"}
    assert set(rows) == {(m, meth) for m in ("random-whisper", "random-moonshine") for meth in ("gptq", "gptq+fade")}
    for (model, method), row in rows.items():
        wers = [f["wer"] for f in files if f["model"] == model and f["method"] == method]
        assert row["n"] == len(wers) == 2 and row["seeds"] == "0 1"
        assert row["wer_mean"] == pytest.approx(np.mean(wers))
        assert row["wer_std"] == pytest.approx(np.std(wers, ddof=1))
        assert row["wer_min"] == min(wers) and row["wer_max"] == max(wers)
        assert row["delta_fp"] == pytest.approx(np.mean(wers) - files[[f["model"] for f in files].index(model)]["wer_fp"])
    comparisons = {(c["model"], c["a"], c["b"]): c for c in result["comparisons"]}
    for model in ("random-whisper", "random-moonshine"):
        c = comparisons[(model, "gptq+fade", "gptq")]
        by_seed = {(f["method"], f["calibration_seed"]): f["wer"] for f in files if f["model"] == model}
        assert c["n"] == 2
        assert c["mean_difference"] == pytest.approx(np.mean([by_seed[("gptq+fade", s)] - by_seed[("gptq", s)] for s in (0, 1)]))
        assert c["ci_low"] <= c["bootstrap_difference"] <= c["ci_high"]
    for stem in ("summary", "comparisons"):
        for ext in ("md", "csv", "tex"):
            assert (tmp_path / "tables" / f"{stem}.{ext}").stat().st_size > 0
    assert r"\begin{tabular}" in (tmp_path / "tables" / "summary.tex").read_text()


def test_cli_writes_next_to_the_sweep_and_fails_clearly(random_sweep, tmp_path, capsys):
    assert main([str(random_sweep), "--out", str(tmp_path / "cli"), "--resamples", "200"]) == 0
    assert "gptq+fade" in capsys.readouterr().out
    assert main([str(tmp_path / "nowhere")]) == 2
    assert "not a folder" in capsys.readouterr().err


# --- the global-α baseline: chosen on dev, and the oracle chosen on test ------------------------


def _fake_run(folder: Path, alpha: float, seed: int, wer: float, wer_dev: float) -> None:
    """A finished QEP run as the quantize task writes it (metrics.json + per-utterance counts)."""
    (folder / "quantized").mkdir(parents=True)
    errors = round(wer * 100)
    utterances = [{"id": f"u{i}", "words": 10, "substitutions": int(i < errors // 10), "deletions": 0, "insertions": 0}
                  for i in range(10)]
    (folder / "quantized" / "hypotheses.jsonl").write_text("".join(json.dumps(u) + "\n" for u in utterances))
    metrics = {"model": "m", "dataset": "d", "method": "gptq+qep", "quantizer": "gptq", "compensation": "qep",
               "alpha": alpha, "bits": 3, "group_size": 128, "calibration_seed": seed, "wer": wer, "wer_fp": 0.05,
               "wer_dev": wer_dev}
    (folder / "metrics.json").write_text(json.dumps(metrics))


def test_alpha_chosen_on_dev_and_oracle_alpha_are_reported_apart(tmp_path):
    # test WER favours α=1 (the oracle); dev WER favours α=0.25
    for alpha, wer, dev in ((0.25, 0.30, 0.10), (1.0, 0.20, 0.40)):
        for seed in (0, 1):
            _fake_run(tmp_path / "sweep" / f"a{alpha}_s{seed}", alpha, seed, wer + 0.01 * seed, dev)
    result = aggregate([tmp_path / "sweep"], tmp_path / "out", resamples=200)
    methods = [r["method"] for r in result["summary"]]
    assert "gptq+qep(α=0.25, chosen on dev)" in methods
    assert "gptq+qep(α=1, oracle: chosen on test)" in methods
    dev_row = next(r for r in result["summary"] if r["method"].endswith("chosen on dev)"))
    assert dev_row["wer_mean"] == pytest.approx(0.305)


def test_alpha_chosen_on_each_seeds_own_dev_split(tmp_path):
    # dev prefers α=0 on seed 0 and α=0.75 on seed 1; over the seeds α=0 wins (mean dev 0.200 vs 0.217).
    # On seed 2 the two tie on dev: the α nearer QEP's 0.5 is taken (0.75, not the smaller 0).
    dev = {(0.0, 0): 0.10, (0.75, 0): 0.20, (0.0, 1): 0.30, (0.75, 1): 0.25, (0.0, 2): 0.20, (0.75, 2): 0.20}
    test = {0.0: 0.30, 0.75: 0.20}
    for (alpha, seed), wer_dev in dev.items():
        _fake_run(tmp_path / "s" / f"a{alpha}_s{seed}", alpha, seed, test[alpha] + 0.01 * seed, wer_dev)
    for seed in (0, 1, 2):
        _fake_fade_run(tmp_path / "s" / f"fade{seed}", seed, 0.22, None)
    result = aggregate([tmp_path / "s"], tmp_path / "out", resamples=100)
    rows = {r["method"]: r for r in result["summary"]}
    assert "gptq+qep(α=0, chosen on dev)" in rows
    per_seed = rows["gptq+qep(α chosen on dev per seed: 0 0.75 0.75)"]
    wers = [test[0.0] + 0.00, test[0.75] + 0.01, test[0.75] + 0.02]
    assert per_seed["wer_mean"] == pytest.approx(np.mean(wers))
    assert per_seed["wer_std"] == pytest.approx(np.std(wers, ddof=1))
    assert per_seed["wer_dev_mean"] == pytest.approx(np.mean([0.10, 0.25, 0.20]))
    fade_vs = {c["b"]: c for c in result["comparisons"] if c["a"] == "gptq+fade"}
    assert fade_vs[per_seed["method"]]["mean_difference"] == pytest.approx(0.22 - np.mean(wers))
    # FADE's WER is the same on every seed: its spread is 0 against the tuned baseline's
    assert fade_vs[per_seed["method"]]["std_ratio"] == pytest.approx(0.0)
    assert fade_vs[per_seed["method"]]["spread_pvalue"] is not None


def test_rtn_has_no_spread_to_compare(tmp_path):
    """RTN uses no data: its one run stands for every seed, so a spread test against it would test nothing."""
    def retag(folder, **changed):
        metrics = json.loads((folder / "metrics.json").read_text())
        metrics.update(alpha=None, **changed)
        (folder / "metrics.json").write_text(json.dumps(metrics))

    _fake_run(tmp_path / "s" / "rtn", 0.5, 0, 0.40, 0.40)
    retag(tmp_path / "s" / "rtn", method="rtn", quantizer="rtn", compensation="none")
    for seed, wer in ((0, 0.20), (1, 0.30), (2, 0.25)):
        _fake_run(tmp_path / "s" / f"g{seed}", 0.5, seed, wer, 0.2)
        retag(tmp_path / "s" / f"g{seed}", method="gptq", compensation="none")
    result = aggregate([tmp_path / "s"], tmp_path / "out", resamples=100)
    (row,) = [c for c in result["comparisons"] if (c["a"], c["b"]) == ("gptq", "rtn")]
    assert row["n"] == 3 and row["std_b"] == 0.0
    assert row["std_ratio"] is None and row["spread_pvalue"] is None


def test_two_runs_of_one_cell_are_an_error(tmp_path):
    _fake_run(tmp_path / "s" / "a", 0.5, 0, 0.2, 0.2)
    _fake_run(tmp_path / "s" / "b", 0.5, 0, 0.3, 0.2)
    with pytest.raises(DataError, match="two runs"):
        aggregate([tmp_path / "s"], tmp_path / "out")


def test_each_pair_is_compared_once(tmp_path):
    for seed in (0, 1):
        _fake_run(tmp_path / "s" / f"q{seed}", 0.5, seed, 0.2 + 0.01 * seed, 0.2)
        folder = tmp_path / "s" / f"g{seed}"
        _fake_run(folder, 0.5, seed, 0.3, 0.3)
        metrics = json.loads((folder / "metrics.json").read_text())
        metrics.update(method="gptq", compensation="none", alpha=None)
        (folder / "metrics.json").write_text(json.dumps(metrics))
    result = aggregate([tmp_path / "s"], tmp_path / "out", resamples=100)
    assert [(c["a"], c["b"]) for c in result["comparisons"]] == [("gptq+qep(α=0.5)", "gptq")]


def _fake_fade_run(folder: Path, seed: int, wer: float, wer_dev: float | None, **changed):
    """A FADE run with the given compensation keys changed from conf/compensation/fade.yaml."""
    _fake_run(folder, 0.5, seed, wer, wer_dev)
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics.update(method="gptq+fade", compensation="fade", alpha=None,
                   config={"compensation": {"name": "fade", "v_int": "rtn_error", "r_calib": "predicted_gain", **changed}})
    (folder / "metrics.json").write_text(json.dumps(metrics))


def test_fade_signal_chosen_on_dev_and_oracle_signal_are_reported_apart(tmp_path):
    sweep = tmp_path / "s"
    for seed in (0, 1):
        _fake_run(sweep / f"qep{seed}", 0.5, seed, 0.25, 0.25)
        _fake_fade_run(sweep / f"default{seed}", seed, 0.24, None)
        # dev favours the kurtosis-only variant, test favours the held-out-gain-only one
        _fake_fade_run(sweep / f"kurt{seed}", seed, 0.30 + 0.01 * seed, 0.10, r_calib=None, v_int="kurtosis")
        _fake_fade_run(sweep / f"held{seed}", seed, 0.20, 0.40, v_int=None, r_calib="heldout_gain")
    result = aggregate([sweep], tmp_path / "out", resamples=100)
    rows = {r["method"]: r for r in result["summary"]}
    dev_row = rows["gptq+fade(v_int=kurtosis,r_calib=None, chosen on dev)"]
    assert dev_row["wer_mean"] == pytest.approx(0.305)
    assert rows["gptq+fade(v_int=None,r_calib=heldout_gain, oracle: chosen on test)"]["wer_mean"] == pytest.approx(0.20)
    pairs = {(c["a"], c["b"]) for c in result["comparisons"]}
    # variants meet FADE defaults and QEP(α=0.5), not each other; the defaults meet every baseline
    assert ("gptq+fade(v_int=kurtosis,r_calib=None)", "gptq+fade") in pairs
    assert ("gptq+fade(v_int=kurtosis,r_calib=None)", "gptq+qep(α=0.5)") in pairs
    assert ("gptq+fade", "gptq+qep(α=0.5)") in pairs
    assert not any(a.startswith("gptq+fade(") and b.startswith("gptq+fade(") and "chosen" not in a for a, b in pairs)
    assert ("gptq+fade(v_int=kurtosis,r_calib=None, chosen on dev)", "gptq+qep(α=0.5)") in pairs
    assert len(pairs) == len(result["comparisons"])


def test_alpha_is_chosen_on_the_seeds_every_alpha_ran(tmp_path):
    # α=0.5 ran seeds 0-2 (its seeds 1 and 2 drew an easy dev split); α=0.75 only seed 0, where it is better.
    for seed, dev in ((0, 0.30), (1, 0.05), (2, 0.05)):
        _fake_run(tmp_path / "s" / f"half{seed}", 0.5, seed, 0.20, dev)
    _fake_run(tmp_path / "s" / "threequarter0", 0.75, 0, 0.25, 0.20)
    result = aggregate([tmp_path / "s"], tmp_path / "out", resamples=100)
    methods = [r["method"] for r in result["summary"]]
    assert "gptq+qep(α=0.75, chosen on dev)" in methods  # chosen on seed 0, the only seed both ran
    assert "gptq+qep(α=0.5, oracle: chosen on test, seed 0)" in methods


def test_runs_from_two_platforms_are_flagged(tmp_path, caplog):
    for seed, cpu in ((0, "AVX512"), (1, "AVX2")):
        folder = tmp_path / "s" / f"q{seed}"
        _fake_run(folder, 0.5, seed, 0.2, 0.2)
        metrics = json.loads((folder / "metrics.json").read_text())
        metrics["platform"] = {"torch": "2.13.0", "cpu_capability": cpu}
        (folder / "metrics.json").write_text(json.dumps(metrics))
    with caplog.at_level("WARNING"):
        result = aggregate([tmp_path / "s"], tmp_path / "out", resamples=100)
    assert sorted(map(len, result["platforms"].values())) == [1, 1]
    assert "made on 2 platforms" in caplog.text


def test_the_random_sweep_records_one_platform(random_sweep):
    from fade.analysis.aggregate import platforms
    from fade.analysis.runs import find_runs

    made_on = platforms(find_runs(random_sweep))
    assert len(made_on) == 1 and "threads, torch" in next(iter(made_on))


def test_loops_are_counted_on_test_and_dev(tmp_path):
    for seed, (test_capped, dev_capped) in enumerate(((1, 2), (0, 1))):
        folder = tmp_path / "s" / f"q{seed}"
        _fake_run(folder, 0.5, seed, 0.2, 0.2)
        metrics = json.loads((folder / "metrics.json").read_text())
        metrics["capped_utterances"] = test_capped
        (folder / "metrics.json").write_text(json.dumps(metrics))
        (folder / "dev" / "quantized").mkdir(parents=True)  # a run written before the summary held the dev count
        (folder / "dev" / "quantized" / "metrics.json").write_text(json.dumps({"capped_utterances": dev_capped}))
    row = next(r for r in aggregate([tmp_path / "s"], tmp_path / "out", resamples=100)["summary"] if r["precision"] != "fp")
    assert row["loops"] == "1/3"
    assert "capped test/dev" in (tmp_path / "out" / "summary.md").read_text()


def _set_platform(folder: Path, cpu: str) -> None:
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics["platform"] = {"torch": "2.13.0", "cpu": cpu}
    (folder / "metrics.json").write_text(json.dumps(metrics))


def test_each_platform_gets_its_own_rows_and_is_compared_within_itself(tmp_path):
    # seeds 0-1 of QEP and GPTQ on Intel; seed 0 of GPTQ again on AMD, where it rounds differently
    for seed in (0, 1):
        _fake_run(tmp_path / "s" / f"q{seed}", 0.5, seed, 0.2, 0.2)
        _set_platform(tmp_path / "s" / f"q{seed}", "Intel")
    for name, seed, cpu, wer in (("g0", 0, "Intel", 0.3), ("g1", 1, "Intel", 0.4), ("amd_g0", 0, "AMD", 0.5)):
        folder = tmp_path / "s" / name
        _fake_run(folder, 0.5, seed, wer, 0.3)
        metrics = json.loads((folder / "metrics.json").read_text())
        metrics.update(method="gptq", compensation="none", alpha=None)
        (folder / "metrics.json").write_text(json.dumps(metrics))
        _set_platform(folder, cpu)
    result = aggregate([tmp_path / "s"], tmp_path / "out", resamples=100)
    rows = {(r["platform"].split(",")[0], r["method"]): r for r in result["summary"]}
    assert rows[("Intel", "gptq")]["wer_mean"] == pytest.approx(0.35) and rows[("Intel", "gptq")]["n"] == 2
    assert rows[("AMD", "gptq")]["wer_mean"] == pytest.approx(0.5) and rows[("AMD", "gptq")]["n"] == 1
    assert ("AMD", "full precision") in rows and ("Intel", "full precision") in rows
    (comparison,) = result["comparisons"]  # QEP against GPTQ on Intel; AMD has no QEP run to pair with
    assert (comparison["platform"].split(",")[0], comparison["seeds"]) == ("Intel", "0 1")
    assert comparison["mean_difference"] == pytest.approx(0.2 - 0.35)
    assert (tmp_path / "out" / "summary.md").read_text().splitlines()[0].endswith("| platform |")


def test_replicate_split_against_its_definition():
    a, b = np.array([0.078, 0.084, 0.080, 0.075, 0.081]), np.array([0.079, 0.076, 0.077, 0.083, 0.082])
    split = replicate_split(a, b)
    numerical_var = sum((x - y) ** 2 for x, y in zip(a, b)) / len(a) / 2
    run_var = (sum((x - a.mean()) ** 2 for x in a) / 4 + sum((y - b.mean()) ** 2 for y in b) / 4) / 2
    assert split.numerical_std == pytest.approx(math.sqrt(numerical_var))
    assert split.run_std == pytest.approx(math.sqrt(run_var))
    assert split.draw_share == pytest.approx(max(0.0, 1 - numerical_var / run_var))
    assert split.correlation == pytest.approx(stats.pearsonr(a, b)[0])
    # the same WERs on both platforms: all of the spread is the draw
    same = replicate_split(a, a.copy())
    assert (same.numerical_std, same.draw_share, same.correlation) == (0.0, 1.0, pytest.approx(1.0))
    with pytest.raises(ValueError, match="2 seeds"):
        replicate_split(a[:1], b[:1])


def test_a_method_run_on_two_platforms_gets_a_replicate_row(tmp_path):
    intel, amd = {0: 0.20, 1: 0.30, 2: 0.25}, {0: 0.22, 1: 0.27, 2: 0.25}
    for cpu, wers in (("Intel", intel), ("AMD", amd)):
        for seed, wer in wers.items():
            _fake_run(tmp_path / "s" / f"{cpu}{seed}", 0.5, seed, wer, 0.2)
            _set_platform(tmp_path / "s" / f"{cpu}{seed}", cpu)
    _fake_run(tmp_path / "s" / "amd_only", 1.0, 0, 0.4, 0.4)  # one platform only: no row
    _set_platform(tmp_path / "s" / "amd_only", "AMD")
    result = aggregate([tmp_path / "s"], tmp_path / "out", resamples=100)
    (row,) = result["replicates"]
    assert row["method"] == "gptq+qep(α=0.5)" and row["seeds"] == "0 1 2"
    expected = replicate_split(np.array([amd[s] for s in range(3)]), np.array([intel[s] for s in range(3)]))
    assert (row["numerical_std"], row["run_std"], row["draw_share"]) == pytest.approx(
        (expected.numerical_std, expected.run_std, expected.draw_share))
    assert "std from rounding" in (tmp_path / "out" / "replicates.md").read_text()


def test_a_comparison_on_two_platforms_is_pooled_within_each(tmp_path):
    # QEP and GPTQ on Intel seeds 0-2 and on AMD seeds 0-1; AMD seed 2 has GPTQ only (unpaired: left out)
    qep = {"Intel": {0: 0.20, 1: 0.30, 2: 0.25}, "AMD": {0: 0.30, 1: 0.20}}
    gptq = {"Intel": {0: 0.30, 1: 0.30, 2: 0.40}, "AMD": {0: 0.40, 1: 0.40, 2: 0.10}}
    for cpu in ("Intel", "AMD"):
        for method, wers in (("qep", qep[cpu]), ("gptq", gptq[cpu])):
            for seed, wer in wers.items():
                folder = tmp_path / "s" / f"{cpu}_{method}{seed}"
                _fake_run(folder, 0.5, seed, wer, 0.2)
                _set_platform(folder, cpu)
                if method == "gptq":
                    metrics = json.loads((folder / "metrics.json").read_text())
                    metrics.update(method="gptq", compensation="none", alpha=None)
                    (folder / "metrics.json").write_text(json.dumps(metrics))
    result = aggregate([tmp_path / "s"], tmp_path / "out", resamples=200)
    (pooled,) = [c for c in result["comparisons"] if c["platform"].startswith("pooled")]
    assert pooled["platform"] == "pooled over 2 platforms" and pooled["seeds"] == "0 1 | 0 1 2"  # AMD first
    a = np.array([qep["AMD"][0], qep["AMD"][1], qep["Intel"][0], qep["Intel"][1], qep["Intel"][2]])
    b = np.array([gptq["AMD"][0], gptq["AMD"][1], gptq["Intel"][0], gptq["Intel"][1], gptq["Intel"][2]])
    assert pooled["n"] == 5 and pooled["a_better_on"] == int((a < b).sum())
    assert pooled["mean_difference"] == pytest.approx((a - b).mean())
    assert pooled["t_pvalue"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert pooled["std_a"] == pytest.approx(a.std(ddof=1))
    # the fake runs' utterance errors are round(wer * 100) // 10 substitutions of 100 words
    errors = lambda w: (round(w * 100) // 10) / 100
    assert pooled["bootstrap_difference"] == pytest.approx(np.mean([errors(x) - errors(y) for x, y in zip(a, b)]))
    per_platform = [c for c in result["comparisons"] if not c["platform"].startswith("pooled")]
    assert sorted(c["n"] for c in per_platform) == [2, 3]
    assert "pooled over 2 platforms" in (tmp_path / "out" / "comparisons.md").read_text()


def test_platform_labels_and_folder_tags():
    from fade.process import platform_label, platform_tag

    record = {"cpu": "Intel(R) Xeon(R) CPU E5-2690 v4 @ 2.60GHz", "cpu_capability": "AVX2", "torch_threads": 4,
              "torch": "2.13.0+cpu"}
    assert platform_label(record) == "Intel Xeon E5-2690 v4, AVX2, 4 threads, torch 2.13.0+cpu"
    assert platform_label(None) == "unknown"
    tag = platform_tag("cpu", 3)
    assert tag.endswith("-3t") and tag == tag.lower() and "/" not in tag and " " not in tag
