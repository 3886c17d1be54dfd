"""Markdown table of finished runs: every metrics.json under the given folders.

    python experiments/summarize.py outputs/multirun/ptq_kathleen_whisper_tiny_en_*
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def rows(folders: list[str]) -> list[dict]:
    found = []
    for folder in folders:
        for path in sorted(Path(folder).rglob("metrics.json")):
            metrics = json.loads(path.read_text())
            if "wer_fp" in metrics:  # a quantize run's summary (not fp/ or quantized/)
                found.append(metrics)
    return found


def main() -> None:
    runs = rows(sys.argv[1:])
    print("| model | bits | method | α | WER % (FP) | WER % | Δ | capped | calib s | eval s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for m in sorted(runs, key=lambda m: (m["model"], -m["bits"], m["method"], m.get("alpha") or 0)):
        bits = f"W{m['bits']}" + (f" g{m['group_size']}" if m["group_size"] else "")
        alpha = m.get("alpha") if m.get("alpha") is not None else ("per layer" if m["compensation"] == "fade" else "–")
        print(f"| {m['model']} | {bits} | {m['method']} | {alpha} | {100 * m['wer_fp']:.2f} | {100 * m['wer']:.2f} | "
              f"{100 * m['wer_delta']:+.2f} | {m['capped_utterances']} | {m['calibration_seconds']:.0f} | {m['eval_seconds']:.0f} |")


if __name__ == "__main__":
    main()
