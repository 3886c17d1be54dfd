"""Resumable runs: a run folder whose metrics.json is complete for the same config is not re-run.

Every task writes ``metrics.json`` last and atomically, with the fingerprint of the config that
produced it. Re-running a sweep with the same command therefore skips the runs that finished and
re-runs the ones that crashed or never started (their folders have no metrics.json), or whose
config changed since (the fingerprint differs). ``resume=false`` forces a re-run.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

#: Keys that do not change a result: where files live, how progress is shown, logging, threads.
_IGNORED = {"paths", "logger", "tags", "resume"}
_IGNORED_RUNNER = {"progress_bar", "threads", "num_workers"}


def config_fingerprint(cfg: DictConfig) -> str:
    """A short hash of everything in the resolved config that can change a run's numbers."""
    data = OmegaConf.to_container(cfg, resolve=True)
    data = {key: value for key, value in data.items() if key not in _IGNORED}
    if isinstance(data.get("runner"), dict):
        data["runner"] = {key: value for key, value in data["runner"].items() if key not in _IGNORED_RUNNER}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def completed_metrics(run_folder: Path, fingerprint: str) -> dict[str, Any] | None:
    """The metrics of a finished run with this fingerprint in ``run_folder``, else None."""
    path = run_folder / "metrics.json"
    if not path.is_file():
        return None
    try:
        metrics = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        log.warning("%s is unreadable; re-running", path)
        return None
    if metrics.get("config_fingerprint") != fingerprint:
        log.warning("%s was written by a different config (fingerprint %s, now %s); re-running",
                    path, metrics.get("config_fingerprint"), fingerprint)
        return None
    return metrics
