"""Where the time of one GPTQ+QEP run goes: calibration (forward passes of each stream, statistics,
solves) and evaluation (encoder, decoding), with the operators that dominate each and the share of the
machine's float32 matrix-multiply rate each phase reaches.

    python experiments/bench/profile_run.py [--model whisper-tiny.en] [--n 128] [--eval-n 64] [--bits 3]

Phases come from fade's own timers (the calibrator's) and from hooks on the encoder during evaluation;
operators from torch.profiler (self CPU time, so nested calls are not counted twice). The profiler adds
some overhead per operator, so the phase seconds are also measured in a second, unprofiled pass.
Encoder FLOPs are counted analytically (peers_common.encoder_flops: convolutions, projections,
attention and FFN of one 30-second window), as in eval_vs_peers.py.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import time
from pathlib import Path

from fade.process import configure_process

configure_process()  # OpenMP waiting and glibc heap, as the fade CLI does (fade/process.py)

REPO = Path(__file__).resolve().parents[2]
KATHLEEN = Path(os.environ.get("FADE_DATASETS", REPO.parent / "shared" / "datasets")) / "kathleen"


def _top_ops(profile, top: int) -> list[dict]:
    rows = sorted(profile.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in rows) or 1.0
    return [{"op": e.key, "calls": e.count, "self_cpu_s": round(e.self_cpu_time_total / 1e6, 3),
             "share": round(e.self_cpu_time_total / total, 4)} for e in rows[:top]]


def _profiler(profile: bool):
    """torch.profiler over CPU operators, or a context that profiles nothing (yields None)."""
    import torch

    return torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) if profile else contextlib.nullcontext()


def _calibrate(args, profile: bool):
    import torch

    from fade.calibration.layer import ConstantAlpha, QuantizerSettings
    from fade.calibration.sequential import SequentialCalibrator
    from fade.data.datamodule import draw_calibration
    from fade.data.manifest import read_manifest
    from fade.models import get_family, load_model
    from fade.quant import GridSpec

    loaded = load_model("whisper", "package", args.model)
    utterances = draw_calibration(read_manifest(KATHLEEN / "calib.tsv"), args.n, seed=0)
    for u in utterances:
        u.load()
    calibrator = SequentialCalibrator(get_family("whisper"), loaded, QuantizerSettings("gptq", GridSpec(args.bits, group_size=128)),
                                      policy=ConstantAlpha(0.5), record_uncorrected=False, batch_size=8,
                                      stats_product_dtype=torch.float32)  # the CLI's default (calibration.stats_product_dtype)
    wall, cpu = time.perf_counter(), time.process_time()
    with _profiler(profile) as prof:
        result = calibrator.run(utterances)
    return result, time.perf_counter() - wall, time.process_time() - cpu, prof


def _evaluate(args, model, profile: bool):
    import torch

    from fade.data.datamodule import SpeechDataModule
    from fade.data.sources import ManifestSource
    from fade.eval.runner import evaluate
    from fade.models import get_family

    encoder = model.model.model.encoder
    spent = {"encoder": 0.0}
    started = {}
    pre = encoder.register_forward_pre_hook(lambda *_: started.__setitem__("t", time.perf_counter()))
    post = encoder.register_forward_hook(lambda *_: spent.__setitem__("encoder", spent["encoder"] + time.perf_counter() - started["t"]))
    dm = SpeechDataModule(ManifestSource(str(KATHLEEN / "test.tsv")), batch_size=16, limit=args.eval_n)
    out = REPO / "outputs" / "bench" / "profile_eval"
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        with _profiler(profile) as prof:
            metrics = evaluate(get_family("whisper"), model, dm, out, device=torch.device("cpu"), progress_bar=False)
    finally:
        pre.remove()
        post.remove()
    return metrics, time.perf_counter() - wall, time.process_time() - cpu, spent["encoder"], prof


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="whisper-tiny.en")
    parser.add_argument("--n", type=int, default=128, help="calibration utterances (kathleen calib.tsv, seed 0)")
    parser.add_argument("--eval-n", type=int, default=64, help="test utterances to evaluate (kathleen test.tsv)")
    parser.add_argument("--bits", type=int, default=3)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "bench" / "profile_run.json")
    args = parser.parse_args()

    import torch

    from fade.models import LoadedModel
    from peers_common import encoder_flops, machine_matmul_rate, whisper_config

    torch.set_num_threads(int(os.environ.get("FADE_BENCH_THREADS", torch.get_num_threads())))
    machine = machine_matmul_rate(whisper_config(args.model), torch.get_num_threads())
    report = {"model": args.model, "n": args.n, "eval_n": args.eval_n, "bits": args.bits, "threads": torch.get_num_threads(),
              "matmul_gflops": machine["gflops"]}

    result, wall, cpu, prof = _calibrate(args, profile=True)
    report["calibration_profiled"] = {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "phases_s": result.seconds,
                                      "top_ops": _top_ops(prof, args.top)}
    del prof
    result, wall, cpu, _ = _calibrate(args, profile=False)
    report["calibration"] = {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "phases_s": result.seconds}

    from fade.models import load_model

    fp = load_model("whisper", "package", args.model)
    quantized = LoadedModel(fp.family, fp.name, result.model, fp.processor, fp.revision, dict(fp.info))
    gflop = encoder_flops(whisper_config(args.model)) / 1e9  # analytic: torch's FLOP counter misses CPU attention
    metrics, wall, cpu, encoder_s, prof = _evaluate(args, quantized, profile=True)
    report["evaluation_profiled"] = {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "encoder_s": round(encoder_s, 2),
                                     "top_ops": _top_ops(prof, args.top)}
    del prof
    metrics, wall, cpu, encoder_s, _ = _evaluate(args, quantized, profile=False)
    encoder_rate = gflop * metrics["utterances"] / encoder_s
    report["evaluation"] = {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "encoder_s": round(encoder_s, 2),
                            "decoding_and_rest_s": round(wall - encoder_s, 2), "utterances": metrics["utterances"],
                            "wer": metrics["wer"], "encoder_gflop_per_utterance": round(gflop, 2),
                            "encoder_gflop_per_s": round(encoder_rate, 1),
                            "encoder_matmul_fraction": round(encoder_rate / machine["gflops"], 3)}
    report["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)

    c, e = report["calibration"], report["evaluation"]
    print(f"{args.model}, W{args.bits} g128 GPTQ+QEP(α=0.5), {args.n} calibration / {e['utterances']} test utterances, "
          f"{report['threads']} threads; float32 matmul {machine['gflops']:.1f} GFLOP/s\n")
    print(f"calibration: {c['wall_s']:.1f} s wall, {c['cpu_s']:.1f} CPU-s")
    for key, value in c["phases_s"].items():
        if key != "total":
            print(f"  {key:<12}{value:>9.1f} s  {value / c['phases_s']['total']:>6.1%}")
    print(f"evaluation: {e['wall_s']:.1f} s wall, {e['cpu_s']:.1f} CPU-s, WER {100 * e['wer']:.2f} %")
    print(f"  encoder     {e['encoder_s']:>9.1f} s  {e['encoder_s'] / e['wall_s']:>6.1%}  "
          f"({e['encoder_gflop_per_utterance']:.1f} GFLOP/utt, {e['encoder_gflop_per_s']:.0f} GFLOP/s, "
          f"{e['encoder_matmul_fraction']:.0%} of the matmul rate)")
    print(f"  decoding+rest{e['decoding_and_rest_s']:>8.1f} s  {e['decoding_and_rest_s'] / e['wall_s']:>6.1%}")
    for phase in ("calibration_profiled", "evaluation_profiled"):
        print(f"\ntop operators, {phase.split('_')[0]} (self CPU, profiled pass):")
        for op in report[phase]["top_ops"]:
            print(f"  {op['op'][:40]:<42}{op['calls']:>8}{op['self_cpu_s']:>10.1f} s{op['share']:>8.1%}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"\n→ {args.out}")


if __name__ == "__main__":
    main()
