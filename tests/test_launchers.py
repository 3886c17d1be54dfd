"""Hydra launchers (conf/hydra/launcher/): the presets compose, and a tiny sweep runs and resumes
through joblib (``hydra/launcher=parallel``) and submitit's local executor (``hydra/launcher=slurm_local``,
the code path of ``hydra/launcher=slurm``). See docs/launchers.md."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import write_tone_manifest
from fade.cli import CONFIG_DIR
from fade.config import register_configs

REPO = Path(__file__).resolve().parent.parent
LAUNCHERS = Path(CONFIG_DIR) / "hydra" / "launcher"

#: preset → (Hydra plugin module, pip package that provides it; None for Hydra's own basic launcher)
PLUGINS = {
    "local": (None, None),
    "parallel": ("hydra_plugins.hydra_joblib_launcher", "hydra-joblib-launcher"),
    "slurm": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher"),
    "slurm_local": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher"),
}


def _require(preset: str) -> None:
    module, package = PLUGINS.get(preset, (None, None))
    if module is not None and importlib.util.find_spec(module) is None:
        pytest.skip(f"hydra/launcher={preset} needs `pip install {package}` (or `pip install -e '.[launchers]'`)")


def _launcher(preset: str) -> dict:
    register_configs()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"hydra/launcher={preset}"], return_hydra_config=True)
    return OmegaConf.to_container(cfg.hydra.launcher, resolve=True)


@pytest.mark.parametrize("preset", sorted({p.stem for p in LAUNCHERS.glob("*.yaml")} | set(PLUGINS)))
def test_every_preset_composes_and_resolves(preset):
    _require(preset)
    assert _launcher(preset)["_target_"].startswith(("hydra._internal.core_plugins.", "hydra_plugins."))


def test_local_is_hydras_basic_launcher():
    assert _launcher("local")["_target_"].endswith("BasicLauncher")


def test_parallel_reads_jobs_from_env(monkeypatch):
    _require("parallel")
    monkeypatch.delenv("FADE_JOBS", raising=False)
    launcher = _launcher("parallel")
    assert launcher["_target_"].endswith("JoblibLauncher") and launcher["n_jobs"] == 2
    monkeypatch.setenv("FADE_JOBS", "5")
    assert _launcher("parallel")["n_jobs"] == 5


def test_slurm_defaults_and_env(monkeypatch):
    _require("slurm")
    for name in ("FADE_SLURM_PARTITION", "FADE_SLURM_ACCOUNT", "FADE_SLURM_PARALLEL"):
        monkeypatch.delenv(name, raising=False)
    launcher = _launcher("slurm")
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert (launcher["gpus_per_node"], launcher["tasks_per_node"], launcher["nodes"]) == (1, 1, 1)
    assert launcher["partition"] is None and launcher["account"] is None and launcher["array_parallelism"] == 16
    assert launcher["timeout_min"] > 0 and launcher["mem_gb"] > 0 and launcher["cpus_per_task"] > 0
    assert f"export OMP_NUM_THREADS={launcher['cpus_per_task']}" in launcher["setup"]
    assert launcher["submitit_folder"].endswith("/.submitit/%j")
    monkeypatch.setenv("FADE_SLURM_PARTITION", "gpu")
    monkeypatch.setenv("FADE_SLURM_ACCOUNT", "lab")
    monkeypatch.setenv("FADE_SLURM_PARALLEL", "4")
    launcher = _launcher("slurm")
    assert (launcher["partition"], launcher["account"], launcher["array_parallelism"]) == ("gpu", "lab", 4)


def test_slurm_local_uses_submitits_local_executor():
    _require("slurm_local")
    launcher = _launcher("slurm_local")
    assert launcher["_target_"].endswith("submitit_launcher.LocalLauncher") and launcher["gpus_per_node"] == 0


# --------------------------------------------------------------------------- slow: real sweeps

SEEDS = (0, 1)


@pytest.fixture(scope="module")
def tones(tmp_path_factory) -> Path:
    return write_tone_manifest(tmp_path_factory.mktemp("launcher_audio"), 3)


def _sweep(preset: str, manifest: Path, sweep: Path) -> subprocess.CompletedProcess:
    """Two evaluate runs of the random Whisper (seed=0,1) on three tone clips, one thread each."""
    args = ["-m", f"hydra/launcher={preset}", "model=whisper_random", "task=evaluate", "dataset=manifest",
            f"dataset.source.manifest={manifest}", f"seed={','.join(map(str, SEEDS))}", "runner.threads=1",
            "runner.progress_bar=false", f"hydra.sweep.dir={sweep}",
            # folder names from the swept key only: seed=0, seed=1
            "hydra.job.config.override_dirname.exclude_keys=[model,task,dataset,dataset.source.manifest,"
            "runner.threads,runner.progress_bar]"]
    # FADE_CACHE comes from conftest's isolated_cache (os.environ); jobs import the editable fade package.
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "FADE_JOBS": "2"}
    result = subprocess.run([sys.executable, "-m", "fade", *args], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


def _job_log(run: Path) -> str:
    return "".join(path.read_text() for path in run.glob("*.log"))


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["parallel", "slurm_local"])
def test_sweep_runs_and_resumes(preset, tones, tmp_path):
    _require(preset)
    sweep = tmp_path / "multirun"
    _sweep(preset, tones, sweep)
    runs = {seed: sweep / f"seed={seed}" for seed in SEEDS}
    stamps = {}
    for seed, run in runs.items():
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["config"]["seed"] == seed and metrics["utterances"] == 3 and metrics["config_fingerprint"]
        assert "skipped" not in _job_log(run)
        stamps[seed] = (run / "metrics.json").stat().st_mtime_ns
    if preset == "slurm_local":  # one submitit folder per job, with the job's own log
        logs = list((sweep / ".submitit").glob("*/*_log.err"))
        assert len(logs) == len(SEEDS), sorted(p.name for p in (sweep / ".submitit").iterdir())

    _sweep(preset, tones, sweep)  # the same command again: every run is complete, none re-runs
    for seed, run in runs.items():
        assert "is complete for this config: skipped" in _job_log(run), _job_log(run)[-2000:]
        assert (run / "metrics.json").stat().st_mtime_ns == stamps[seed]
