"""Manifests: TSV or JSONL files listing ``id``, ``path``, ``text`` and optionally ``duration``.

Paths are relative to the manifest's folder (or absolute). ``duration_s`` is accepted as an
alias of ``duration`` (the kathleen set uses it).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from fade.data.utterance import Utterance
from fade.errors import DataError

REQUIRED_COLUMNS = ("id", "path", "text")
DURATION_COLUMNS = ("duration", "duration_s")


def _rows(path: Path) -> list[dict]:
    if path.suffix in (".jsonl", ".json"):
        rows = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{number} is not valid JSON: {exc.msg}") from exc
        return rows
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(
                f"manifest {path} lacks column(s) {missing}; its header is {reader.fieldnames}. "
                f"A manifest needs tab-separated columns {list(REQUIRED_COLUMNS)} (+ optional duration)."
            )
        return list(reader)


def read_manifest(path: str | Path, *, check_files: bool = True) -> list[Utterance]:
    """Read a manifest into utterances, checking columns, ids and (by default) that files exist."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"manifest not found: {path}. Pass an existing .tsv or .jsonl file (dataset.source.manifest=...).")
    utterances: list[Utterance] = []
    seen: set[str] = set()
    for number, row in enumerate(_rows(path), start=2):
        missing = [c for c in REQUIRED_COLUMNS if row.get(c) in (None, "")]
        if missing:
            raise DataError(f"manifest {path}, row {number}: empty or missing {missing}")
        utt_id = str(row["id"])
        if utt_id in seen:
            raise DataError(f"manifest {path}, row {number}: duplicate id {utt_id!r}")
        seen.add(utt_id)
        audio_path = Path(row["path"])
        if not audio_path.is_absolute():
            audio_path = path.parent / audio_path
        if check_files and not audio_path.is_file():
            raise DataError(f"manifest {path}, row {number} ({utt_id}): audio file not found: {audio_path}")
        duration = next((row[c] for c in DURATION_COLUMNS if row.get(c) not in (None, "")), None)
        utterances.append(
            Utterance(id=utt_id, text=str(row["text"]), audio=audio_path, duration=float(duration) if duration is not None else None)
        )
    if not utterances:
        raise DataError(f"manifest {path} lists no utterances. Add rows below the header, or point to another manifest.")
    return utterances
