"""Evaluation against its peers: fade's runner, a transformers batch-1 generate loop, transformers
batched generate, and faster-whisper (CTranslate2 float32 and int8) on the same utterances.

The utterances are the first N of kathleen test.tsv in manifest order (default 64; ``--full``: all
593). Every method runs in its own process (its peak RSS is its own) with the same thread count,
the same weights (the offline package's CTranslate2 model.bin, which fade converts bit for bit to
transformers, and which faster-whisper loads directly), the same per-utterance token cap
``ceil(10 · seconds) + 16`` and greedy decoding. Audio is decoded before the clock starts; model
loading is timed apart (``load_s``). WER comes from ``fade.eval.wer`` (Whisper's English normalizer)
for every method.

    python experiments/bench/eval_vs_peers.py [--model whisper-tiny.en] [--n 64 | --full] [--threads 2] [--repeats 3]
    python experiments/bench/eval_vs_peers.py --resume    # pick up an interrupted run

Each method runs ``--repeats`` times (default 3), the methods interleaved repeat by repeat, and the
table shows the median of wall seconds, CPU seconds and peak RSS (the per-repeat figures are printed
and kept in the JSON); hypotheses are those of the first repeat, and the JSON says whether every
repeat produced the same. Every finished worker leaves its report in ``--work-dir``
(``<model>-n<N>-bs<B>-t<T>-<method>-r<k>.json``, written whole or not at all); ``--resume`` reuses
the reports whose settings and platform (``fade.process.platform_tag``) match this run.

Methods (``--methods``):
- ``transformers-bs1``: fade.eval.reference.whisper_generate_loop, one utterance per ``generate``;
  the reference the others are compared with (ratios, identical hypotheses).
- ``transformers-batched``: WhisperForConditionalGeneration + WhisperProcessor, batches of
  ``--batch-size`` sorted longest first (as fade's runner), ``max_new_tokens`` = the largest cap in
  the batch (plain ``generate`` has one cap per call; fade forces the end token per row).
- ``fade``: fade.eval.runner.transcribe_dataset (Lightning, per-row caps), the grid's evaluation.
- ``faster-whisper-float32`` / ``faster-whisper-int8``: ``WhisperModel(<CTranslate2 folder>,
  compute_type=...)``, ``transcribe`` with beam_size=1, temperature=0 (no fallback), language="en",
  without_timestamps, no VAD, condition_on_previous_text=False, no_speech/compression/log-prob
  thresholds off (nothing skipped or retried), ``max_new_tokens`` = the same cap. faster-whisper pads
  the log-mel features with zeros where transformers pads the audio, so its transcripts differ
  slightly from the same weights: its WER is reported beside, not tuned to.

Also printed: the FLOPs of evaluation (encoder per 30-second window, decoder from the tokens of each
method's hypotheses) over its seconds, as a fraction of this machine's float32 matmul rate measured
here on the encoder's FFN shapes, and the projected wall time of the whole paper grid.

OpenMP threads busy-wait by default; on a machine where another job holds cores that costs both
torch and CTranslate2 several times their compute time (and counts the spinning as CPU seconds).
``--omp-wait-policy passive`` (the default) sets OMP_WAIT_POLICY=PASSIVE for every worker alike;
``inherit`` keeps the environment's setting.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from peers_common import (REPO, calibration_seconds, ct2_model_dir, decoder_flops, encoder_flops, generated_tokens,
                          machine_matmul_rate, median, project_grid, reusable_report, whisper_config, write_report)

DEFAULT_MANIFEST = Path(os.environ.get("FADE_DATASETS", REPO.parent / "shared" / "datasets")) / "kathleen" / "test.tsv"
METHODS = ("transformers-bs1", "transformers-batched", "fade", "faster-whisper-float32", "faster-whisper-int8")
REFERENCE = "transformers-bs1"
TOKENS_PER_SECOND, TOKEN_FLOOR = 10.0, 16  # fade's runner defaults (conf/runner/default.yaml)


def label(method: str, batch_size: int) -> str:
    return {"transformers-bs1": "transformers generate, bs=1",
            "transformers-batched": f"transformers generate, bs={batch_size}",
            "fade": f"fade runner, bs={batch_size}",
            "faster-whisper-float32": "faster-whisper float32",
            "faster-whisper-int8": "faster-whisper int8"}[method]


# --------------------------------------------------------------------------- workers (one process each)


def _utterances(args):
    from fade.data.manifest import read_manifest
    from fade.data.utterance import Utterance

    utterances = read_manifest(args.manifest)
    if not args.full:
        utterances = utterances[: args.n]
    # Decoded once, before any clock starts; every method gets the same float32 16 kHz samples.
    return [Utterance(u.id, u.text, u.load(), None) for u in utterances]


def _setup_transformers(args):
    """transformers-bs1 and transformers-batched: the model as fade loads it (plain from_pretrained of the package)."""
    import torch

    from fade.eval.reference import whisper_generate_loop
    from fade.models import load_model
    from fade.models.generation import token_cap

    torch.set_num_threads(args.threads)
    loaded = load_model("whisper", "package", args.model)
    processor, model = loaded.processor, loaded.model
    if args.worker == "transformers-bs1":
        def transcribe(utterances):
            texts = whisper_generate_loop(loaded, [u.audio for u in utterances], tokens_per_second=TOKENS_PER_SECOND,
                                          floor=TOKEN_FLOOR)
            return {u.id: t for u, t in zip(utterances, texts)}

        return transcribe, {"max_new_tokens": "per utterance"}

    language = {"language": "en", "task": "transcribe"} if getattr(model.generation_config, "is_multilingual", False) else {}

    def transcribe(utterances):
        ordered = sorted(utterances, key=lambda u: (-len(u.audio), u.id))  # longest first, as SpeechDataModule
        texts = {}
        with torch.inference_mode():
            for i in range(0, len(ordered), args.batch_size):
                batch = ordered[i : i + args.batch_size]
                features = processor([u.audio for u in batch], sampling_rate=16_000, return_tensors="pt").input_features
                cap = max(token_cap(len(u.audio) / 16_000, TOKENS_PER_SECOND, TOKEN_FLOOR) for u in batch)
                tokens = model.generate(features, max_new_tokens=cap, do_sample=False, **language)
                for u, text in zip(batch, processor.batch_decode(tokens, skip_special_tokens=True)):
                    texts[u.id] = text.strip()
        return texts

    return transcribe, {"max_new_tokens": "largest cap of the batch", "batch_size": args.batch_size, "order": "longest first"}


def _setup_fade(args):
    import torch

    from fade.data.datamodule import SpeechDataModule
    from fade.data.sources import ListSource
    from fade.eval.runner import transcribe_dataset
    from fade.models import get_family, load_model

    torch.set_num_threads(args.threads)
    loaded = load_model("whisper", "package", args.model)
    family = get_family("whisper")
    settings = {"max_new_tokens": "per utterance (end token forced per row)", "batch_size": args.batch_size}

    def transcribe(utterances):
        datamodule = SpeechDataModule(ListSource(utterances, "kathleen-test-subset"), batch_size=args.batch_size)
        rows = transcribe_dataset(family, loaded, datamodule, device=torch.device("cpu"), progress_bar=False,
                                  max_new_tokens_per_second=TOKENS_PER_SECOND, max_new_tokens_floor=TOKEN_FLOOR)
        settings["capped_utterances"] = sum(bool(r["capped"]) for r in rows)
        return {r["id"]: r["hypothesis"] for r in rows}

    return transcribe, settings


def _setup_faster_whisper(args):
    import ctranslate2
    import faster_whisper
    from faster_whisper import WhisperModel  # benchmark-only dependency: pip install faster-whisper

    from fade.models.generation import token_cap

    compute_type = args.worker.rsplit("-", 1)[1]
    folder = ct2_model_dir(args.model)
    model = WhisperModel(str(folder), device="cpu", compute_type=compute_type, cpu_threads=args.threads, num_workers=1)

    def transcribe(utterances):
        texts = {}
        for u in utterances:
            segments, _ = model.transcribe(
                u.audio, language="en", task="transcribe", beam_size=1, best_of=1, temperature=0.0,
                condition_on_previous_text=False, without_timestamps=True, vad_filter=False, word_timestamps=False,
                no_speech_threshold=None, compression_ratio_threshold=None, log_prob_threshold=None,
                max_new_tokens=token_cap(len(u.audio) / 16_000, TOKENS_PER_SECOND, TOKEN_FLOOR))
            texts[u.id] = "".join(segment.text for segment in segments).strip()  # a generator: this runs the model
        return texts

    return transcribe, {"compute_type": compute_type, "ct2_folder": str(folder), "max_new_tokens": "per utterance",
                        "faster_whisper": faster_whisper.__version__, "ctranslate2": ctranslate2.__version__}


def worker(args) -> dict[str, Any]:
    utterances = _utterances(args)
    setup = {"fade": _setup_fade, "faster-whisper-float32": _setup_faster_whisper,
             "faster-whisper-int8": _setup_faster_whisper}.get(args.worker, _setup_transformers)
    start = time.perf_counter()
    transcribe, settings = setup(args)
    load_s = time.perf_counter() - start
    wall, cpu = time.perf_counter(), time.process_time()
    texts = transcribe(utterances)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"method": args.worker, "wall_s": wall, "cpu_s": cpu, "load_s": round(load_s, 2),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "hypotheses": [texts[u.id] for u in utterances], "ids": [u.id for u in utterances],
            "threads": args.threads, "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "settings": settings}


TIMINGS = ("wall_s", "cpu_s", "peak_rss_mib", "load_s")


def summarize_repeats(reports: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """One row per method that finished at least once: the first repeat's hypotheses, the median of
    each timing over the repeats, the per-repeat timings, and whether every repeat transcribed alike."""
    rows = {}
    for method, done in reports.items():
        if not done:
            continue
        first = done[0]
        timings = [{key: r[key] for key in TIMINGS} for r in done]
        row = {key: value for key, value in first.items() if key != "context"}
        row.update({key: median([t[key] for t in timings]) for key in TIMINGS}, per_repeat=timings,
                   hypotheses_same_every_repeat=all(r["hypotheses"] == first["hypotheses"] for r in done))
        rows[method] = row
    return rows


# --------------------------------------------------------------------------- parent


def run_worker(method: str, args, env: dict[str, str]) -> dict[str, Any] | None:
    with tempfile.TemporaryDirectory() as tmp:
        result_file = Path(tmp) / "result.json"
        cmd = [sys.executable, __file__, "--worker", method, "--result-file", str(result_file), "--model", args.model,
               "--manifest", str(args.manifest), "--n", str(args.n), "--threads", str(args.threads),
               "--batch-size", str(args.batch_size)] + (["--full"] if args.full else [])
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0 or not result_file.is_file():
            print(f"  {method} failed (exit {proc.returncode}):\n" + "\n".join(proc.stderr.strip().splitlines()[-15:]),
                  file=sys.stderr)
            return None
        return json.loads(result_file.read_text())


def _fmt(value, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="whisper-tiny.en", help="offline Whisper package name (whisper-tiny.en, whisper-base)")
    parser.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST)
    parser.add_argument("--n", type=int, default=64, help="first N utterances of the manifest")
    parser.add_argument("--full", action="store_true", help="every utterance of the manifest (593 for kathleen test)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads / CTranslate2 cpu_threads, the same for all")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per method, interleaved (the table shows the median)")
    parser.add_argument("--resume", action="store_true",
                        help="reuse the finished runs' reports in --work-dir made with these settings on this platform")
    parser.add_argument("--work-dir", type=Path, default=REPO / "outputs" / "bench" / "eval_vs_peers",
                        help="one report per method and repeat (written whole or not at all)")
    parser.add_argument("--omp-wait-policy", choices=("passive", "active", "inherit"), default="passive")
    parser.add_argument("--calibration-seconds", help="seconds of one 128-utterance calibration for the grid projection: "
                        "one number for every method, or gptq=S,qep=S,fade=S")
    parser.add_argument("--calibration-json", type=Path, default=REPO / "outputs" / "bench" / "calibration.json")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "bench" / "eval_vs_peers.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--result-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:  # child process
        args.result_file.write_text(json.dumps(worker(args)))
        return
    if args.repeats < 1:
        raise SystemExit(f"--repeats must be at least 1, got {args.repeats}")

    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    if args.omp_wait_policy != "inherit":
        env["OMP_WAIT_POLICY"] = args.omp_wait_policy.upper()
    os.environ.update(env)  # the matmul measured here runs under the same OpenMP settings (torch is not imported yet)
    from fade.data.manifest import read_manifest
    from fade.eval.wer import score

    manifest = read_manifest(args.manifest)
    utterances = manifest if args.full else manifest[: args.n]
    load_before = os.getloadavg()[0]
    config = whisper_config(args.model)
    machine = machine_matmul_rate(config, args.threads)
    print(f"{args.model}, {len(utterances)} utterances of {args.manifest}, {args.threads} threads, "
          f"OMP_WAIT_POLICY={env.get('OMP_WAIT_POLICY', 'unset')}; load average before: {load_before:.2f}; "
          f"float32 matmul: {machine['gflops']:.1f} GFLOP/s, {machine['gflops_per_cpu_s']:.1f} GFLOP per CPU-s", flush=True)

    from fade.process import platform_tag

    platform = platform_tag()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    tag = f"{args.model}-{'full' if args.full else f'n{len(utterances)}'}-bs{args.batch_size}-t{args.threads}"
    methods = []
    for method in args.methods:
        if method.startswith("faster-whisper") and importlib.util.find_spec("faster_whisper") is None:
            print(f"  {method}: skipped, faster-whisper is not installed (pip install faster-whisper)", flush=True)
        else:
            methods.append(method)
    reports: dict[str, list[dict[str, Any]]] = {method: [] for method in methods}
    resumed = 0
    for repeat in range(args.repeats):
        for method in methods:  # interleaved, so slow drift of the machine spreads over all methods
            context = {"model": args.model, "manifest": str(args.manifest), "utterances": len(utterances),
                       "threads": args.threads, "batch_size": args.batch_size, "omp_wait_policy": env.get("OMP_WAIT_POLICY"),
                       "method": method, "repeat": repeat, "platform": platform}
            path = args.work_dir / f"{tag}-{method}-r{repeat}.json"
            row = reusable_report(path, context, args.resume)
            if row is not None:
                resumed += 1
                print(f"  {method} repeat {repeat}: reused {path.name}", flush=True)
            else:
                print(f"  {method} repeat {repeat} ...", end="", flush=True)
                row = run_worker(method, args, env)
                if row is None:
                    continue
                row["context"] = context
                write_report(path, row)
                print(f" {row['wall_s']:.1f} s", flush=True)
            reports[method].append(row)

    rows = summarize_repeats(reports)

    machine = machine_matmul_rate(config, args.threads, previous=machine)  # again after the workers; the best of both
    references = [u.text for u in utterances]
    tokenizer_json = ct2_model_dir(args.model) / "tokenizer.json"
    enc_flops = encoder_flops(config)
    reference_row = rows.get(REFERENCE)
    n = len(utterances)
    for method, row in rows.items():
        assert row["ids"] == [u.id for u in utterances], f"{method} transcribed other utterances"
        hyps = row["hypotheses"]
        result = score(references, hyps)
        tokens = generated_tokens(tokenizer_json, hyps)
        dec = sum(decoder_flops(config, t) for t in tokens)
        flops = n * enc_flops + dec
        row.update(
            wall_s=round(row["wall_s"], 2), cpu_s=round(row["cpu_s"], 2), utt_per_s=n / row["wall_s"],
            utt_per_cpu_s=n / row["cpu_s"], wer=result.wer, errors={"S": result.substitutions, "D": result.deletions,
                                                                      "I": result.insertions, "words": result.words},
            generated_tokens=sum(tokens), gflop=round(flops / 1e9, 2),
            gflop_per_s=flops / 1e9 / row["wall_s"], matmul_fraction=flops / 1e9 / row["wall_s"] / machine["gflops"],
            gflop_per_cpu_s=flops / 1e9 / row["cpu_s"],
            matmul_fraction_cpu=flops / 1e9 / row["cpu_s"] / machine["gflops_per_cpu_s"])
        if reference_row is not None:
            same = [a == b for a, b in zip(hyps, reference_row["hypotheses"])]
            row["identical_to_reference"] = sum(same)
            row["differing"] = [{"id": i, REFERENCE: r, method: h} for i, h, r, s in
                                zip(row["ids"], hyps, reference_row["hypotheses"], same) if not s]
            row["speedup_cpu"] = row["utt_per_cpu_s"] / reference_row["utt_per_cpu_s"]
            row["speedup_wall"] = row["utt_per_s"] / reference_row["utt_per_s"]

    header = ["method", "wall s", "CPU s", "utt/s", "utt/CPU-s", "× bs=1 (CPU)", "peak RSS MiB", "WER %",
              "same as bs=1", "GFLOP/s", "% of matmul", "% per CPU-s"]
    print("\nPer repeat (wall s / CPU s / peak RSS MiB):")
    for method, r in rows.items():
        cells = [f"{t['wall_s']:.1f} / {t['cpu_s']:.1f} / {t['peak_rss_mib']:.0f}" for t in r["per_repeat"]]
        print(f"  {label(method, args.batch_size):<32} " + " | ".join(cells)
              + ("" if r["hypotheses_same_every_repeat"] else "  (hypotheses differ between repeats)"))
    print(f"\n{args.model}, {n} utterances, {args.threads} threads, median of {args.repeats} ({platform}). '× bs=1': utterances per CPU-second over the transformers "
          f"batch-1 loop's. '% of matmul': evaluation FLOPs per wall second over the float32 matmul rate "
          f"({machine['gflops']:.1f} GFLOP/s); '% per CPU-s': per CPU second over the matmul's "
          f"({machine['gflops_per_cpu_s']:.1f} GFLOP per CPU-s). int8 rows are compared with the float32 rate too.\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
    for method, r in rows.items():
        cells = [label(method, args.batch_size), f"{r['wall_s']:.1f}", f"{r['cpu_s']:.1f}", f"{r['utt_per_s']:.3f}",
                 f"{r['utt_per_cpu_s']:.3f}", _fmt(r.get("speedup_cpu"), ".2f") + ("×" if "speedup_cpu" in r else ""),
                 f"{r['peak_rss_mib']:.0f}", f"{100 * r['wer']:.2f}",
                 f"{r['identical_to_reference']}/{n}" if "identical_to_reference" in r else "-",
                 f"{r['gflop_per_s']:.1f}", f"{100 * r['matmul_fraction']:.0f}%", f"{100 * r['matmul_fraction_cpu']:.0f}%"]
        print("| " + " | ".join(cells) + " |")

    checks = {}
    fade_row = rows.get("fade")
    print()
    if fade_row is not None:
        print(f"fade: {fade_row['gflop'] / n:.1f} GFLOP per utterance (encoder {enc_flops / 1e9:.1f} per 30 s window, decoder "
              f"{(fade_row['gflop'] - n * enc_flops / 1e9) / n:.2f} from {fade_row['generated_tokens'] / n:.1f} tokens): "
              f"{fade_row['gflop_per_s']:.1f} GFLOP/s = {100 * fade_row['matmul_fraction']:.0f}% of the measured float32 matmul "
              f"rate ({machine['gflops']:.1f} GFLOP/s); {fade_row['gflop_per_cpu_s']:.1f} GFLOP per CPU-s = "
              f"{100 * fade_row['matmul_fraction_cpu']:.0f}% of the matmul's {machine['gflops_per_cpu_s']:.1f}")
        if reference_row is not None:
            checks["fade_identical_to_bs1"] = fade_row["identical_to_reference"] == n
            checks["fade_2x_bs1_per_cpu_s"] = fade_row["speedup_cpu"] >= 2.0
            print(f"check fade hypotheses identical to the bs=1 loop: {fade_row['identical_to_reference']}/{n} "
                  f"{'PASS' if checks['fade_identical_to_bs1'] else 'FAIL'}")
            print(f"check fade >= 2x the bs=1 loop in utterances per CPU-second: {fade_row['speedup_cpu']:.2f}x "
                  f"{'PASS' if checks['fade_2x_bs1_per_cpu_s'] else 'FAIL'} (wall: {fade_row['speedup_wall']:.2f}x)")
        fw = rows.get("faster-whisper-float32")
        if fw is not None:
            cpu_ratio, wall_ratio = fade_row["utt_per_cpu_s"] / fw["utt_per_cpu_s"], fade_row["utt_per_s"] / fw["utt_per_s"]
            checks["fade_not_slower_than_faster_whisper_float32"] = cpu_ratio >= 1.0 and wall_ratio >= 1.0
            print(f"check fade no slower than faster-whisper float32: {cpu_ratio:.2f}x per CPU-second, {wall_ratio:.2f}x "
                  f"per wall-second {'PASS' if checks['fade_not_slower_than_faster_whisper_float32'] else 'FAIL'}")

    projection, calibration_source = None, None
    if fade_row is not None:
        calibration, calibration_source = calibration_seconds(args.model, args.calibration_seconds, args.calibration_json,
                                                              REPO / "outputs" / "multirun")
        projection = project_grid(fade_row["wall_s"] / n, len(manifest), calibration)
        s = projection["seconds"]
        cal = (f"{s['calibrations'] / 3600:.1f} h calibration "
               f"(GPTQ {calibration['gptq']:.0f} s, QEP {calibration['qep']:.0f} s, FADE {calibration['fade']:.0f} s each) + "
               if calibration else "(calibration NOT included) ")
        print(f"\nprojected wall time of the whole {args.model} paper grid on this machine, one run after another: "
              f"{projection['total_hours']:.1f} h = {cal}"
              f"{(s['fp_test_evaluation'] + s['quantized_test_evaluations']) / 3600:.1f} h test evaluation "
              f"(1 FP + {projection['quantize_runs']} quantized × {len(manifest)} utterances at fade's "
              f"{fade_row['wall_s'] / n:.2f} s per utterance) + {s['dev_evaluations'] / 3600:.1f} h dev evaluation "
              f"({projection['runs']['qep']} QEP runs + 5 FP × 100 utterances)")
        print(f"  calibration seconds from: {calibration_source}")
        print("  assumes quantized models evaluate at the FP model's speed (a quantized model that loops until its "
              "token caps takes longer) and the utterance mix measured here")

    for row in rows.values():
        row["label"] = label(row["method"], args.batch_size)
    result = {"model": args.model, "manifest": str(args.manifest), "utterances": n, "threads": args.threads,
              "batch_size": args.batch_size, "omp_wait_policy": env.get("OMP_WAIT_POLICY"),
              "repeats": args.repeats, "platform": platform, "resumed_runs": resumed,
              "load_average_before": round(load_before, 2), "token_cap_rule": f"ceil({TOKENS_PER_SECOND} * seconds) + {TOKEN_FLOOR}",
              "machine_matmul": machine, "encoder_gflop_per_utterance": round(enc_flops / 1e9, 3),
              "flops_note": "useful FLOPs (2 per multiply-add): encoder per 30 s window, decoder from the re-tokenised "
                            "hypotheses with a KV cache; padding rows of batched generation not counted",
              "reference": REFERENCE, "rows": list(rows.values()), "checks": checks,
              "grid_projection": projection, "calibration_source": calibration_source}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
