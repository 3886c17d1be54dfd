"""What a run does, chosen by ``task=...``. Each task takes the composed config and returns metrics."""

from __future__ import annotations

import logging
from typing import Any, Callable

from omegaconf import DictConfig

from fade.errors import ConfigError

log = logging.getLogger(__name__)


def _tasks() -> dict[str, Callable[[DictConfig], dict[str, Any]]]:
    from fade.tasks.evaluate import evaluate_task
    from fade.tasks.quantize import quantize_task

    return {"evaluate": evaluate_task, "quantize": quantize_task}


def run_task(cfg: DictConfig) -> dict[str, Any]:
    tasks = _tasks()
    if cfg.task not in tasks:
        raise ConfigError(f"unknown task {cfg.task!r}; use one of {', '.join(tasks)}")
    from fade.tasks.common import run_dir
    from fade.tasks.resume import completed_metrics, config_fingerprint, result_config

    fingerprint = config_fingerprint(cfg)
    if cfg.get("resume", True):
        done = completed_metrics(run_dir(), fingerprint, result_config(cfg))
        if done is not None:
            log.info("%s is complete for this config: skipped (resume=false re-runs it)", run_dir() / "metrics.json")
            return done
    return tasks[cfg.task](cfg, fingerprint=fingerprint)
