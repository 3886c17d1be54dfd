"""How far CUDA calibration drifts from the CPU's, beside how far a 1e-6 nudge moves the CPU's own.

Sequential GPTQ on ill-conditioned statistics is chaotic: a rounding flipped in one layer changes
every later layer's inputs. This prints, per family and quantizer, the first layer's agreement
(same inputs on both sides), the worst layer's, and the whole model's output-error total, for the
GPU with PyTorch's default float32 settings, the GPU with TF32 off everywhere, and the CPU with its
weights nudged by a relative 1e-6 (the reference for what summation order alone can do).

    python experiments/device/cuda_agreement.py        # on a machine with a CUDA GPU
"""

import sys
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from conftest import nudge_weights, write_tiny_manifest  # noqa: E402  (test_cuda's clips and nudge)

from fade.calibration.layer import ConstantAlpha, QuantizerSettings  # noqa: E402
from fade.calibration.sequential import SequentialCalibrator  # noqa: E402
from fade.data.manifest import read_manifest  # noqa: E402
from fade.models import get_family, load_model  # noqa: E402
from fade.process import tf32  # noqa: E402
from fade.quant import GridSpec  # noqa: E402


def calibrate(family, utterances, method, device, nudge=0.0, tf32_enabled=None):
    """A calibration; ``tf32_enabled`` None leaves PyTorch's own defaults (cuDNN convolutions TF32)."""
    with nullcontext() if tf32_enabled is None else tf32(tf32_enabled):
        loaded = load_model(family, "random", seed=0, device=device)
        if nudge:
            nudge_weights(loaded, nudge)
        settings = QuantizerSettings(method, GridSpec(bits=4, group_size=32))
        return SequentialCalibrator(get_family(family), loaded, settings, policy=ConstantAlpha(0.5), batch_size=2).run(utterances)


def compare(a, b):
    wa, wb = a.model.state_dict(), b.model.state_dict()
    first = a.records[0]["name"] + ".weight"
    same = [torch.isclose(v.cpu(), wb[k].cpu(), rtol=1e-4, atol=1e-6).float().mean().item() for k, v in wa.items() if v.dim() == 2]
    total_a, total_b = (sum(r["err_final"] for r in x.records) for x in (a, b))
    return {"first_same": torch.isclose(wa[first].cpu(), wb[first].cpu(), rtol=1e-4, atol=1e-6).float().mean().item(),
            "first_err_rel": abs(b.records[0]["err_final"] / a.records[0]["err_final"] - 1),
            "min_same": min(same), "max_err_rel": max(abs(y["err_final"] / x["err_final"] - 1) for x, y in zip(a.records, b.records)),
            "total_err_rel": abs(total_b / total_a - 1)}


def main():
    utterances = read_manifest(write_tiny_manifest(Path("/tmp/fade_cuda_agreement")))
    print("columns: share of the first layer's entries equal to the CPU's, its output error's relative change;\n"
          "         smallest share of equal entries over all layers, largest per-layer error change, total error change")
    print(f"{'family':10} {'method':5} {'against CPU':16} {'1st same':>9} {'1st err':>9} {'min same':>9} {'max err':>9} {'total err':>10}")
    for family in ["whisper", "moonshine", "qwen3_asr"]:
        for method in ["rtn", "gptq"]:
            reference = calibrate(family, utterances, method, "cpu")
            runs = {"cpu nudged 1e-6": lambda: calibrate(family, utterances, method, "cpu", nudge=1e-6)}
            if torch.cuda.is_available():
                runs["cuda default"] = lambda: calibrate(family, utterances, method, "cuda")
                runs["cuda tf32 off"] = lambda: calibrate(family, utterances, method, "cuda", tf32_enabled=False)
            for label, run in runs.items():
                result = compare(reference, run())
                print(f"{family:10} {method:5} {label:16} {result['first_same']:9.4f} {result['first_err_rel']:9.2e} "
                      f"{result['min_same']:9.4f} {result['max_err_rel']:9.2e} {result['total_err_rel']:10.2e}", flush=True)


if __name__ == "__main__":
    main()
