"""The unit every dataset yields: an utterance's id, reference text, and where its audio is."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fade.data.audio import load_audio


@dataclass(frozen=True)
class Utterance:
    """One labelled utterance. Audio is decoded lazily so a dataset can be listed cheaply."""

    id: str
    text: str
    #: A file path, or encoded bytes (from a Hugging Face dataset), or decoded 16 kHz samples.
    audio: Path | bytes | np.ndarray
    #: Seconds; ``None`` when the source does not say (then it is measured on decode).
    duration: float | None = None

    def load(self) -> np.ndarray:
        if isinstance(self.audio, np.ndarray):
            return self.audio
        return load_audio(self.audio, name=f"{self.id} ({self.audio if isinstance(self.audio, Path) else 'bytes'})")
