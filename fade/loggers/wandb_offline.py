"""Read an offline W&B run back without the network (and without ``wandb sync``).

wandb ≥ 0.18 writes each run's transaction log as ``wandb/offline-run-*/run-<id>.wandb``: a 7-byte
header (``:W&B``, magic 0xBEE1, version 0), then LevelDB-log framing (32 KiB blocks; each chunk has
a 7-byte header: CRC32C, little-endian length, type FULL/FIRST/MIDDLE/LAST) around serialized
``wandb_internal_pb2.Record`` protobufs. The Python ``datastore`` reader of older releases is gone
(the writer now lives in the Go ``wandb-core``), so this module reads the framing itself and parses
the records with the protobuf classes wandb still ships.

Tables logged with ``run.log`` appear in the history as a reference (``_type: table-file``, ``path``)
to a JSON file under the run's ``files/`` folder; :func:`load_offline_run` resolves them.
"""

from __future__ import annotations

import json
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

_HEADER = b":W&B"
_BLOCK = 32 * 1024
_CHUNK_HEADER = 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def iter_raw_records(path: str | Path) -> Iterator[bytes]:
    """The raw protobuf bytes of each record of a ``.wandb`` file, in order."""
    data = Path(path).read_bytes()
    if data[:4] != _HEADER:
        raise ValueError(f"{path}: not a W&B transaction log (header {data[:7]!r})")
    pos, pending = 7, None
    while pos + _CHUNK_HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _CHUNK_HEADER:  # trailer of a block: zero padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + _CHUNK_HEADER])
        pos += _CHUNK_HEADER
        if pos + length > len(data):  # torn write: the file is still being written
            return
        chunk = data[pos:pos + length]
        pos += length
        if kind == _FULL:
            yield chunk
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE and pending is not None:
            pending += chunk
        elif kind == _LAST and pending is not None:
            yield pending + chunk
            pending = None
        elif kind == 0 and length == 0:  # zero padding before the end of a block
            pos += _BLOCK - pos % _BLOCK if pos % _BLOCK else 0
        # anything else (a torn write at the end) is skipped


def iter_records(path: str | Path):
    """Each record of a ``.wandb`` file as a ``wandb.proto.wandb_internal_pb2.Record``."""
    from wandb.proto import wandb_internal_pb2 as pb

    for raw in iter_raw_records(path):
        record = pb.Record()
        record.ParseFromString(raw)
        yield record


def _set(target: dict[str, Any], item: Any) -> None:
    """Apply one config/summary/history item (``key`` or ``nested_key`` + ``value_json``)."""
    keys = list(item.nested_key) or [item.key]
    node = target
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = json.loads(item.value_json)


def _remove(target: dict[str, Any], item: Any) -> None:
    keys = list(item.nested_key) or [item.key]
    node = target
    for key in keys[:-1]:
        node = node.get(key, {})
    node.pop(keys[-1], None)


@dataclass
class OfflineRun:
    """What an offline run recorded: identity, config, history rows, final summary, tables."""

    folder: Path
    run_id: str = ""
    project: str = ""
    entity: str = ""
    name: str = ""
    group: str = ""
    job_type: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    exit_code: int | None = None

    def table(self, key: str) -> dict[str, Any]:
        """A logged table (from the summary, i.e. its last value) as ``{"columns": [...], "data": [[...]]}``."""
        ref = self.summary.get(key)
        if ref is None:
            for row in reversed(self.history):
                if key in row:
                    ref = row[key]
                    break
        if not isinstance(ref, dict) or "path" not in ref:
            raise KeyError(f"no table {key!r} in this run (keys: {sorted(self.summary)})")
        return json.loads((self.folder / "files" / ref["path"]).read_text())

    def table_records(self, key: str) -> list[dict[str, Any]]:
        table = self.table(key)
        return [dict(zip(table["columns"], row)) for row in table["data"]]


def find_run_files(root: str | Path) -> list[Path]:
    """Every ``run-*.wandb`` under ``root`` (a run folder, its ``wandb/`` folder or one run's folder)."""
    root = Path(root)
    if root.is_file():
        return [root]
    # latest-run is a symlink to the newest run folder: skip it so that each run is listed once
    return sorted(p for p in root.glob("**/run-*.wandb") if "latest-run" not in p.parts)


def load_offline_run(path: str | Path, wait: float = 0.0) -> OfflineRun:
    """Parse one run's ``.wandb`` file (or the only one under a folder) into an :class:`OfflineRun`.

    ``run.finish()`` returns before ``wandb-core`` has flushed and closed the file (the service
    closes the stream asynchronously; ``wandb.teardown()`` waits for it). With ``wait`` > 0, poll up
    to that many seconds until the run's exit record is in the file.
    """
    deadline = time.monotonic() + wait
    while True:
        files = find_run_files(path)
        if len(files) == 1:
            run = _parse(files[0])
            if run.exit_code is not None or time.monotonic() >= deadline:
                return run
        elif time.monotonic() >= deadline:
            raise FileNotFoundError(f"expected one run-*.wandb under {path}, found {len(files)}")
        time.sleep(0.05)


def _parse(path: Path) -> OfflineRun:
    run = OfflineRun(folder=path.parent)
    for record in iter_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run.run_id, run.project, run.entity = r.run_id, r.project, r.entity
            run.name, run.group, run.job_type, run.tags = r.display_name, r.run_group, r.job_type, list(r.tags)
            for item in r.config.update:
                _set(run.config, item)
        elif kind == "config":
            for item in record.config.update:
                _set(run.config, item)
            for item in record.config.remove:
                _remove(run.config, item)
        elif kind == "history":
            row: dict[str, Any] = {}
            for item in record.history.item:
                _set(row, item)
            run.history.append(row)
        elif kind == "summary":
            for item in record.summary.update:
                _set(run.summary, item)
            for item in record.summary.remove:
                _remove(run.summary, item)
        elif kind == "files":
            run.files += [f.path for f in record.files.files]
        elif kind == "artifact":
            a = record.artifact
            run.artifacts.append({"type": a.type, "name": a.name, "paths": [c.path for c in a.manifest.contents]})
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
    return run
