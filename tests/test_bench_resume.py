"""The peer benchmark's resume check: reports are reused only when settings and platform match."""

import json

import pytest
from conftest import import_bench


@pytest.fixture(scope="module")
def bench():
    return import_bench("peers_common")


CONTEXT = {"model": "whisper-tiny.en", "bits": 4, "method": "fade-gptq", "repeat": 1, "utterances": 128,
           "threads": 2, "peer_grid": "recipe", "platform": "amd-epyc-avx2-2t"}


def test_written_report_is_reused_with_the_same_settings(bench, tmp_path):
    path = tmp_path / "r.json"
    bench.write_report(path, {"wall_s": 12.5, "context": CONTEXT})
    assert bench.reusable_report(path, dict(CONTEXT), resume=True)["wall_s"] == 12.5
    assert not path.with_name("r.json.tmp").exists()


@pytest.mark.parametrize("change", [{"platform": "intel-xeon-avx512-2t"}, {"utterances": 64}, {"threads": 1},
                                    {"bits": 3}, {"peer_grid": "matched"}])
def test_report_of_other_settings_or_machine_is_not_reused(bench, tmp_path, change):
    path = tmp_path / "r.json"
    bench.write_report(path, {"wall_s": 12.5, "context": CONTEXT})
    assert bench.reusable_report(path, {**CONTEXT, **change}, resume=True) is None


def test_nothing_is_reused_without_resume_or_from_a_torn_file(bench, tmp_path):
    path = tmp_path / "r.json"
    bench.write_report(path, {"wall_s": 12.5, "context": CONTEXT})
    assert bench.reusable_report(path, CONTEXT, resume=False) is None
    path.write_text(json.dumps({"wall_s": 12.5, "context": CONTEXT})[:20])  # cut short mid-write
    assert bench.reusable_report(path, CONTEXT, resume=True) is None
    assert bench.reusable_report(tmp_path / "missing.json", CONTEXT, resume=True) is None
