"""The CUDA path of calibration and evaluation, checked against the CPU path (skipped without a GPU).

Calibration keeps its statistics where the model is, so on a GPU every Hessian, cross term and
solve runs there. Each layer must be solved as on the CPU. Sequential GPTQ is chaotic (cuBLAS
sums in another order, which flips roundings that later layers inherit), so the GPU run carries on
with the CPU's weights after each solve and every layer is compared on the same inputs
(conftest.calibrate_following), in full float32 (TF32 off). Session 17's H100 run of the earlier
version, which compared two free-running chains, is in docs/performance.md, "CUDA".
"""

import json
import sys

import pytest
import torch

from conftest import assert_layers_agree, calibrate_following, run_command  # run_command: the CLI in a subprocess
from fade.calibration.layer import ConstantAlpha, QuantizerSettings
from fade.calibration.sequential import SequentialCalibrator
from fade.data.datamodule import SpeechDataModule
from fade.data.manifest import read_manifest
from fade.data.sources import ManifestSource
from fade.eval.runner import evaluate
from fade.models import get_family, load_model
from fade.process import tf32
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


def _calibrator(family: str, device: str):
    loaded = load_model(family, "random", seed=0, device=device)
    policy = DeviceRecordingAlpha(0.5)
    settings = QuantizerSettings("gptq", GridSpec(bits=4, group_size=32))
    return SequentialCalibrator(get_family(family), loaded, settings, policy=policy, batch_size=2), policy


@pytest.fixture
def full_float32():
    """cuDNN convolutions default to TF32 (10-bit mantissa): a far larger nudge than summation order."""
    with tf32(False):
        yield


@pytest.mark.parametrize("family", FAMILIES)
def test_calibration_on_cuda_agrees_with_cpu(family, tiny_manifest, full_float32, monkeypatch):
    utterances = read_manifest(tiny_manifest)
    calibrator, _ = _calibrator(family, "cpu")
    cpu = calibrator.run(utterances)
    # Each GPU layer is solved for real, then the CPU's weights carry on, so every layer sees the
    # same inputs on both devices and is compared on its own (sequential GPTQ is chaotic: see
    # conftest.calibrate_following; tests/test_calibration.py checks the criterion on the CPU).
    calibrator, policy = _calibrator(family, "cuda")
    gpu, own = calibrate_following(cpu, calibrator, utterances, monkeypatch)
    assert policy.devices == {"cuda"}, "statistics or weights left the GPU"
    assert all(result.weight_q.device.type == "cuda" for result in own.values())
    assert_layers_agree(cpu, gpu, own)


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
