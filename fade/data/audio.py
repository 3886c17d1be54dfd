"""Reading audio into the one format every model here takes: 16 kHz mono float32."""

from __future__ import annotations

import io
from math import gcd
from pathlib import Path

import numpy as np
import soundfile
from scipy.signal import resample_poly

from fade.errors import DataError

SAMPLE_RATE = 16_000


def to_mono_16k(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """Down-mix ``[frames, channels]`` (or ``[frames]``) audio to mono and resample to 16 kHz.

    Resampling is polyphase with scipy's default Kaiser window, the usual choice for
    band-limited rational-ratio conversion (e.g. 44.1 kHz → 16 kHz is 160/441).
    """
    audio = np.asarray(samples, dtype=np.float32)
    if audio.ndim == 2:
        audio = audio.mean(axis=1, dtype=np.float32)
    elif audio.ndim != 1:
        raise DataError(f"audio must be 1-D or [frames, channels], got shape {audio.shape}")
    if sample_rate != SAMPLE_RATE:
        if sample_rate <= 0:
            raise DataError(f"invalid sample rate {sample_rate}")
        divisor = gcd(SAMPLE_RATE, int(sample_rate))
        audio = resample_poly(audio, SAMPLE_RATE // divisor, int(sample_rate) // divisor).astype(np.float32)
    return np.ascontiguousarray(audio)


def load_audio(source: str | Path | bytes, *, name: str | None = None) -> np.ndarray:
    """Decode a file path or encoded bytes (WAV, FLAC, OGG, ...) to 16 kHz mono float32.

    Raises ``DataError`` naming the file when it is missing, unreadable or empty.
    """
    label = name or (str(source) if not isinstance(source, bytes) else "<in-memory audio>")
    if isinstance(source, (str, Path)) and not Path(source).is_file():
        raise DataError(f"audio file not found: {source}. Check the manifest's path column (paths are relative to the manifest's folder).")
    try:
        handle = io.BytesIO(source) if isinstance(source, bytes) else source
        samples, sample_rate = soundfile.read(handle, dtype="float32", always_2d=False)
    except Exception as exc:  # soundfile raises LibsndfileError, RuntimeError, TypeError...
        raise DataError(f"cannot decode audio {label}: {exc}. Re-encode it as WAV or FLAC.") from exc
    if samples.size == 0:
        raise DataError(f"audio {label} has no samples")
    return to_mono_16k(samples, sample_rate)
