"""What a run does, chosen by ``task=...``. Each task takes the composed config and returns metrics."""

from __future__ import annotations

from typing import Any, Callable

from omegaconf import DictConfig

from fade.errors import ConfigError


def _tasks() -> dict[str, Callable[[DictConfig], dict[str, Any]]]:
    from fade.tasks.evaluate import evaluate_task
    from fade.tasks.quantize import quantize_task

    return {"evaluate": evaluate_task, "quantize": quantize_task}


def run_task(cfg: DictConfig) -> dict[str, Any]:
    tasks = _tasks()
    if cfg.task not in tasks:
        raise ConfigError(f"unknown task {cfg.task!r}; use one of {', '.join(tasks)}")
    return tasks[cfg.task](cfg)
