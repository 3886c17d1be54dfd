"""Lightning data module: utterances from a source, decoded to 16 kHz, batched by duration."""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any, Sequence

import lightning as L
import numpy as np
import soundfile
import torch.utils.data

from fade.data.utterance import Utterance
from fade.errors import DataError


def measure_duration(utterance: Utterance) -> float:
    """Seconds of audio, from the header when possible (no full decode)."""
    if utterance.duration is not None:
        return utterance.duration
    if isinstance(utterance.audio, np.ndarray):
        return len(utterance.audio) / 16_000
    try:
        info = soundfile.info(io.BytesIO(utterance.audio) if isinstance(utterance.audio, bytes) else str(utterance.audio))
        return info.frames / info.samplerate
    except Exception:  # not a format soundfile reads from the header: decode it
        return len(utterance.load()) / 16_000


def draw_calibration(utterances: Sequence[Utterance], num_samples: int, seed: int) -> list[Utterance]:
    """A seeded draw of ``num_samples`` utterances; the same seed always gives the same ones.

    The draw depends only on the seed and the sorted ids, not on the order the source lists
    them in, so reordering a manifest does not change a calibration set.
    """
    if num_samples <= 0:
        raise DataError(f"calibration.num_samples must be positive, got {num_samples}")
    if len(utterances) < num_samples:
        raise DataError(
            f"the calibration split has {len(utterances)} utterances but {num_samples} were asked for; "
            f"lower calibration.num_samples or use a larger calibration set."
        )
    ordered = sorted(utterances, key=lambda u: u.id)
    return random.Random(seed).sample(ordered, num_samples)


def draw_dev(pool: Sequence[Utterance], calibration: Sequence[Utterance], num_samples: int, seed: int) -> list[Utterance]:
    """A held-out dev split from the calibration pool, for choosing hyper-parameters (e.g. a global α).

    Excludes every utterance whose normalised text appears in the calibration draw (pools like
    kathleen's hold several takes of one prompt), so no dev prompt was seen in calibration.
    Seeded like the calibration draw, so the same calibration seed always gets the same dev set.
    """
    from fade.eval.wer import normalize

    seen = {normalize(u.text) for u in calibration}
    candidates = sorted((u for u in pool if normalize(u.text) not in seen), key=lambda u: u.id)
    if len(candidates) < num_samples:
        raise DataError(
            f"the calibration pool has {len(candidates)} utterances whose prompts are not in the calibration draw, "
            f"but calibration.dev_samples={num_samples}; lower it or use a larger pool."
        )
    return random.Random(10_007 + seed).sample(candidates, num_samples)


class UtteranceDataset(torch.utils.data.Dataset):
    def __init__(self, utterances: Sequence[Utterance]):
        self.utterances = list(utterances)

    def __len__(self) -> int:
        return len(self.utterances)

    def __getitem__(self, index: int) -> dict[str, Any]:
        utterance = self.utterances[index]
        audio = utterance.load()
        return {"id": utterance.id, "text": utterance.text, "audio": audio, "duration": len(audio) / 16_000}


def collate_utterances(items: list[dict[str, Any]]) -> dict[str, list]:
    """Keep audio as a list of arrays: each family's processor pads in its own way."""
    return {key: [item[key] for item in items] for key in items[0]}


class SpeechDataModule(L.LightningDataModule):
    """Serves one evaluation set, sorted by duration so batches hold similar lengths.

    Sorting longest-first makes the first batch the largest, so an out-of-memory error shows
    up at once, and makes padding waste small for models whose input length varies.
    """

    def __init__(
        self,
        source: Any,
        *,
        batch_size: int = 16,
        num_workers: int = 0,
        limit: int | None = None,
        sort_by_duration: bool = True,
    ):
        super().__init__()
        self.source = source
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.limit = limit
        self.sort_by_duration = sort_by_duration
        self.utterances: list[Utterance] | None = None

    @property
    def name(self) -> str:
        return getattr(self.source, "name", type(self.source).__name__)

    def setup(self, stage: str | None = None) -> None:
        if self.utterances is not None:
            return
        if self.limit is not None and hasattr(self.source, "limit"):
            self.source.limit = self.limit
        utterances = list(self.source.utterances())
        if self.limit is not None:
            utterances = utterances[: self.limit]
        if not utterances:
            raise DataError(f"dataset {self.name!r} is empty (limit={self.limit}).")
        if self.sort_by_duration:
            durations = {u.id: measure_duration(u) for u in utterances}
            utterances.sort(key=lambda u: (-durations[u.id], u.id))
        self.utterances = utterances

    def predict_dataloader(self) -> torch.utils.data.DataLoader:
        self.setup()
        return torch.utils.data.DataLoader(
            UtteranceDataset(self.utterances),
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            collate_fn=collate_utterances,
        )

    test_dataloader = predict_dataloader
