"""eval_vs_peers.py's summary of repeated runs: medians per timing, the first repeat's transcripts."""

import statistics

import pytest
from conftest import import_bench


@pytest.fixture(scope="module")
def bench():
    return import_bench("eval_vs_peers")


def _report(wall, cpu, rss, hypotheses):
    return {"method": "fade", "wall_s": wall, "cpu_s": cpu, "peak_rss_mib": rss, "load_s": 1.0,
            "hypotheses": hypotheses, "ids": ["a", "b"], "context": {"repeat": 0}}


def test_timings_are_medians_and_transcripts_the_first_repeats(bench):
    walls, cpus, rsss = [40.0, 36.5, 51.2], [72.3, 66.0, 90.1], [1194.0, 1201.5, 1188.0]
    reports = {"fade": [_report(w, c, r, ["x", "y"]) for w, c, r in zip(walls, cpus, rsss)], "faster-whisper-int8": []}
    rows = bench.summarize_repeats(reports)
    assert list(rows) == ["fade"]  # a method with no finished repeat has no row
    row = rows["fade"]
    assert row["wall_s"] == statistics.median(walls) and row["cpu_s"] == statistics.median(cpus)
    assert row["peak_rss_mib"] == statistics.median(rsss)
    assert [t["wall_s"] for t in row["per_repeat"]] == walls
    assert row["hypotheses"] == ["x", "y"] and row["hypotheses_same_every_repeat"]
    assert "context" not in row


def test_repeats_that_transcribe_differently_are_flagged(bench):
    rows = bench.summarize_repeats({"fade": [_report(1, 1, 1, ["x", "y"]), _report(2, 2, 2, ["x", "z"])]})
    assert rows["fade"]["hypotheses"] == ["x", "y"]
    assert not rows["fade"]["hypotheses_same_every_repeat"]
    assert rows["fade"]["wall_s"] == 1.5
