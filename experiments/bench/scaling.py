"""Calibration cost against the number of calibration utterances and the model size.

Each point is one calibration in its own process (experiments/bench/calibration.py's worker), so its
peak RSS is its own. The table prints seconds per utterance and the memory slope (MiB per extra
utterance, least squares) beside what the documented caches predict: the calibrator keeps, per
stream, the current stage's hidden states of every calibration utterance (frames × width, float32),
within one block the replayed attention outputs (the same size again), and while a block's outputs
are computed, the next block's inputs (the same size again): three such tensors per utterance and
stream at the peak. Anything above that slope is memory growing with the calibration set that is
not accounted for.

    python experiments/bench/scaling.py [--models whisper-tiny.en whisper-base] [--n 16 32 64 128 256] [--method gptq+qep]

Each finished point is written whole to ``--work-dir`` with its settings and platform; ``--resume``
reuses those, so a sweep cut short (base at 256 utterances is tens of minutes on two cores)
continues with the points it lacks. Points from another machine or other settings are redone.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
from peers_common import reusable_report, write_report  # noqa: E402
#: Hidden width of the encoder and the frames of Whisper's 30-second window.
WIDTH = {"whisper-tiny.en": 384, "whisper-base": 512}
FRAMES = 1500


def predicted_mib_per_utterance(model: str, method: str) -> float:
    streams = 2 if "+" in method else 1
    cached_tensors = 3  # stage inputs + replayed attention outputs + the next block's inputs being built
    return streams * cached_tensors * FRAMES * WIDTH[model] * 4 / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["whisper-tiny.en", "whisper-base"])
    parser.add_argument("--n", nargs="+", type=int, default=[16, 32, 64, 128, 256])
    parser.add_argument("--method", default="gptq+qep")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "bench" / "scaling.json")
    parser.add_argument("--work-dir", type=Path, default=REPO / "outputs" / "bench" / "scaling",
                        help="one report per finished point (reused with --resume)")
    parser.add_argument("--resume", action="store_true",
                        help="reuse the finished points in --work-dir made with these settings on this platform")
    args = parser.parse_args()
    from fade.process import platform_tag

    platform = platform_tag()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for model in args.models:
        for n in args.n:
            context = {"model": model, "method": args.method, "utterances": n, "platform": platform}
            path = args.work_dir / f"{model}-{args.method}-n{n}.json"
            row = reusable_report(path, context, args.resume)
            resumed = row is not None
            if not resumed:
                cmd = [sys.executable, str(HERE / "calibration.py"), "--method", args.method, "--model", model, "--n", str(n)]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
                row = {**json.loads(out), "context": context}
                write_report(path, row)
            rows.append(row)
            print(f"{model:<18}{n:>5}{row['wall_s']:>9.1f} s{row['cpu_s']:>9.1f} CPU-s{row['peak_rss_mib']:>8.0f} MiB"
                  f"{'  (resumed)' if resumed else ''}", flush=True)
    print(f"\n{'model':<18}{'utts':>6}{'wall s':>9}{'s/utt':>8}{'peak MiB':>10}")
    summary = []
    for model in args.models:
        points = [r for r in rows if r["model"] == model]
        for r in points:
            print(f"{model:<18}{r['utterances']:>6}{r['wall_s']:>9.1f}{r['wall_s'] / r['utterances']:>8.2f}{r['peak_rss_mib']:>10.0f}")
        if len(points) >= 2:
            n = np.array([r["utterances"] for r in points], dtype=float)
            rss = np.array([r["peak_rss_mib"] for r in points])
            slope, intercept = np.polyfit(n, rss, 1)
            predicted = predicted_mib_per_utterance(model, args.method)
            summary.append({"model": model, "mib_per_utterance": slope, "intercept_mib": intercept, "predicted_mib_per_utterance": predicted})
            print(f"  memory: {intercept:.0f} MiB + {slope:.2f} MiB per utterance (documented caches: {predicted:.2f} MiB per utterance)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"platform": platform, "points": rows, "fits": summary}, indent=2) + "\n")


if __name__ == "__main__":
    main()
