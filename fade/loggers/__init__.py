"""Experiment loggers. Each receives the resolved config, per-layer records and final metrics.

The interface (duck-typed): ``log_config(config)``, ``log_layers(records)``, ``log_metrics(summary)``,
``finish()``. Pick one with ``logger=none|csv|wandb`` (``conf/logger/``):

- :class:`NullLogger` (default): logs nothing; the runners still write the run folder;
- :class:`CSVLogger` (``fade/loggers/csv_logger.py``): config/layers/summary files under ``<run>/logs/``;
- :class:`WandbLogger` (``fade/loggers/wandb_logger.py``): a W&B run, offline unless asked otherwise;
  :mod:`fade.loggers.wandb_offline` reads offline runs back.
"""

from __future__ import annotations

from typing import Any, Sequence


class NullLogger:
    """Logs nothing: results are still written to the run folder by the runners."""

    def __init__(self, **_: Any):
        pass

    def log_config(self, config: dict[str, Any]) -> None:
        pass

    def log_layers(self, records: Sequence[dict[str, Any]]) -> None:
        pass

    def log_metrics(self, metrics: dict[str, Any]) -> None:
        pass

    def finish(self) -> None:
        pass


from fade.loggers.csv_logger import CSVLogger  # noqa: E402  (wandb itself is imported only when a run opens)
from fade.loggers.wandb_logger import WandbLogger  # noqa: E402

__all__ = ["NullLogger", "CSVLogger", "WandbLogger"]
