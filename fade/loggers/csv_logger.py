"""``logger=csv``: the config, per-layer records and summary as plain files, no tracker needed.

Files (under ``<run folder>/logs/``, each written atomically):
- ``config.yaml``: the resolved config;
- ``layers.jsonl``: one JSON object per quantized Linear (exact types);
- ``layers.csv``: the same records as columns (known columns first; lists/dicts as JSON text);
- ``summary.json``: the final metrics.

:func:`read_layers_csv` parses ``layers.csv`` back into typed records.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Sequence

import yaml

from fade.cache import atomic_write_json, atomic_write_text
from fade.loggers.common import layer_columns, plain, run_folder


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)  # shortest text that parses back to the same float
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, default=str)
    return value


def records_to_csv(records: Sequence[dict[str, Any]]) -> str:
    columns = layer_columns(records, with_index=False)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({k: _cell(record.get(k)) for k in columns})
    return buffer.getvalue()


def parse_cell(text: str) -> Any:
    """Inverse of the CSV encoding: '' → None, ints, floats, booleans, JSON lists/dicts, else text."""
    if text == "":
        return None
    if text in ("True", "False"):
        return text == "True"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    if text[:1] in "[{":
        try:
            return json.loads(text)
        except ValueError:
            pass
    return text


def read_layers_csv(path: str | Path) -> list[dict[str, Any]]:
    """``layers.csv`` back as records; cells that were empty (missing or None) come back as None."""
    with open(path, newline="", encoding="utf-8") as handle:
        return [{k: parse_cell(v) for k, v in row.items()} for row in csv.DictReader(handle)]


class CSVLogger:
    """Writes what the W&B logger would log, as files under ``<run folder>/<subdir>/``.

    Args:
        dir: folder for the files' parent; default: the Hydra run folder (cwd outside Hydra).
        subdir: folder under ``dir`` (``logs``).
    """

    def __init__(self, dir: str | None = None, subdir: str = "logs"):
        self.folder = run_folder(dir) / subdir if subdir else run_folder(dir)
        self.records: list[dict[str, Any]] = []

    def log_config(self, config: dict[str, Any]) -> None:
        text = yaml.safe_dump(plain(config), sort_keys=False, allow_unicode=True)
        atomic_write_text(self.folder / "config.yaml", text)

    def log_layers(self, records: Sequence[dict[str, Any]]) -> None:
        # Repeated calls accumulate: both files always hold every record logged so far.
        self.records.extend(dict(r) for r in records)
        atomic_write_text(self.folder / "layers.jsonl", "".join(json.dumps(r, default=str) + "\n" for r in self.records))
        atomic_write_text(self.folder / "layers.csv", records_to_csv(self.records))

    def log_metrics(self, metrics: dict[str, Any]) -> None:
        atomic_write_json(self.folder / "summary.json", metrics)

    def finish(self) -> None:
        pass
