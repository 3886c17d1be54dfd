"""Where the grid projection takes its calibration seconds from: either benchmark's JSON, or a clear error."""

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "experiments" / "bench"


@pytest.fixture(scope="module")
def peers():
    sys.path.insert(0, str(BENCH))
    try:
        import peers_common
    finally:
        sys.path.remove(str(BENCH))
    return peers_common


def _seconds(peers, tmp_path, payload, model="whisper-tiny.en"):
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps(payload))
    return peers.calibration_seconds(model, None, path, tmp_path / "no-multirun")


def test_calibration_py_rows_are_scaled_to_128_utterances(peers, tmp_path):
    rows = [{"model": "whisper-tiny.en", "method": "gptq", "utterances": 32, "wall_s": 30.0},
            {"model": "whisper-tiny.en", "method": "gptq+qep", "utterances": 32, "wall_s": 70.0},
            {"model": "whisper-tiny.en", "method": "gptq@recompute", "utterances": 32, "wall_s": 999.0},
            {"model": "whisper-base", "method": "gptq", "utterances": 32, "wall_s": 500.0}]
    seconds, source = _seconds(peers, tmp_path, rows)
    # 128 / 32 = 4; FADE not measured: it takes GPTQ+QEP's; the @ variant and the other model are ignored
    assert seconds == {"gptq": 120.0, "qep": 280.0, "fade": 280.0}
    assert "calibration.json" in source


def test_peer_benchmark_summary_gives_the_median_over_bit_widths(peers, tmp_path):
    summary = [{"model": "whisper-tiny.en", "bits": b, "method": m, "wall_s": w}
               for b, m, w in [(4, "llmcompressor-gptq", 245.4), (4, "fade-gptq", 155.9), (3, "fade-gptq", 136.8),
                               (4, "fade-gptq+qep", 364.3), (3, "fade-gptq+qep", 325.8),
                               (4, "fade-fade", 358.1), (3, "fade-fade", 327.6)]]
    seconds, _ = _seconds(peers, tmp_path, {"utterances": 128, "summary": summary})
    assert seconds == pytest.approx({"gptq": (155.9 + 136.8) / 2, "qep": (364.3 + 325.8) / 2,
                                     "fade": (358.1 + 327.6) / 2})


@pytest.mark.parametrize("text", ["{not json", json.dumps({"runs": []}), json.dumps(3)])
def test_unreadable_calibration_json_names_the_file_and_the_fix(peers, tmp_path, text):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(SystemExit, match="bad.json.*calibration"):
        peers.calibration_seconds("whisper-tiny.en", None, path, tmp_path)
