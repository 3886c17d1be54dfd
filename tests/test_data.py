import json

import numpy as np
import pytest
import soundfile

from fade.data.audio import load_audio, to_mono_16k
from fade.data.datamodule import SpeechDataModule, draw_calibration
from fade.data.manifest import read_manifest
from fade.data.sources import HuggingFaceSource, ManifestSource
from fade.errors import DataError
from tests.conftest import KATHLEEN, tone


def test_manifest_reads_rows_and_resolves_relative_paths(tiny_manifest):
    utterances = read_manifest(tiny_manifest)
    assert [u.id for u in utterances] == ["utt0", "utt1", "utt2", "utt3"]
    assert all(u.audio.is_file() and u.audio.parent == tiny_manifest.parent for u in utterances)
    assert utterances[2].duration == 1.5 and utterances[1].text == "hello number 1"


def test_jsonl_manifest(tmp_path, tiny_manifest):
    rows = [{"id": u.id, "path": str(u.audio), "text": u.text} for u in read_manifest(tiny_manifest)]
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert [u.id for u in read_manifest(path)] == [r["id"] for r in rows]


def test_audio_is_16k_mono_whatever_the_input(tiny_manifest):
    for utterance in read_manifest(tiny_manifest):
        audio = utterance.load()
        assert audio.dtype == np.float32 and audio.ndim == 1
        assert abs(len(audio) / 16_000 - utterance.duration) < 1e-3


def test_resampling_keeps_a_tone_at_its_frequency():
    rate = 44_100
    audio = to_mono_16k(tone(1.0, rate, freq=1000.0), rate)
    spectrum = np.abs(np.fft.rfft(audio))
    assert abs(np.argmax(spectrum) * 16_000 / len(audio) - 1000.0) < 2.0


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "manifest not found"),
        ("id\tpath\tduration_s\ttext\n", "lists no utterances"),
        ("id\tfile\ttext\nu1\tx.wav\thi\n", "lacks column"),
        ("id\tpath\ttext\nu1\tmissing.wav\thi\n", "audio file not found"),
        ("id\tpath\ttext\nu1\ta.wav\thi\nu1\ta.wav\tho\n", "duplicate id"),
    ],
)
def test_manifest_errors_name_the_problem(tmp_path, content, message):
    soundfile.write(tmp_path / "a.wav", tone(0.2), 16_000)
    path = tmp_path / "m.tsv"
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataError, match=message):
        read_manifest(path)


def test_corrupt_audio_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.flac"
    bad.write_bytes(b"not audio at all" * 10)
    with pytest.raises(DataError, match="cannot decode audio .*bad.flac"):
        load_audio(bad)


def test_calibration_draw_is_seeded_and_order_independent(tiny_manifest):
    utterances = read_manifest(tiny_manifest)
    first = [u.id for u in draw_calibration(utterances, 2, seed=3)]
    assert first == [u.id for u in draw_calibration(list(reversed(utterances)), 2, seed=3)]
    draws = {tuple(u.id for u in draw_calibration(utterances, 2, seed=s)) for s in range(10)}
    assert len(draws) > 1
    with pytest.raises(DataError, match="has 4 utterances but 5 were asked"):
        draw_calibration(utterances, 5, seed=0)


def test_datamodule_sorts_longest_first_and_batches(tiny_manifest):
    dm = SpeechDataModule(ManifestSource(str(tiny_manifest)), batch_size=3)
    batches = list(dm.predict_dataloader())
    ids = [i for b in batches for i in b["id"]]
    assert ids == ["utt2", "utt0", "utt3", "utt1"]
    assert [len(b["audio"]) for b in batches] == [3, 1]


def test_empty_after_limit_is_an_error(tiny_manifest):
    with pytest.raises(DataError, match="empty"):
        SpeechDataModule(ManifestSource(str(tiny_manifest)), limit=0).setup()


def test_hugging_face_source_with_a_local_dataset(tmp_path):
    datasets = pytest.importorskip("datasets")
    paths = []
    for index, rate in enumerate([16_000, 8_000]):
        path = tmp_path / f"a{index}.flac"
        soundfile.write(path, tone(0.5 + index, rate), rate)
        paths.append(str(path))
    local = datasets.Dataset.from_dict({"audio": paths, "text": ["one", "two"], "id": ["x", "y"]}).cast_column(
        "audio", datasets.Audio()
    )
    utterances = HuggingFaceSource(local, audio_column="audio", text_column="text", id_column="id").utterances()
    assert [u.id for u in utterances] == ["x", "y"] and [u.text for u in utterances] == ["one", "two"]
    assert abs(len(utterances[1].load()) / 16_000 - 1.5) < 1e-3
    with pytest.raises(DataError, match="no column 'sentence'"):
        HuggingFaceSource(local, text_column="sentence").utterances()


def test_hub_dataset_while_offline_says_so(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match="Hub is unreachable.*synthetic"):
        HuggingFaceSource("openslr/librispeech_asr", split="test").utterances()


@pytest.mark.skipif(not (KATHLEEN / "test.tsv").is_file(), reason="kathleen dataset not beside the repo")
def test_kathleen_splits_are_disjoint_and_complete():
    test, calib = read_manifest(KATHLEEN / "test.tsv"), read_manifest(KATHLEEN / "calib.tsv")
    assert len(test) == 593 and len(calib) == 703
    assert not {u.text for u in test} & {u.text for u in calib}
