"""Full-precision results are computed once per model, dataset and decoding settings.

A sweep quantizes the same model dozens of times; its full-precision WER does not change.
The cache key hashes everything that can change a full-precision transcript: the weights'
revision and dtype, the dataset config, the batch size (batched float arithmetic), beams,
token caps and the device type.

Each run folder's copy carries the key (``fp_cache_key``), so a fresh machine whose cache is
empty takes the result from a finished run of the same sweep (e.g. a committed sweep folder)
instead of recomputing it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any, Callable, Iterable

from fade.cache import atomic_directory, cache_root

log = logging.getLogger(__name__)


def _portable(value: Any) -> Any:
    """Replace paths of existing files (manifests) by a hash of their content.

    The same manifest reached through another checkout (``/a/../shared/x.tsv`` vs
    ``/b/../shared/x.tsv``) then hits the same entry, and an edited manifest misses it.
    """
    if isinstance(value, dict):
        return {key: _portable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_portable(item) for item in value]
    if isinstance(value, str) and ("/" in value or value.endswith((".tsv", ".jsonl", ".csv"))):
        path = Path(value).expanduser()
        if path.is_file():
            return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    return value


def fp_cache_key(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(_portable(parts), sort_keys=True, default=str).encode()).hexdigest()[:16]


_RESULT_FILES = ("hypotheses.jsonl", "metrics.json")


def _finished_copy(key: str, candidates: Iterable[Path]) -> Path | None:
    """The first candidate folder holding a complete copy of the result with this key."""
    for folder in candidates:
        marker = folder / "fp_cache_key"
        if marker.is_file() and marker.read_text().strip() == key and all((folder / name).is_file() for name in _RESULT_FILES):
            return folder
    return None


def cached_fp_evaluation(parts: dict[str, Any], output_dir: Path, compute: Callable[[Path], dict[str, Any]],
                         candidates: Iterable[Path] = ()) -> dict[str, Any]:
    """Copy a cached full-precision result into ``output_dir``, computing it on a miss.

    On a miss, a copy with the same key among ``candidates`` (the same folder of the sweep's other
    runs) fills the cache first.
    """
    key = fp_cache_key(parts)
    entry = cache_root() / "fp_eval" / key
    if not (entry / "metrics.json").is_file():
        with atomic_directory(entry) as tmp:
            found = _finished_copy(key, candidates)
            if found is not None:
                log.info("full-precision results reused from %s (same model, data and decoding)", found)
                for name in _RESULT_FILES:
                    shutil.copyfile(found / name, tmp / name)
            else:
                compute(tmp)
            (tmp / "key.json").write_text(json.dumps(parts, indent=2, default=str) + "\n")
    output_dir.mkdir(parents=True, exist_ok=True)
    for name in _RESULT_FILES:
        shutil.copyfile(entry / name, output_dir / name)
    (output_dir / "fp_cache_key").write_text(key + "\n")
    metrics = json.loads((entry / "metrics.json").read_text())
    metrics["fp_cache"] = str(entry)
    return metrics
