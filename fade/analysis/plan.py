"""Which runs of a sweep are done on this machine, which are still to run, and about how long they take.

    PLAN=1 experiments/fade_grid.sh moonshine_base_en       # the paper grid's runs, nothing run
    fade-plan runs.txt                                       # one run per line: its fade overrides

Each line is composed exactly as ``fade -m <line>`` would compose that job (same config, same
sweep folder: for the grid, the folder of this machine's platform), and the run counts as done
when that folder holds a metrics.json that ``fade -m`` would skip: the check is fade.tasks.resume's.
Nothing is run and no folder is made, so a plan costs seconds and can be asked at any time, e.g.
before a session on a shared machine decides which part of a grid fits into it.

The estimate of a pending run is the median compute time (``calibration_seconds`` +
``eval_seconds`` + the dev split's evaluation seconds) of the finished runs of the same method and
precision in the same sweep folder (else of the same method there, else of the same quantizer and
compensation); model loading is not in it, and the estimate is empty where nothing comparable has
finished yet.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import shlex
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from fade.analysis.runs import Run, find_runs
from fade.errors import ConfigError, DataError


@dataclass(frozen=True)
class PlannedRun:
    overrides: tuple[str, ...]
    folder: Path
    status: str  # "done", "pending", or "stale": a metrics.json written by another config (it re-runs)
    labels: tuple[str, ...]  # estimate keys, most specific first (see estimate_seconds)
    seconds: float | None = None  # compute seconds: recorded when done, estimated when not (estimate_seconds)

    @property
    def done(self) -> bool:
        return self.status == "done"


def compute_seconds(run: Run) -> float | None:
    """calibration + evaluation (+ dev evaluation) seconds of a finished run, as recorded."""
    m = run.metrics
    if m.get("eval_seconds") is None:
        return None
    seconds = float(m.get("calibration_seconds") or 0.0) + float(m["eval_seconds"])
    dev = run.path / "dev" / "quantized" / "metrics.json"
    if dev.is_file():
        seconds += float(json.loads(dev.read_text()).get("seconds") or 0.0)
    return seconds


def labels_of(metrics: dict[str, Any]) -> tuple[str, ...]:
    """Estimate keys of a run, most specific first: the model with the method label and precision,
    with the method label, with the method kind (quantizer+compensation)."""
    run = Run(Path("."), metrics)
    return (f"{run.model} {run.method} {run.precision}", f"{run.model} {run.method}",
            f"{run.model} {metrics.get('quantizer')}+{metrics.get('compensation')}")


def config_metrics(cfg: DictConfig) -> dict[str, Any]:
    """The metrics.json fields ``Run`` labels by, from a composed config (for a run not made yet)."""
    compensation = OmegaConf.to_container(cfg.compensation, resolve=True) if "compensation" in cfg else {}
    name = compensation.get("name", "none") if isinstance(compensation, dict) else "none"
    quantizer = cfg.quantizer.name
    compensated = name not in (None, "none")
    return {"model": cfg.model.name, "method": quantizer + (f"+{name}" if compensated else ""), "quantizer": quantizer,
            "compensation": name, "alpha": compensation.get("alpha") if name == "qep" else None,
            "bits": cfg.bits.w, "group_size": cfg.bits.group_size, "config": {"compensation": compensation}}


def compose_job(overrides: Sequence[str]) -> tuple[Path, DictConfig]:
    """(run folder, job config) of one multirun job with ``overrides``, as ``fade -m`` makes them."""
    from hydra import compose
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
    with read_write(cfg.hydra), open_dict(cfg.hydra):
        cfg.hydra.mode = RunMode.MULTIRUN
    HydraConfig.instance().set_config(cfg)
    folder = Path(str(OmegaConf.select(cfg, "hydra.sweep.dir"))) / str(OmegaConf.select(cfg, "hydra.sweep.subdir"))
    with read_write(cfg.hydra.runtime), open_dict(cfg.hydra.runtime):
        cfg.hydra.runtime.output_dir = str(folder.resolve())
    HydraConfig.instance().set_config(cfg)  # run_dir() and ${hydra:...} now answer for this job
    job = copy.deepcopy(cfg)
    with read_write(job), open_dict(job):
        del job["hydra"]
    return folder, job


def plan_runs(lines: Iterable[Sequence[str]]) -> list[PlannedRun]:
    """The status of each run (one override list each; a run listed twice counts once), with measured or
    estimated compute seconds."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from fade.cli import CONFIG_DIR
    from fade.tasks.resume import completed_metrics, config_fingerprint, result_config

    planned = []
    GlobalHydra.instance().clear()
    resume_log = logging.getLogger("fade.tasks.resume")
    previous_level = resume_log.level
    resume_log.setLevel(logging.ERROR)  # "written by a different config" is the "stale" status here
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3", job_name="fade"):
            seen: set[Path] = set()
            for overrides in lines:
                try:
                    folder, job = compose_job(overrides)
                except Exception as exc:  # Hydra's own errors name the bad override
                    raise ConfigError(f"cannot compose `{' '.join(overrides)}`: {exc}") from exc
                if folder in seen:
                    continue  # listed twice (the grid's followup stage repeats main's QEP runs): one run
                seen.add(folder)
                done = completed_metrics(folder, config_fingerprint(job), result_config(job))
                if done is not None:
                    planned.append(PlannedRun(tuple(overrides), folder, "done", labels_of(done)))
                else:
                    status = "stale" if (folder / "metrics.json").is_file() else "pending"
                    planned.append(PlannedRun(tuple(overrides), folder, status, labels_of(config_metrics(job))))
    finally:
        resume_log.setLevel(previous_level)
        GlobalHydra.instance().clear()
    return estimate_seconds(planned)


