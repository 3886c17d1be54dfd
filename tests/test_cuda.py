"""The CUDA path of calibration and evaluation, checked against the CPU path (skipped without a GPU).

Calibration keeps its statistics where the model is, so on a GPU every Hessian, cross term and
solve runs there; the results must agree with the CPU run up to floating-point reordering
(cuBLAS and cuDNN sum in another order, so GPTQ may round a few weights the other way).
"""

import json
import sys

import pytest
import torch

from conftest import run_command  # the CLI in a subprocess, as a user runs it
from fade.calibration.layer import ConstantAlpha, QuantizerSettings
from fade.calibration.sequential import SequentialCalibrator
from fade.data.datamodule import SpeechDataModule
from fade.data.manifest import read_manifest
from fade.data.sources import ManifestSource
from fade.eval.runner import evaluate
from fade.models import get_family, load_model
from fade.quant import GridSpec

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

FAMILIES = ["whisper", "moonshine", "qwen3_asr"]


class DeviceRecordingAlpha(ConstantAlpha):
    """QEP's constant α that also notes where each layer's statistics live."""

    def __init__(self, value: float):
        super().__init__(value)
        self.devices: set[str] = set()

    def alpha(self, name, weight, stats):
        self.devices |= {stats.hessian_q.device.type, stats.cross.device.type, weight.device.type}
        return super().alpha(name, weight, stats)


def _calibrate(family: str, utterances, device: str):
    loaded = load_model(family, "random", seed=0, device=device)
    policy = DeviceRecordingAlpha(0.5)
    settings = QuantizerSettings("gptq", GridSpec(bits=4, group_size=32))
    result = SequentialCalibrator(get_family(family), loaded, settings, policy=policy, batch_size=2).run(utterances)
    return result, policy


@pytest.mark.parametrize("family", FAMILIES)
def test_calibration_on_cuda_agrees_with_cpu(family, tiny_manifest):
    utterances = read_manifest(tiny_manifest)
    cpu, _ = _calibrate(family, utterances, "cpu")
    gpu, policy = _calibrate(family, utterances, "cuda")
    assert policy.devices == {"cuda"}, "statistics or weights left the GPU"
    assert [r["name"] for r in gpu.records] == [r["name"] for r in cpu.records]
    for a, b in zip(cpu.records, gpu.records):
        assert b["tokens"] == a["tokens"]
        # Output errors are sums over all tokens: reordering changes them little.
        assert b["err_final"] == pytest.approx(a["err_final"], rel=0.1, abs=1e-6), a["name"]
    cpu_weights, gpu_weights = cpu.model.state_dict(), gpu.model.state_dict()
    for key, value in cpu_weights.items():
        other = gpu_weights[key]
        assert other.device.type == "cuda"
        other = other.cpu()
        # A few GPTQ roundings may flip one grid step; the bulk must be the same numbers.
        same = torch.isclose(value, other, rtol=1e-4, atol=1e-6).float().mean().item()
        assert same > 0.95, f"{key}: only {same:.1%} of entries agree"


@pytest.mark.parametrize("family", FAMILIES)
def test_evaluation_on_cuda_agrees_with_cpu(family, tiny_manifest, tmp_path):
    dm = SpeechDataModule(ManifestSource(str(tiny_manifest)), batch_size=2)
    hypotheses = {}
    for device in ("cpu", "cuda"):
        loaded = load_model(family, "random", seed=0, device=device)
        metrics = evaluate(get_family(family), loaded, dm, tmp_path / device, device=torch.device(device),
                           progress_bar=False, max_new_tokens_per_second=4.0, max_new_tokens_floor=2)
        assert metrics["device"] == device and metrics["utterances"] == 4
        rows = [json.loads(line) for line in (tmp_path / device / "hypotheses.jsonl").read_text().splitlines()]
        hypotheses[device] = {r["id"]: r["hypothesis"] for r in rows}
    # Greedy decoding of a random model can meet near-ties that another summation order breaks
    # the other way; most utterances must still decode to the same text.
    agree = sum(hypotheses["cpu"][k] == hypotheses["cuda"][k] for k in hypotheses["cpu"])
    assert agree >= 3


def test_quantize_task_runs_on_cuda_end_to_end(tiny_manifest, tmp_path):
    result = run_command([sys.executable, "-m", "fade", "model=whisper_random", "runner.device=cuda", "dataset=manifest",
                          f"dataset.source.manifest={tiny_manifest}", "calibration=kathleen_calib",
                          f"calibration.source.manifest={tiny_manifest}", "calibration.num_samples=4",
                          "calibration.batch_size=2", "bits=w4", "runner.progress_bar=false", f"hydra.run.dir={tmp_path}/run"],
                         tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["device"].startswith("cuda") and metrics["utterances"] == 4
