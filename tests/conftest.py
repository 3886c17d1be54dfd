"""Shared fixtures: small audio and manifests made on the fly, an isolated cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile

REPO = Path(__file__).resolve().parent.parent
KATHLEEN = Path(__import__("os").environ.get("FADE_DATASETS", REPO.parent / "shared" / "datasets")) / "kathleen"


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Each test session writes its cache under pytest's temp folder, never the user's.

    Converted models and rendered speech are shared across the tests of one session.
    """
    monkeypatch.setenv("FADE_CACHE", str(tmp_path_factory.getbasetemp() / "fade-cache"))


def tone(seconds: float, rate: int = 16_000, freq: float = 440.0, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    noise = np.random.default_rng(seed).normal(0, 0.01, t.shape)
    return (0.3 * np.sin(2 * np.pi * freq * t) + noise).astype(np.float32)


@pytest.fixture
def tiny_manifest(tmp_path) -> Path:
    """Four short FLAC/WAV files (two at 44.1 kHz stereo) and a TSV manifest listing them."""
    rows = ["id\tpath\tduration_s\ttext"]
    for index, (seconds, rate, channels) in enumerate([(1.0, 16_000, 1), (0.5, 44_100, 2), (1.5, 22_050, 1), (0.7, 16_000, 1)]):
        audio = tone(seconds, rate, 300 + 100 * index, seed=index)
        if channels == 2:
            audio = np.stack([audio, audio], axis=1)
        name = f"clip{index}.{'flac' if index % 2 else 'wav'}"
        soundfile.write(tmp_path / name, audio, rate)
        rows.append(f"utt{index}\t{name}\t{seconds}\thello number {index}")
    path = tmp_path / "manifest.tsv"
    path.write_text("\n".join(rows) + "\n")
    return path
