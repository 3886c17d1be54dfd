"""Where utterances come from. Each source is a small class built by Hydra from ``_target_``.

To add a source, write a class with a ``name`` and an ``utterances()`` method returning
``list[Utterance]`` and point a config's ``_target_`` at it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fade.data.manifest import read_manifest
from fade.data.utterance import Utterance
from fade.errors import DataError

#: Dataset configs that run without network access, for error messages.
OFFLINE_DATASETS = ("synthetic", "kathleen_test", "kathleen_calib")


class ManifestSource:
    """Utterances listed in a TSV/JSONL manifest (see ``fade.data.manifest``)."""

    def __init__(self, manifest: str, name: str | None = None):
        self.manifest = Path(manifest).expanduser()
        self.name = name or self.manifest.stem

    def utterances(self) -> list[Utterance]:
        return read_manifest(self.manifest)


class ListSource:
    """Utterances already in memory (a dev split drawn from another source)."""

    def __init__(self, utterances: list[Utterance], name: str):
        self._utterances = list(utterances)
        self.name = name

    def utterances(self) -> list[Utterance]:
        return list(self._utterances)


class SyntheticSource:
    """English speech rendered offline by piper from fade's own sentence list (cached).

    ``split`` keeps calibration and evaluation apart: ``test`` is every even-numbered
    sentence, ``calib`` every odd-numbered one, ``all`` both.
    """

    SPLITS = ("test", "calib", "all")

    def __init__(self, split: str = "test", voice: str = "joe", name: str | None = None):
        if split not in self.SPLITS:
            raise DataError(f"unknown synthetic split {split!r}; use one of {', '.join(self.SPLITS)}")
        self.split = split
        self.voice = voice
        self.name = name or f"synthetic-{split}"

    def utterances(self) -> list[Utterance]:
        from fade.data.synthetic import render_synthetic_corpus

        utterances = read_manifest(render_synthetic_corpus(voice=self.voice))
        if self.split == "all":
            return utterances
        parity = 0 if self.split == "test" else 1
        return [u for index, u in enumerate(utterances) if index % 2 == parity]


class HuggingFaceSource:
    """A Hugging Face ``datasets`` split, by hub id (or an in-memory ``datasets.Dataset``).

    Audio is read undecoded (``Audio(decode=False)``) and decoded by fade itself, so no
    audio backend beyond soundfile is needed and resampling is the same for every source.
    """

    def __init__(
        self,
        path: str | Any,
        split: str = "test",
        config: str | None = None,
        audio_column: str = "audio",
        text_column: str = "text",
        id_column: str | None = "id",
        streaming: bool = False,
        revision: str | None = None,
        name: str | None = None,
        limit: int | None = None,
    ):
        self.path = path
        self.split = split
        self.config = config
        self.audio_column = audio_column
        self.text_column = text_column
        self.id_column = id_column
        self.streaming = streaming
        self.revision = revision
        self.name = name or (path if isinstance(path, str) else "in-memory")
        #: Read at most this many rows (streaming stops early); the data module may lower it.
        self.limit = limit

    def _load(self):
        import datasets

        if not isinstance(self.path, str):
            return self.path
        if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
            raise DataError(self._offline_message("offline mode is set (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE)"))
        try:
            return datasets.load_dataset(
                self.path, self.config, split=self.split, streaming=self.streaming, revision=self.revision
            )
        except (ConnectionError, OSError) as exc:
            raise DataError(self._offline_message(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)) from exc

    def _offline_message(self, reason: str) -> str:
        return (
            f"cannot load Hugging Face dataset {self.path!r} (config {self.config!r}, split {self.split!r}): "
            f"the Hugging Face Hub is unreachable ({reason}). Offline datasets: {', '.join(OFFLINE_DATASETS)} "
            f"(e.g. dataset=synthetic), or a local manifest (dataset=manifest dataset.source.manifest=/path/file.tsv)."
        )

    def utterances(self) -> list[Utterance]:
        import datasets

        data = self._load()
        for column in (self.audio_column, self.text_column):
            if column not in (data.column_names or []):
                raise DataError(
                    f"dataset {self.name!r} has no column {column!r}; its columns are {data.column_names}. "
                    f"Set dataset.source.audio_column / text_column."
                )
        data = data.cast_column(self.audio_column, datasets.Audio(decode=False))
        utterances: list[Utterance] = []
        for index, row in enumerate(data):
            if self.limit is not None and index >= self.limit:
                break
            audio = row[self.audio_column]
            payload = audio.get("bytes") or audio.get("path")
            if payload is None:
                raise DataError(f"dataset {self.name!r}, row {index}: audio has neither bytes nor a path")
            utt_id = str(row[self.id_column]) if self.id_column and self.id_column in row else f"{self.split}-{index:06d}"
            audio_ref = payload if isinstance(payload, bytes) else Path(payload)
            utterances.append(Utterance(id=utt_id, text=str(row[self.text_column]), audio=audio_ref))
        if not utterances:
            raise DataError(f"dataset {self.name!r} split {self.split!r} yielded no utterances")
        return utterances
