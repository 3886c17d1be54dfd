"""experiments/fade_grid.sh: every command it would run composes, and the stages add up to the documented grid."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from hydra import compose, initialize_config_dir

from fade.cli import CONFIG_DIR

REPO = Path(__file__).resolve().parent.parent


def _commands(tmp_path: Path, **env: str) -> list[list[str]]:
    """The argument lists the script passes to `fade`, recorded by a stand-in on PATH. The script runs
    in ``tmp_path``, so the sweep folders it resumes are ``tmp_path/outputs/...``, empty unless a test
    puts runs there (the real `fade-plan` decides which runs are finished)."""
    stub = tmp_path / "bin" / "fade"
    stub.parent.mkdir(exist_ok=True)
    stub.write_text('#!/bin/sh\nprintf "%s\\n" "$*" >> "$FADE_CALLS"\n')
    stub.chmod(0o755)
    calls = tmp_path / "calls.txt"
    calls.unlink(missing_ok=True)
    run_env = {**os.environ, **env, "PATH": f"{stub.parent}:{os.environ['PATH']}", "FADE_CALLS": str(calls)}
    subprocess.run(["bash", str(REPO / "experiments" / "fade_grid.sh"), "whisper_tiny_en"], env=run_env, check=True,
                   cwd=tmp_path)
    return [line.split() for line in calls.read_text().splitlines()] if calls.exists() else []


def test_every_grid_command_composes_and_the_stages_add_up(tmp_path):
    commands = _commands(tmp_path, ALL="1")  # nothing is finished in tmp_path: ALL=1 only saves fade-plan's time
    assert all(c[:2] == ["-m", "experiment=fade_grid"] for c in commands)
    runs = {frozenset(c[1:]) for c in commands}  # a run listed by two stages is one run (resume skips it)
    main = 2 * (1 + 5 * 3)             # per width: RTN + 5 seeds × (GPTQ, QEP 0.5, FADE)
    alpha = 2 * 5 * 4                  # α 0, 0.25, 0.75, 1 per width and seed
    followup = 2 * 5 * 2               # two FADE variants per width and seed (QEP 0.5 repeats main)
    ablate = 2 * (5 + 7)               # W3, seeds 0-1, each V_int and R_calib candidate (heldout_gain repeats followup)
    assert len(runs) == main + alpha + followup + ablate - 2
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        for overrides in sorted(map(sorted, runs)):
            cfg = compose("config", overrides=[o for o in overrides if o != "-m"])
            assert cfg.model.name == "whisper-tiny.en" and cfg.dataset.name == "kathleen-test"


def test_stages_are_picked_and_ordered_by_name(tmp_path):
    commands = _commands(tmp_path, ALL="1", STAGES="followup", BITS="w3g128", SEEDS="3")
    assert [c[-1] for c in commands] == ["calibration.dev_samples=100"] * 3
    assert "compensation.r_calib=heldout_gain" in commands[1] and "method=qep" in commands[0]
    assert "compensation.mapping=direct" in commands[2]
    result = subprocess.run(["bash", str(REPO / "experiments" / "fade_grid.sh")], env={**os.environ, "STAGES": "nope"},
                            capture_output=True, text=True)
    assert result.returncode == 2 and "unknown stage nope" in result.stderr


def test_the_script_names_every_committed_grid_run(tmp_path):
    """A fresh clone resumes the committed grid only if the script's runs land in the committed
    folders, whose names are their overrides spelt exactly (``alpha=1`` and ``alpha=1.0`` differ)."""
    import yaml

    commands = _commands(tmp_path, ALL="1")
    scripted = {frozenset(o for o in c if o not in ("-m", "runner.progress_bar=false")) for c in commands}
    committed = sorted((REPO / "outputs" / "multirun" / "fade_grid_whisper-tiny.en").glob("*/*/.hydra/overrides.yaml"))
    assert committed, "no committed tiny.en grid runs"
    for path in committed:
        overrides = frozenset(o for o in yaml.safe_load(path.read_text()) if not o.startswith("runner.progress_bar="))
        assert overrides in scripted, f"{path.parent.parent.name} is not a run of experiments/fade_grid.sh"


def _methods(commands: list[list[str]]) -> list[str]:
    return [next(o for o in c if o.startswith("method=")) for c in commands]


def test_only_runs_not_finished_on_this_machine_reach_fade(tmp_path):
    """A resumed grid hands fade only its unfinished runs (a finished one would cost a process start,
    and Hydra would rewrite its committed .hydra/ files before skipping it); ALL=1 hands it all."""
    from fade.process import platform_tag

    name = "bits=w3g128,calibration.seed=0,experiment=fade_grid,method=gptq,model=whisper_tiny_en"
    record = next((REPO / "outputs" / "multirun" / "fade_grid_whisper-tiny.en").glob(f"*/{name}"))
    here = tmp_path / "outputs" / "multirun" / "fade_grid_whisper-tiny.en" / platform_tag() / name
    shutil.copytree(record, here)
    env = {"STAGES": "main", "BITS": "w3g128", "SEEDS": "0"}
    assert _methods(_commands(tmp_path, **env)) == ["method=rtn", "method=qep", "method=fade"]
    assert _methods(_commands(tmp_path, ALL="1", **env)) == ["method=rtn", "method=gptq", "method=qep", "method=fade"]
    (here / "metrics.json").unlink()  # a run that crashed midway leaves no metrics.json: it runs again
    assert _methods(_commands(tmp_path, **env)) == ["method=rtn", "method=gptq", "method=qep", "method=fade"]
