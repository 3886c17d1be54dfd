"""Shared fixtures: small audio and manifests made on the fly, an isolated cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile

REPO = Path(__file__).resolve().parent.parent
KATHLEEN = Path(__import__("os").environ.get("FADE_DATASETS", REPO.parent / "shared" / "datasets")) / "kathleen"


def import_bench(name: str):
    """experiments/bench/<name>.py as a module; the folder is on sys.path while it loads, since the
    scripts import their siblings (peers_common, peers.rss) by plain name."""
    import importlib
    import sys

    bench = str(REPO / "experiments" / "bench")
    sys.path.insert(0, bench)
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(bench)


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
    return write_tiny_manifest(tmp_path)


def write_tiny_manifest(folder: Path) -> Path:
    """The ``tiny_manifest`` fixture's clips and manifest, written into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["id\tpath\tduration_s\ttext"]
    for index, (seconds, rate, channels) in enumerate([(1.0, 16_000, 1), (0.5, 44_100, 2), (1.5, 22_050, 1), (0.7, 16_000, 1)]):
        audio = tone(seconds, rate, 300 + 100 * index, seed=index)
        if channels == 2:
            audio = np.stack([audio, audio], axis=1)
        name = f"clip{index}.{'flac' if index % 2 else 'wav'}"
        soundfile.write(folder / name, audio, rate)
        rows.append(f"utt{index}\t{name}\t{seconds}\thello number {index}")
    path = folder / "manifest.tsv"
    path.write_text("\n".join(rows) + "\n")
    return path


def write_tone_manifest(folder: Path, count: int) -> Path:
    """``count`` short tone clips and a TSV manifest listing them (texts differ per clip)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["id\tpath\tduration_s\ttext"]
    for index in range(count):
        seconds = 0.5 + 0.25 * (index % 4)
        soundfile.write(folder / f"clip{index}.wav", tone(seconds, freq=250 + 60 * index, seed=index), 16_000)
        rows.append(f"utt{index}\tclip{index}.wav\t{seconds}\thello number {index} of {count}")
    path = folder / "manifest.tsv"
    path.write_text("\n".join(rows) + "\n")
    return path


#: The sweep of ``random_sweep``: 2 models × 2 methods × 2 calibration seeds on random-init configs.
RANDOM_SWEEP = ["model=whisper_random,moonshine_random", "method=gptq,fade", "calibration.seed=0,1"]


def random_sweep_command(manifest: Path, sweep: Path) -> list[str]:
    """``python -m fade -m ...`` for the 8-run sweep of RANDOM_SWEEP on a tone manifest."""
    import sys

    return [sys.executable, "-m", "fade", "-m", *RANDOM_SWEEP, "dataset=manifest", f"dataset.source.manifest={manifest}",
            "dataset.name=tones", "calibration=kathleen_calib", f"calibration.source.manifest={manifest}",
            "calibration.name=tones", "calibration.num_samples=3", "calibration.batch_size=3", "bits=w4",
            "runner.progress_bar=false", "runner.threads=1", f"hydra.sweep.dir={sweep}",
            # folder names from the swept keys only (the fixed ones above would make them long)
            "hydra.job.config.override_dirname.exclude_keys=[dataset.source.manifest,dataset.name,calibration,"
            "calibration.source.manifest,calibration.name,calibration.num_samples,calibration.batch_size,bits,"
            "runner.progress_bar,runner.threads]"]


def run_command(command: list[str], tmp_root: Path, timeout: int = 900):
    import os
    import subprocess

    env = {**os.environ, "PYTHONUNBUFFERED": "1", "FADE_CACHE": str(tmp_root / "fade-cache")}
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def random_sweep(tmp_path_factory) -> Path:
    """One Hydra multirun through the real CLI, shared by the aggregation and dashboard tests."""
    base = tmp_path_factory.mktemp("random_sweep")
    manifest = write_tone_manifest(base / "audio", 6)
    sweep = base / "multirun"
    result = run_command(random_sweep_command(manifest, sweep), tmp_path_factory.getbasetemp())
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return sweep


def nudge_weights(loaded, scale: float) -> None:
    """Multiply every parameter by 1 + scale·N(0, 1) (seeded): at 1e-6, a summation-order-sized change."""
    import torch

    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in loaded.model.parameters():
            parameter.mul_(1 + scale * torch.randn(parameter.shape, generator=generator).to(parameter.device))


def calibrate_following(reference, calibrator, utterances, monkeypatch):
    """Run ``calibrator``, solving every Linear for real but carrying on with ``reference``'s weights.

    Sequential GPTQ is chaotic on the test clips' ill-conditioned statistics: a relative 1e-6
    nudge to the weights (the size of a change in summation order) flips roundings that every
    later layer inherits, so two correct runs drift apart layer by layer (later layers keep as few
    as 6 % of their entries; experiments/device/cuda_agreement.py). Putting the reference's
    quantized weight in place after each solve gives both runs the same inputs at every layer, so
    each layer's own result can be compared. Returns the run and its own solves, by layer name.
    """
    import dataclasses

    import fade.calibration.sequential as sequential

    solve = sequential.process_linear
    own = {}

    def following(name, weight, stats, settings, **kwargs):
        result, record = solve(name, weight, stats, settings, **kwargs)
        own[name] = result
        kept = reference.quantized[name].weight_q.to(result.weight_q.device)
        return dataclasses.replace(result, weight_q=kept), record

    monkeypatch.setattr(sequential, "process_linear", following)
    try:
        return calibrator.run(utterances), own
    finally:
        monkeypatch.setattr(sequential, "process_linear", solve)


def assert_layers_agree(reference, other, own) -> None:
    """Every Linear solved the same way as in ``reference`` (``other`` ran calibrate_following).

    A 1e-6 nudge leaves at least 99.3 % of each layer's entries equal and moves no layer's output
    error by more than 1.2 %; changing QEP's α from 0.5 to 0.4 leaves 9-13 % equal somewhere.
    """
    import torch

    assert [r["name"] for r in other.records] == [r["name"] for r in reference.records]
    assert [r["tokens"] for r in other.records] == [r["tokens"] for r in reference.records]
    for ours, theirs in zip(reference.records, other.records):
        name = ours["name"]
        expected = reference.quantized[name].weight_q
        same = torch.isclose(own[name].weight_q.to(expected.device), expected, rtol=1e-4, atol=1e-6).float().mean().item()
        assert same > 0.98, f"{name}: only {same:.1%} of entries agree"
        assert theirs["err_final"] == pytest.approx(ours["err_final"], rel=0.05), name
