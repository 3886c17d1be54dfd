"""The evaluation runner on randomly initialised models of every family (fast, offline)."""

import json

import pytest
import torch

from fade.data.datamodule import SpeechDataModule
from fade.data.sources import ManifestSource
from fade.eval.runner import evaluate
from fade.models import get_family, load_model
from fade.models.generation import PerRowLengthCap

FAMILIES = ["whisper", "moonshine", "qwen3_asr"]


@pytest.mark.parametrize("family", FAMILIES)
def test_random_model_runs_through_the_runner(family, tiny_manifest, tmp_path):
    loaded = load_model(family, "random", seed=0)
    dm = SpeechDataModule(ManifestSource(str(tiny_manifest)), batch_size=2)
    metrics = evaluate(get_family(family), loaded, dm, tmp_path, device=torch.device("cpu"), progress_bar=False,
                       max_new_tokens_per_second=4.0, max_new_tokens_floor=2)
    rows = [json.loads(line) for line in (tmp_path / "hypotheses.jsonl").read_text().splitlines()]
    assert metrics["utterances"] == len(rows) == 4
    assert metrics["words"] == 12 and metrics["model_family"] == family
    assert {r["id"] for r in rows} == {"utt0", "utt1", "utt2", "utt3"}
    # Caps follow the rule recorded in the metrics.
    assert all(r["token_cap"] == int(-(-4.0 * r["duration"] // 1)) + 2 for r in rows)
    assert metrics["capped_utterances"] == sum(r["capped"] for r in rows)
    errors = sum(r["substitutions"] + r["deletions"] + r["insertions"] for r in rows)
    assert metrics["wer"] == pytest.approx(errors / metrics["words"])


@pytest.mark.parametrize("family", FAMILIES)
def test_random_models_are_seeded(family):
    a = load_model(family, "random", seed=1).model.state_dict()
    b = load_model(family, "random", seed=1).model.state_dict()
    c = load_model(family, "random", seed=2).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


def test_length_cap_forces_eos_per_row():
    cap = PerRowLengthCap([1, 3], eos_token_id=0)
    scores = torch.zeros(2, 5)
    prompt = torch.tensor([[7, 7], [7, 7]])
    assert torch.equal(cap(prompt, scores), scores)  # nothing generated yet
    one_new = torch.tensor([[7, 7, 4], [7, 7, 4]])
    out = cap(one_new, scores)
    assert out[0].argmax() == 0 and torch.isinf(out[0, 1:]).all()
    assert torch.equal(out[1], scores[1])
    assert cap.hit.tolist() == [True, False]


def test_unknown_family_and_source_are_named():
    from fade.errors import ModelSourceError

    with pytest.raises(ModelSourceError, match="unknown model family 'wav2vec'"):
        load_model("wav2vec", "random")
    with pytest.raises(ModelSourceError, match="unknown model.source 'ftp'"):
        load_model("whisper", "ftp")
    with pytest.raises(ModelSourceError, match="unknown offline model package 'whisper-huge'"):
        load_model("whisper", "package", "whisper-huge")


def test_hub_id_while_offline_names_offline_sources(monkeypatch):
    from fade.errors import ModelSourceError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelSourceError, match="hub is unreachable.*whisper-tiny.en"):
        load_model("whisper", "hub", "openai/whisper-small")


@pytest.mark.slow  # spawns two processes that each import torch and transformers
def test_two_evaluation_processes_transcribe_every_utterance_once(tiny_manifest, tmp_path):
    # Lightning spawns two CPU processes (gloo); each transcribes a share, the caller merges them.
    loaded = load_model("whisper", "random", seed=0)
    results = {}
    for devices in (1, 2):
        dm = SpeechDataModule(ManifestSource(str(tiny_manifest)), batch_size=1)  # batch 1: shares cannot change the arithmetic
        metrics = evaluate(get_family("whisper"), loaded, dm, tmp_path / str(devices), device=torch.device("cpu"), devices=devices,
                           progress_bar=False, max_new_tokens_per_second=4.0, max_new_tokens_floor=2)
        results[devices] = (metrics, (tmp_path / str(devices) / "hypotheses.jsonl").read_text())
    (one, one_rows), (two, two_rows) = results[1], results[2]
    assert two["utterances"] == one["utterances"] == 4 and two["wer"] == one["wer"]
    assert two_rows == one_rows


def test_runner_tf32_switches_cublas_and_cudnn_together():
    # PyTorch's own defaults differ per op (cuBLAS float32 products IEEE, cuDNN convolutions TF32);
    # runner.tf32 sets both, so a GPU's calibration statistics are IEEE float32 unless asked.
    from omegaconf import OmegaConf

    from fade.process import tf32
    from fade.tasks.common import setup_torch

    with tf32(False):  # whatever the test sets, the flags are restored afterwards
        for wanted in (True, False):
            cfg = OmegaConf.create({"seed": 0, "runner": {"device": "cpu", "threads": None, "tf32": wanted}})
            assert setup_torch(cfg) == torch.device("cpu")
            assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (wanted, wanted)
