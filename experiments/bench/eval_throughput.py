"""Evaluation throughput: fade's runner against a batch-size-1 transformers generate loop.

Both transcribe the same utterances (the first N of kathleen test.tsv, default 64) with the
same model and token caps, in this one process, so the ratio is measured on the same machine
state. Prints utterances/second for each, the ratio, and whether the hypotheses agree.

    python experiments/bench/eval_throughput.py [--model whisper-tiny.en] [--n 64] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

import torch

from fade.data.datamodule import SpeechDataModule
from fade.data.manifest import read_manifest
from fade.data.sources import ManifestSource
from fade.eval.reference import whisper_generate_loop
from fade.eval.runner import transcribe_dataset
from fade.models import get_family, load_model

REPO = Path(__file__).resolve().parents[2]
DEFAULT_MANIFEST = Path(os.environ.get("FADE_DATASETS", REPO.parent / "shared" / "datasets")) / "kathleen" / "test.tsv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="whisper-tiny.en", help="offline Whisper package name")
    parser.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST)
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "bench" / "eval_throughput.json")
    args = parser.parse_args()

    device = torch.device(args.device)
    loaded = load_model("whisper", "package", args.model, device=device)
    utterances = read_manifest(args.manifest)[: args.n]
    audios = [u.load() for u in utterances]

    start = time.perf_counter()
    cpu_start = time.process_time()
    baseline = whisper_generate_loop(loaded, audios)
    base_wall, base_cpu = time.perf_counter() - start, time.process_time() - cpu_start

    with tempfile.TemporaryDirectory() as tmp:
        subset = Path(tmp) / "subset.tsv"
        subset.write_text("id\tpath\tduration_s\ttext\n" + "".join(
            f"{u.id}\t{u.audio}\t{u.duration}\t{u.text}\n" for u in utterances))
        dm = SpeechDataModule(ManifestSource(str(subset)), batch_size=args.batch_size)
        dm.setup()
        start = time.perf_counter()
        cpu_start = time.process_time()
        rows = transcribe_dataset(get_family("whisper"), loaded, dm, device=device, progress_bar=False)
        fade_wall, fade_cpu = time.perf_counter() - start, time.process_time() - cpu_start

    by_id = {r["id"]: r["hypothesis"] for r in rows}
    agree = sum(by_id[u.id] == hyp for u, hyp in zip(utterances, baseline))
    result = {
        "model": args.model, "utterances": len(utterances), "batch_size": args.batch_size, "device": str(device),
        "threads": torch.get_num_threads(),
        "baseline_batch1": {"wall_s": round(base_wall, 2), "cpu_s": round(base_cpu, 2), "utt_per_s": round(len(audios) / base_wall, 3)},
        "fade_runner": {"wall_s": round(fade_wall, 2), "cpu_s": round(fade_cpu, 2), "utt_per_s": round(len(audios) / fade_wall, 3)},
        "speedup_wall": round(base_wall / fade_wall, 3),
        "speedup_cpu": round(base_cpu / fade_cpu, 3),
        "identical_hypotheses": f"{agree}/{len(utterances)}",
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    print(f"{'method':<28}{'wall s':>9}{'cpu s':>9}{'utt/s':>8}")
    for name, key in (("transformers generate, bs=1", "baseline_batch1"), (f"fade runner, bs={args.batch_size}", "fade_runner")):
        r = result[key]
        print(f"{name:<28}{r['wall_s']:>9.1f}{r['cpu_s']:>9.1f}{r['utt_per_s']:>8.2f}")
    print(f"ratio fade/baseline: {result['speedup_wall']:.2f}x wall, {result['speedup_cpu']:.2f}x CPU; "
          f"identical hypotheses {result['identical_hypotheses']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
