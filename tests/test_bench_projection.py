"""Where the grid projection takes its calibration seconds from: either benchmark's JSON, or a clear error."""

import json

import pytest
from conftest import import_bench


@pytest.fixture(scope="module")
def peers():
    return import_bench("peers_common")


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


def test_peer_benchmark_json_gives_its_grid_projection_seconds(peers, tmp_path):
    payload = {"utterances": 128, "summary": [{"model": "whisper-tiny.en", "bits": 4, "method": "fade-gptq", "wall_s": 155.9}],
               "grid_projection": {"calibration_seconds_per_run": {"gptq": 146.4, "qep": 345.1, "fade": 342.8}}}
    seconds, source = _seconds(peers, tmp_path, payload)
    assert seconds == {"gptq": 146.4, "qep": 345.1, "fade": 342.8}
    assert "calibration.json" in source
    # its projection is tiny.en's grid: another model gets nothing from it
    seconds, source = _seconds(peers, tmp_path, payload, model="whisper-base")
    assert seconds is None and "no calibration timing known" in source


@pytest.mark.parametrize("text", ["{not json", json.dumps({"runs": []}), json.dumps(3)])
def test_unreadable_calibration_json_names_the_file_and_the_fix(peers, tmp_path, text):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(SystemExit, match="bad.json.*calibration"):
        peers.calibration_seconds("whisper-tiny.en", None, path, tmp_path)
