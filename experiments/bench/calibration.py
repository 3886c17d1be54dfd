"""Calibration cost: wall time, CPU time and peak memory of GPTQ and GPTQ+QEP, with the share
spent in forward passes, statistics and solves.

Each method runs in its own process so its peak RSS is its own. Defaults: Whisper base,
W4 g128, 128 kathleen calib.tsv utterances (seed 0).

    python experiments/bench/calibration.py [--model whisper-base] [--n 128] [--methods gptq gptq+qep]

A method ending in ``@recompute`` turns off the replay of frozen sub-modules and finished stages
(``cache_frozen_outputs=False``), the baseline that replay is measured against:

    python experiments/bench/calibration.py --model whisper-tiny.en --methods gptq+qep@recompute gptq+qep gptq
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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
                                      cache_frozen_outputs=variant != "recompute")
    wall, cpu = time.perf_counter(), time.process_time()
    result = calibrator.run(utterances)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"method": args.method, "model": args.model, "utterances": args.n, "threads": torch.get_num_threads(),
            "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "breakdown_s": result.seconds, "linears": len(result.records)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="whisper-base")
    parser.add_argument("--manifest", type=Path, default=DEFAULT_CALIB)
    parser.add_argument("--n", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--methods", nargs="+", default=["gptq", "gptq+qep"])
    parser.add_argument("--method", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "bench" / "calibration.json")
    args = parser.parse_args()
    if args.method:  # child process
        print(json.dumps(worker(args)))
        return
    rows = []
    for method in args.methods:
        cmd = [sys.executable, __file__, "--method", method, "--model", args.model, "--n", str(args.n),
               "--batch-size", str(args.batch_size), "--manifest", str(args.manifest)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        rows.append(json.loads(out))
    base = rows[0]
    print(f"{'method':<20}{'wall s':>9}{'cpu s':>9}{'peak MiB':>10}{'forward':>9}{'stats':>8}{'solve':>8}{'x ' + base['method']:>12}")
    for r in rows:
        b = r["breakdown_s"]
        share = {k: 100 * b[k] / b["total"] for k in ("forward", "statistics", "solve")}
        print(f"{r['method']:<20}{r['wall_s']:>9.1f}{r['cpu_s']:>9.1f}{r['peak_rss_mib']:>10.0f}{share['forward']:>8.0f}%"
              f"{share['statistics']:>7.0f}%{share['solve']:>7.0f}%{r['wall_s'] / base['wall_s']:>12.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
