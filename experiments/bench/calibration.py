"""Calibration cost: wall time, CPU time and peak memory of GPTQ and GPTQ+QEP, with the share
spent in forward passes, statistics and solves.

Each method runs in its own process so its peak RSS is its own. Defaults: Whisper base,
W4 g128, 128 kathleen calib.tsv utterances (seed 0).

    python experiments/bench/calibration.py [--model whisper-base] [--n 128] [--methods gptq gptq+qep]

A method ending in ``@recompute`` turns off the replay of frozen sub-modules and finished stages
(``cache_frozen_outputs=False``), the baseline that replay is measured against:

    python experiments/bench/calibration.py --model whisper-tiny.en --methods gptq+qep@recompute gptq+qep gptq

``@no-shortcut`` keeps that replay but runs each frozen attention module once in full instead of
building its output from the output projection's input (the baseline for that step):

    python experiments/bench/calibration.py --model whisper-tiny.en --methods gptq+qep@no-shortcut gptq+qep
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CALIB = Path(os.environ.get("FADE_DATASETS", REPO.parent / "shared" / "datasets")) / "kathleen" / "calib.tsv"


def worker(args) -> dict:
    from fade.process import configure_process

    configure_process()  # as the fade CLI does (fade/process.py)
    import torch

    from fade.calibration.layer import ConstantAlpha, QuantizerSettings
    from fade.calibration.sequential import SequentialCalibrator
    from fade.data.datamodule import draw_calibration
    from fade.data.manifest import read_manifest
    from fade.models import get_family, load_model
    from fade.quant import GridSpec

    loaded = load_model("whisper", "package", args.model)
    utterances = draw_calibration(read_manifest(args.manifest), args.n, seed=0)
    for u in utterances:
        u.load()
    method, _, variant = args.method.partition("@")
    quantizer, _, compensation = method.partition("+")
    policy = ConstantAlpha(0.5) if compensation == "qep" else None
    calibrator = SequentialCalibrator(get_family("whisper"), loaded, QuantizerSettings(quantizer, GridSpec(4, group_size=128)),
                                      policy=policy, track_fp=policy is not None, record_uncorrected=False,
                                      batch_size=args.batch_size, stats_product_dtype=torch.float32,
                                      cache_frozen_outputs=variant != "recompute",
                                      attention_shortcut=variant not in ("recompute", "no-shortcut"))
    wall, cpu = time.perf_counter(), time.process_time()
    result = calibrator.run(utterances)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"method": args.method, "model": args.model, "utterances": args.n, "threads": torch.get_num_threads(),
            "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "breakdown_s": result.seconds, "linears": len(result.records)}


def _median_row(runs: list[dict]) -> dict:
    """Per-quantity medians over repeated runs of one method."""
    def median(values):
        return float(statistics.median(values))

    first = runs[0]
    return {**first, "wall_s": median([r["wall_s"] for r in runs]), "cpu_s": median([r["cpu_s"] for r in runs]),
            "peak_rss_mib": median([r["peak_rss_mib"] for r in runs]),
            "breakdown_s": {k: median([r["breakdown_s"][k] for r in runs]) for k in first["breakdown_s"]},
            "repeats": len(runs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="whisper-base")
    parser.add_argument("--manifest", type=Path, default=DEFAULT_CALIB)
    parser.add_argument("--n", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--methods", nargs="+", default=["gptq", "gptq+qep"])
    parser.add_argument("--repeat", type=int, default=1, help="rounds over all methods; medians are reported")
    parser.add_argument("--method", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "bench" / "calibration.json")
    args = parser.parse_args()
    if args.method:  # child process
        print(json.dumps(worker(args)))
        return
    # Methods interleaved, ``--repeat`` rounds: machine noise hits every method alike; medians reported.
    runs: dict[str, list[dict]] = {m: [] for m in args.methods}
    for _ in range(args.repeat):
        for method in args.methods:
            cmd = [sys.executable, __file__, "--method", method, "--model", args.model, "--n", str(args.n),
                   "--batch-size", str(args.batch_size), "--manifest", str(args.manifest)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
            runs[method].append(json.loads(out))
    rows = [_median_row(runs[m]) for m in args.methods]
    base = rows[0]
    print(f"{args.model}, {args.n} utterances, median of {args.repeat}")
    print(f"{'method':<24}{'wall s':>9}{'cpu s':>9}{'peak MiB':>10}{'fwd q s':>9}{'fwd fp s':>9}{'stats s':>9}{'solve s':>9}"
          f"{'x ' + base['method']:>20}")
    for r in rows:
        b = r["breakdown_s"]
        print(f"{r['method']:<24}{r['wall_s']:>9.1f}{r['cpu_s']:>9.1f}{r['peak_rss_mib']:>10.0f}{b['forward_q']:>9.1f}"
              f"{b['forward_fp']:>9.1f}{b['statistics']:>9.1f}{b['solve']:>9.1f}{r['wall_s'] / base['wall_s']:>20.2f}")
    rows = [{**row, "runs": runs[row["method"]]} for row in rows]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
