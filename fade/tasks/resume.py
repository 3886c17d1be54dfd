"""Resumable runs: a run folder whose metrics.json is complete for the same config is not re-run.

Every task writes ``metrics.json`` last and atomically, with the fingerprint of the config that
produced it. Re-running a sweep with the same command therefore skips the runs that finished and
re-runs the ones that crashed or never started (their folders have no metrics.json), or whose
config changed since (the fingerprint differs). ``resume=false`` forces a re-run.
"""

from __future__ import annotations

import functools
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


def _root_placeholders(cfg: DictConfig) -> list[tuple[str, str]]:
    """``(resolved folder, placeholder)`` for every ``paths.*`` folder and the repository, longest first."""
    from fade.config import repo_root

    roots = {str(value): f"${{paths.{key}}}" for key, value in (OmegaConf.to_container(cfg.paths, resolve=True) or {}).items()
             if isinstance(value, str) and value} if "paths" in cfg else {}
    roots.setdefault(repo_root(), "${fade_repo:}")
    return sorted(roots.items(), key=lambda item: -len(item[0]))


def _relative_to_roots(tree: Any, roots: list[tuple[str, str]]) -> Any:
    if isinstance(tree, dict):
        return {key: _relative_to_roots(value, roots) for key, value in tree.items()}
    if isinstance(tree, list):
        return [_relative_to_roots(value, roots) for value in tree]
    if isinstance(tree, str):
        for folder, placeholder in roots:
            if tree == folder or tree.startswith(folder + "/"):
                return placeholder + tree[len(folder):]
    return tree


def result_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config without the keys that cannot change a run's numbers (stored in metrics.json).

    Paths under a ``paths.*`` folder or the checkout are written relative to it
    (``${paths.datasets}/kathleen/test.tsv``): the same run made in another clone, or committed and
    read back on another machine, then has the same config and is not re-run.
    """
    data = OmegaConf.to_container(cfg, resolve=True)
    data = {key: value for key, value in data.items() if key not in _IGNORED}
    if isinstance(data.get("runner"), dict):
        data["runner"] = {key: value for key, value in data["runner"].items() if key not in _IGNORED_RUNNER}
    return _relative_to_roots(data, _root_placeholders(cfg))


def config_fingerprint(cfg: DictConfig) -> str:
    """A short hash of everything in the resolved config that can change a run's numbers."""
    return hashlib.sha256(json.dumps(result_config(cfg), sort_keys=True, default=str).encode()).hexdigest()[:16]


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``: config trees compared key by key."""
    if isinstance(tree, dict):
        flat: dict[str, Any] = {}
        for key, value in tree.items():
            flat.update(flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: tree}


@functools.lru_cache(maxsize=1)
def _schema():
    from fade.config import FadeConfig

    return OmegaConf.structured(FadeConfig)


def schema_default(key: str) -> Any:
    """The schema's default of a flattened config key (None for keys it does not type)."""
    try:
        return OmegaConf.select(_schema(), key, throw_on_missing=False)
    except Exception:  # a key under an untyped node (logger, sources)
        return None


def same_result_config(stored: dict[str, Any], current: dict[str, Any]) -> bool:
    """True when a stored run answers the current config.

    Options added to fade after the run was made are ignored when the current config leaves them at
    their schema default (the run behaved that way). Every other difference means re-running.
    """
    old, new = flatten(stored), flatten(current)
    for key, value in new.items():
        if key in old:
            if old[key] != value:
                return False
        elif value != schema_default(key):
            return False
    return all(key in new for key in old)


def completed_metrics(run_folder: Path, fingerprint: str, current: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The metrics of a finished run of this config in ``run_folder``, else None."""
    path = run_folder / "metrics.json"
    if not path.is_file():
        return None
    try:
        metrics = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        log.warning("%s is unreadable; re-running", path)
        return None
    if metrics.get("config_fingerprint") == fingerprint:
        return metrics
    if current is not None and isinstance(metrics.get("config"), dict) and same_result_config(metrics["config"], current):
        return metrics
    log.warning("%s was written by a different config (fingerprint %s, now %s); re-running",
                path, metrics.get("config_fingerprint"), fingerprint)
    return None
