"""Resumable sweeps: finished runs are skipped, crashed or changed ones re-run."""

from __future__ import annotations

import json

from conftest import random_sweep_command, run_command, write_tone_manifest

from hydra import compose, initialize_config_dir

from fade.cli import CONFIG_DIR
from fade.eval.fp_cache import fp_cache_key
from fade.tasks.resume import config_fingerprint, result_config, same_result_config


def _kathleen_config(datasets: str, seed: int = 0):
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=["experiment=fade_grid", f"paths.datasets={datasets}", f"calibration.seed={seed}"])


def test_new_options_at_their_defaults_do_not_invalidate_a_run():
    stored = {"calibration": {"num_samples": 128, "seed": 0}, "task": "quantize"}
    assert same_result_config(stored, {"calibration": {"num_samples": 128, "seed": 0, "dev_samples": 0}, "task": "quantize"})
    assert not same_result_config(stored, {"calibration": {"num_samples": 128, "seed": 0, "dev_samples": 100}, "task": "quantize"})
    assert not same_result_config(stored, {"calibration": {"num_samples": 128, "seed": 1}, "task": "quantize"})
    assert not same_result_config(stored, {"calibration": {"num_samples": 128}, "task": "quantize"})


def test_a_run_made_in_another_checkout_is_the_same_run():
    # A sweep folder committed on one machine must be recognised on another: the stored config
    # names its manifests relative to paths.datasets, not by this checkout's absolute path.
    here, there = _kathleen_config("/work/a/../shared/datasets"), _kathleen_config("/tmp/clone/../shared/datasets")
    stored = result_config(here)
    assert stored["dataset"]["source"]["manifest"] == "${paths.datasets}/kathleen/test.tsv"
    assert stored == result_config(there) and config_fingerprint(here) == config_fingerprint(there)
    assert config_fingerprint(here) != config_fingerprint(_kathleen_config("/tmp/clone/../shared/datasets", seed=1))


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
    import shutil

    shutil.rmtree(tmp_path / "fade-cache" / "fp_eval")  # and as if on a fresh machine with the sweep folder committed
    result = run_command(command, tmp_path)
    assert result.returncode == 0
    assert (result.stdout + result.stderr).count("is complete for this config: skipped") == 1
    assert "full-precision results reused from" in result.stdout + result.stderr
    assert finished[0].is_file() and finished[1].stat().st_mtime_ns == before[finished[1]]
    fingerprints = {json.loads(p.read_text())["config_fingerprint"] for p in finished}
    assert len(fingerprints) == 2  # the seeds differ, so do the configs


def test_an_empty_cache_takes_the_full_precision_result_from_a_finished_run_of_the_sweep(tmp_path, monkeypatch):
    from fade.eval.fp_cache import cached_fp_evaluation

    calls = []

    def compute(folder):
        calls.append(folder)
        (folder / "hypotheses.jsonl").write_text('{"id": "u0"}\n')
        (folder / "metrics.json").write_text('{"wer": 0.05}\n')

    key = {"model": "m", "dataset": {"name": "d"}}
    monkeypatch.setenv("FADE_CACHE", str(tmp_path / "cache-a"))
    cached_fp_evaluation(key, tmp_path / "sweep" / "run0" / "fp", compute)
    assert len(calls) == 1
    monkeypatch.setenv("FADE_CACHE", str(tmp_path / "cache-b"))  # a fresh machine with the sweep folder committed
    metrics = cached_fp_evaluation(key, tmp_path / "sweep" / "run1" / "fp", compute, [tmp_path / "sweep" / "run0" / "fp"])
    assert len(calls) == 1 and metrics["wer"] == 0.05
    assert (tmp_path / "sweep" / "run1" / "fp" / "hypotheses.jsonl").read_text() == '{"id": "u0"}\n'
    monkeypatch.setenv("FADE_CACHE", str(tmp_path / "cache-c"))  # another key is computed, not copied
    cached_fp_evaluation({**key, "model": "other"}, tmp_path / "sweep" / "run2" / "fp", compute, [tmp_path / "sweep" / "run0" / "fp"])
    assert len(calls) == 2
