"""fade-plan: a run is "done" exactly when `fade -m` would skip it, and nothing is run or made.

The finished runs are the session sweep ``random_sweep`` (real CLI, random-init models), copied so
that the tests can break runs without touching the fixture.
"""

from __future__ import annotations

import itertools
import json
import os
import shlex
import shutil
import statistics
import subprocess
from pathlib import Path

import pytest

from conftest import RANDOM_SWEEP, REPO, random_sweep_command
from fade.analysis.plan import compute_seconds, labels_of, main, plan_runs
from fade.analysis.runs import find_runs
from fade.errors import ConfigError


def sweep_lines(sweep: Path, seeds: tuple[int, ...] = (0, 1)) -> list[list[str]]:
    """The override list of each job of RANDOM_SWEEP, as `fade -m` expands it, aimed at ``sweep``."""
    command = random_sweep_command(Path("MANIFEST"), sweep)[4:]  # after `python -m fade -m`
    swept = {entry.split("=")[0] for entry in RANDOM_SWEEP}
    fixed = [entry for entry in command if entry.split("=")[0] not in swept]
    lines = []
    for model, method, seed in itertools.product(["whisper_random", "moonshine_random"], ["gptq", "fade"], seeds):
        lines.append([f"model={model}", f"method={method}", f"calibration.seed={seed}", *fixed])
    return lines


@pytest.fixture
def sweep(random_sweep, tmp_path) -> tuple[Path, list[list[str]]]:
    copy = tmp_path / "multirun"
    shutil.copytree(random_sweep, copy)
    manifest = json.loads(next(copy.rglob("metrics.json")).read_text())["config"]["dataset"]["source"]["manifest"]
    lines = [[entry.replace("MANIFEST", manifest) for entry in line] for line in sweep_lines(copy)]
    return copy, lines


def test_a_finished_sweep_is_all_done_with_its_recorded_seconds(sweep):
    folder, lines = sweep
    planned = plan_runs(lines)
    assert [run.status for run in planned] == ["done"] * 8
    finished = {run.path: run for run in find_runs(folder)}
    assert {run.folder for run in planned} == set(finished)
    for run in planned:
        assert run.seconds == compute_seconds(finished[run.folder])
        recorded = finished[run.folder].metrics
        assert run.seconds == pytest.approx(recorded["calibration_seconds"] + recorded["eval_seconds"])


def test_pending_broken_and_changed_runs_and_their_estimates(sweep):
    folder, lines = sweep
    runs = {run.path: run for run in find_runs(folder)}
    before = sorted(p.name for p in folder.iterdir())
    # one run crashed (no metrics.json), one was made by another config, and one seed was never run
    crashed, changed = sorted(runs)[0], sorted(runs)[1]
    (crashed / "metrics.json").unlink()
    stored = json.loads((changed / "metrics.json").read_text())
    stored["config_fingerprint"] = "0" * 16
    stored["config"]["calibration"]["num_samples"] = 999
    (changed / "metrics.json").write_text(json.dumps(stored))
    new_seed = [[entry.replace("calibration.seed=0", "calibration.seed=2") for entry in line]
                for line in lines if "calibration.seed=0" in line]
    planned = {run.folder: run for run in plan_runs(lines + new_seed + lines[:1])}  # the repeated line counts once

    assert len(planned) == 8 + 4
    assert planned[crashed].status == "pending" and planned[changed].status == "stale"
    new = [run for run in planned.values() if "calibration.seed=2" in run.folder.name]
    assert len(new) == 4 and all(run.status == "pending" for run in new)
    for run in new + [planned[crashed], planned[changed]]:
        # the median over the finished runs of the same method and precision
        same = [compute_seconds(r) for path, r in runs.items()
                if path not in (crashed, changed) and labels_of(r.metrics)[0] == run.labels[0]]
        assert run.seconds == pytest.approx(statistics.median(same))
    assert sorted(p.name for p in folder.iterdir()) == before  # nothing was made for the new seed


def test_cli_lists_the_pending_lines_and_names_bad_input(sweep, tmp_path, capsys):
    folder, lines = sweep
    (sorted(find_runs(folder), key=lambda r: r.path)[0].path / "metrics.json").unlink()
    listing = tmp_path / "runs.txt"
    listing.write_text("# the random sweep\n" + "\n".join(shlex.join(line) for line in lines) + "\n")
    assert main([str(listing)]) == 0
    out = capsys.readouterr().out
    assert out.count("| done |") == 7 and out.count("| pending |") == 1 and "7 of 8 runs done; 1 to run" in out
    assert main(["--pending", str(listing)]) == 0
    (pending,) = capsys.readouterr().out.splitlines()
    assert shlex.split(pending) in lines

    listing.write_text("# nothing\n\n")
    assert main([str(listing)]) == 2
    assert "lists no runs" in capsys.readouterr().err
    assert main([str(tmp_path / "missing.txt")]) == 2
    assert "cannot read the list of runs" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="runner.nonexistent"):
        plan_runs([["runner.nonexistent=1"]])


def test_the_grid_script_plans_instead_of_running(tmp_path):
    """PLAN=1 experiments/fade_grid.sh runs nothing: its one call is fade-plan, over the grid's runs."""
    stub = tmp_path / "bin"
    stub.mkdir()
    for name in ("fade", "fade-plan"):
        (stub / name).write_text(f'#!/bin/sh\necho {name} >> "$CALLS"; [ -f "$1" ] && cat "$1" >> "$CALLS"\n')
        (stub / name).chmod(0o755)
    calls = tmp_path / "calls.txt"
    env = {**os.environ, "PATH": f"{stub}:{os.environ['PATH']}", "CALLS": str(calls), "PLAN": "1",
           "STAGES": "main", "BITS": "w4g128", "SEEDS": "3"}
    subprocess.run(["bash", str(REPO / "experiments" / "fade_grid.sh"), "moonshine_base_en"], env=env, check=True)
    called = calls.read_text().splitlines()
    assert called[0] == "fade-plan" and "fade" not in called
    runs = [shlex.split(line) for line in called[1:]]
    assert len(runs) == 4  # RTN, then seed 3's GPTQ, QEP and FADE
    assert all(run[:2] == ["experiment=fade_grid", "model=moonshine_base_en"] for run in runs)
    assert ["method=rtn", "method=gptq", "method=qep", "method=fade"] == [next(o for o in r if o.startswith("method=")) for r in runs]