def estimate_seconds(planned: Sequence[PlannedRun]) -> list[PlannedRun]:
    """Fill in every run's seconds from one read of its sweep folder: a done run's own, recorded;
    for the others the median over the finished runs of that folder (listed or not; not the stale
    ones) that share the most specific label (see the module docstring)."""
    recorded: dict[Path, float | None] = {}
    measured: dict[tuple[Path, str], list[float]] = defaultdict(list)
    stale = {run.folder for run in planned if run.status == "stale"}
    for sweep in dict.fromkeys(run.folder.parent for run in planned):
        if not sweep.is_dir():
            continue  # no such folder yet
        for finished in find_runs(sweep, allow_none=True):  # a crashed run's fp/metrics.json alone is not a run
            recorded[finished.path] = seconds = compute_seconds(finished)
            if seconds is not None and finished.path not in stale:
                for label in labels_of(finished.metrics):
                    measured[(sweep, label)].append(seconds)
    out = []
    for run in planned:
        if run.done:
            seconds = recorded.get(run.folder)
        else:
            found = next((measured[(run.folder.parent, label)] for label in run.labels
                          if measured.get((run.folder.parent, label))), None)
            seconds = statistics.median(found) if found else None
        out.append(PlannedRun(run.overrides, run.folder, run.status, run.labels, seconds))
    return out


def minutes(seconds: float | None) -> str:
    return "?" if seconds is None else f"{seconds / 60:.1f}"


def report(planned: Sequence[PlannedRun]) -> str:
    lines = ["| status | method | minutes | run folder |", "|---|---|---:|---|"]
    for run in planned:
        lines.append(f"| {run.status} | {run.labels[0]} | {minutes(run.seconds)} | {run.folder} |")
    pending = [run for run in planned if not run.done]
    known = [run.seconds for run in pending if run.seconds is not None]
    unknown = len(pending) - len(known)
    lines.append("")
    lines.append(f"{len(planned) - len(pending)} of {len(planned)} runs done; {len(pending)} to run, about "
                 f"{sum(known) / 3600:.1f} h of compute" + (f" plus {unknown} without an estimate" if unknown else "") +
                 " (model loading not included).")
    return "\n".join(lines)


def read_lines(path: str) -> list[list[str]]:
    """One run per non-empty line, ``#`` comments allowed; ``-`` reads standard input."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise DataError(f"cannot read the list of runs {path}: {exc.strerror}") from exc
    runs = [shlex.split(line, comments=True) for line in text.splitlines()]
    runs = [run for run in runs if run]
    if not runs:
        raise DataError(f"{path} lists no runs: write one run's fade overrides per line")
    return runs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fade-plan", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", help="a file with one run's fade overrides per line (- for standard input)")
    parser.add_argument("--pending", action="store_true", help="print only the override lines still to run")
    args = parser.parse_args(argv)
    try:
        planned = plan_runs(read_lines(args.runs))
    except (DataError, ConfigError) as exc:
        print(f"fade-plan: {exc}", file=sys.stderr)
        return 2
    if args.pending:
        print("\n".join(shlex.join(run.overrides) for run in planned if not run.done))
    else:
        print(report(planned))
    return 0


if __name__ == "__main__":
    sys.exit(main())
