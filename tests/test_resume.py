"""Resumable sweeps: finished runs are skipped, crashed or changed ones re-run."""

from __future__ import annotations

import json

from conftest import random_sweep_command, run_command, write_tone_manifest

from fade.eval.fp_cache import fp_cache_key
from fade.tasks.resume import same_result_config


def test_new_options_at_their_defaults_do_not_invalidate_a_run():
    stored = {"calibration": {"num_samples": 128, "seed": 0}, "task": "quantize"}
    assert same_result_config(stored, {"calibration": {"num_samples": 128, "seed": 0, "dev_samples": 0}, "task": "quantize"})
    assert not same_result_config(stored, {"calibration": {"num_samples": 128, "seed": 0, "dev_samples": 100}, "task": "quantize"})
    assert not same_result_config(stored, {"calibration": {"num_samples": 128, "seed": 1}, "task": "quantize"})
    assert not same_result_config(stored, {"calibration": {"num_samples": 128}, "task": "quantize"})


def test_fp_cache_key_follows_manifest_content_not_its_path(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "m.tsv").write_text("id\tpath\n")
    key = lambda folder: fp_cache_key({"dataset": {"manifest": str(tmp_path / folder / "m.tsv")}})  # noqa: E731
    assert key("a") == key("b")
    (tmp_path / "b" / "m.tsv").write_text("id\tpath\nx\ty\n")
    assert key("a") != key("b")


def test_rerunning_a_sweep_skips_finished_runs_and_redoes_a_crashed_one(tmp_path):
    manifest = write_tone_manifest(tmp_path / "audio", 6)
    command = random_sweep_command(manifest, tmp_path / "sweep")
    command[command.index("model=whisper_random,moonshine_random")] = "model=whisper_random"
    command[command.index("method=gptq,fade")] = "method=gptq"
    assert run_command(command, tmp_path).returncode == 0
    finished = sorted((tmp_path / "sweep").glob("*/metrics.json"))
    assert len(finished) == 2
    before = {p: p.stat().st_mtime_ns for p in finished}
    finished[0].unlink()  # as if that run had crashed before writing its result
    result = run_command(command, tmp_path)
    assert result.returncode == 0
    assert (result.stdout + result.stderr).count("is complete for this config: skipped") == 1
    assert finished[0].is_file() and finished[1].stat().st_mtime_ns == before[finished[1]]
    fingerprints = {json.loads(p.read_text())["config_fingerprint"] for p in finished}
    assert len(fingerprints) == 2  # the seeds differ, so do the configs
