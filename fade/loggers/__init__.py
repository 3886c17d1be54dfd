"""Experiment loggers. Each receives the resolved config, per-layer records and final metrics.

``NullLogger`` is the default; the CSV/JSON and W&B loggers plug in through ``conf/logger/``.
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
