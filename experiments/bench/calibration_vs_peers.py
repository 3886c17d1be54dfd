"""Calibration cost and WER: fade against llm-compressor's GPTQ on Whisper.

For each model (``--models``) and weight width (``--bits``; groups of 128), four methods each run
in a process of their own, with the same threads and the same calibration utterances:
``draw_calibration(read_manifest(kathleen calib.tsv), n, seed=0)``.

* ``llmcompressor-gptq``: llm-compressor's ``oneshot`` with its Whisper recipe (GPTQModifier on
  Linear, groups of 128, ``proj_out`` ignored, sequential per encoder and decoder layer). It runs
  in its own venv (``peers/setup_llmcompressor.sh``) through ``peers/llmcompressor_gptq.py``.
  That script documents the two forwards it swaps in during ``oneshot``: without them the example
  does not run with transformers 5.x;
* ``fade-gptq``, ``fade-gptq+qep`` (α 0.5) and ``fade-fade``: fade's ``SequentialCalibrator``,
  configured as ``fade experiment=ptq_kathleen method=gptq|qep|fade`` would configure it (the
  Hydra config is composed, so the settings are the paper grid's);
* ``fade-gptq-recipe-grid`` (only when named in ``--methods``): fade GPTQ on the recipe's grid
  (``bits.symmetric=true quantizer.act_order=true quantizer.static_groups=true``), to tell the
  grid's share of a WER gap from the implementation's.

For each run the table reports wall seconds, CPU seconds and peak RSS around the calibration call
only (``oneshot`` / ``SequentialCalibrator.run``), the median over ``--repeats`` runs, and the
WER of each quantized model on the 593 kathleen test utterances. WER is scored by a separate
process with fade's runner, on the weights of the first repeat. Ratios are given against
llm-compressor, and ``targets`` checks the issue's goals for fade GPTQ: at least 2x faster in wall
and CPU seconds, no more peak memory, and WER at most 0.3 points worse. The last lines project
the wall time of the tiny.en paper grid (``experiments/fade_grid.sh``: 62 quantize runs plus
their evaluations) with ``peers_common.project_grid``, the model ``eval_vs_peers.py`` uses. That
projection takes fade's measured calibration seconds (with ``--n`` below 128, forward and
statistics seconds are scaled up and solve seconds kept) and the evaluation seconds from
``--eval-seconds``, this run's WER runs, ``outputs/bench/eval_vs_peers.json`` or
``eval_throughput.json``, in that order.

    python experiments/bench/calibration_vs_peers.py                       # tiny.en, W4 and W3, n=128, 3 repeats
    python experiments/bench/calibration_vs_peers.py --models whisper-tiny.en whisper-base
    python experiments/bench/calibration_vs_peers.py --n 4 --repeats 1 --bits 4 --no-wer   # smoke run
    python experiments/bench/calibration_vs_peers.py --resume   # pick up an interrupted run

Every finished calibration and WER run leaves its report in ``--work-dir`` (``<tag>-<method>-r<k>.json``,
``<tag>-<method>-wer.json``, written whole or not at all). ``--resume`` reuses the reports whose
settings (model, width, utterances, threads, peer grid) and platform (``fade.process.platform_tag``)
match this run, so a benchmark cut short by a session's end continues where it stopped, and timings
of two machines never end up in one median. Without ``--resume`` everything runs again.

Fairness notes. llm-compressor's timed region excludes its feature extraction: the example
builds the dataset before ``oneshot``. fade's timed region includes its own (the audio is decoded
beforehand for both). llm-compressor calibrates with batch size 1, the default in its example
(the teacher-forced lengths differ). fade uses its configured batch size, 8. ``--peer-grid
recipe`` (the default) is the example's ``W{b}A16`` preset: symmetric, with act-order static.
fade's grid is asymmetric with no act-order. ``--peer-grid matched`` gives llm-compressor fade's
grid.
"""

from __future__ import annotations

import time

_T0_WALL, _T0_CPU = time.perf_counter(), time.process_time()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

from peers.rss import reset_peak_rss, status_mib  # noqa: E402
from peers_common import median, reusable_report, write_report  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DATASETS = Path(os.environ.get("FADE_DATASETS", REPO.parent / "shared" / "datasets"))
DEFAULT_CALIB = DATASETS / "kathleen" / "calib.tsv"
DEFAULT_TEST = DATASETS / "kathleen" / "test.tsv"
PEER_SCRIPT = Path(__file__).resolve().parent / "peers" / "llmcompressor_gptq.py"
DEFAULT_PEER_PYTHON = REPO / ".venv-llmcompressor" / "bin" / "python"
PEER = "llmcompressor-gptq"
FADE_METHODS = {"fade-gptq": "gptq", "fade-gptq+qep": "qep", "fade-fade": "fade",  # -> conf/method/*.yaml
                "fade-gptq-recipe-grid": "gptq"}
# fade GPTQ on the grid of llm-compressor's recipe (symmetric, act-order with static groups), so
# the WER gap between the two GPTQs can be split into grid choice and implementation.
FADE_OVERRIDES = {"fade-gptq-recipe-grid": ["bits.symmetric=true", "quantizer.act_order=true",
                                            "quantizer.static_groups=true"]}
GRID_METHODS = [m for m in FADE_METHODS if m not in FADE_OVERRIDES]  # configured as the paper grid runs them
METHODS = [PEER, *GRID_METHODS]  # the default set; --methods may add the variants
TEST_UTTERANCES = 593


# --------------------------------------------------------------------------- helpers (both sides)


def _model_config(model: str) -> str:
    return model.replace("-", "_").replace(".", "_")  # whisper-tiny.en -> conf/model/whisper_tiny_en.yaml


def _state_to_save(model) -> dict:
    # proj_out is tied to the token embeddings: safetensors refuses shared storage, the loader re-ties it.
    return {k: v.detach().contiguous().clone() for k, v in model.state_dict().items() if k != "proj_out.weight"}


# --------------------------------------------------------------------------- child: fade calibration


def fade_overrides(method: str, model: str, bits: int, n: int) -> list[str]:
    """The Hydra overrides a fade method runs with: the paper grid's settings, plus the method's own."""
    return ["experiment=ptq_kathleen", f"method={FADE_METHODS[method]}", f"bits=w{bits}g128",
            f"model={_model_config(model)}", f"calibration.num_samples={n}", "calibration.seed=0",
            "runner.device=cpu", *FADE_OVERRIDES.get(method, [])]


def fade_worker(args) -> dict:
    from fade.process import configure_process

    configure_process()  # as the fade CLI does (fade/process.py)
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from hydra import compose, initialize_config_dir

    from fade.calibration.sequential import SequentialCalibrator
    from fade.config import register_configs
    from fade.data.datamodule import draw_calibration
    from fade.data.manifest import read_manifest
    from fade.data.utterance import Utterance
    from fade.tasks.common import build_model, family_of
    from fade.tasks.quantize import alpha_policy, quantizer_settings

    register_configs()
    bits = args.bits[0]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=fade_overrides(args.worker, args.model, bits, args.n))

    drawn = draw_calibration(read_manifest(args.manifest), args.n, seed=0)
    expected = [row["id"] for row in json.loads(Path(args.calibration).read_text())]
    if [u.id for u in drawn] != expected:
        raise SystemExit("fade's calibration draw differs from the parent's")
    # Decode the audio up front (llm-compressor's worker also has it in memory before oneshot).
    utterances = [Utterance(u.id, u.text, u.load(), u.duration) for u in drawn]

    loaded = build_model(cfg, torch.device("cpu"))
    settings, policy = quantizer_settings(cfg), alpha_policy(cfg)
    c = cfg.calibration
    calibrator = SequentialCalibrator(
        family_of(cfg), loaded, settings, policy=policy, qep_damp=cfg.compensation.damp, exclude=cfg.quantizer.exclude,
        compensation_exclude=cfg.compensation.exclude if policy is not None else [], batch_size=c.batch_size,
        track_fp=c.track_fp, record_uncorrected=c.record_uncorrected, stats_dtype=getattr(torch, c.stats_dtype),
        stats_product_dtype=getattr(torch, c.stats_product_dtype))
    rss_before = status_mib("VmRSS")
    reset_ok = reset_peak_rss()
    wall, cpu = time.perf_counter(), time.process_time()
    result = calibrator.run(utterances)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    peak = status_mib() if reset_ok else None
    report = {"method": args.worker, "bits": bits, "group_size": settings.grid.group_size,
              "symmetric": settings.grid.symmetric, "act_order": settings.act_order, "utterances": len(utterances),
              "threads": torch.get_num_threads(), "batch_size": c.batch_size, "compensation": cfg.compensation.name,
              "wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "peak_rss_mib": peak, "rss_before_mib": rss_before,
              "breakdown_s": result.seconds, "linears_quantized": len(result.records)}
    if policy is not None and result.records:
        report["alpha_mean"] = round(sum(r["alpha"] for r in result.records) / len(result.records), 4)
    if args.weights_out:
        from safetensors.torch import save_file

        save_file(_state_to_save(result.model), args.weights_out)
        report["weights"] = args.weights_out
    report["total_wall_s"] = round(time.perf_counter() - _T0_WALL, 2)
    report["total_cpu_s"] = round(time.process_time() - _T0_CPU, 2)
    report["total_peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return report


# --------------------------------------------------------------------------- child: WER of saved weights


def eval_worker(args) -> dict:
    import torch
    from safetensors.torch import load_file

    torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    from fade.data.datamodule import SpeechDataModule
    from fade.data.sources import ManifestSource
    from fade.eval.runner import evaluate
    from fade.models import get_family, load_model

    hf_logging.set_verbosity_error()
    loaded = load_model("whisper", "package", args.model)
    model = loaded.model
    missing, unexpected = model.load_state_dict(load_file(args.eval_weights), strict=False)
    if unexpected or set(missing) - {"proj_out.weight"}:
        raise SystemExit(f"{args.eval_weights}: missing {missing}, unexpected {unexpected}")
    if model.proj_out.weight.data_ptr() != model.model.decoder.embed_tokens.weight.data_ptr():
        raise SystemExit("proj_out is no longer tied to the token embeddings")
    datamodule = SpeechDataModule(ManifestSource(str(args.test_manifest), "kathleen-test"), batch_size=16, num_workers=0)
    datamodule.setup()
    metrics = evaluate(get_family("whisper"), loaded, datamodule, Path(args.eval_dir), device=torch.device("cpu"),
                       progress_bar=False, extra={"weights": args.eval_weights})
    return {"wer": metrics["wer"], "utterances": metrics["utterances"], "words": metrics["words"],
            "eval_seconds": metrics["seconds"], "capped_utterances": metrics["capped_utterances"]}


# --------------------------------------------------------------------------- parent


def _child_env(threads: int) -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="false",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    # Every method alike, as the fade CLI does: busy-waiting threads distort timings on shared cores.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


def _run(cmd: list[str], *, env: dict, cwd: Path, label: str, log: Path) -> dict:
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    log.write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    lines = [line for line in proc.stdout.strip().splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout)[-3000:]
        raise SystemExit(f"{label} failed (exit {proc.returncode}); log: {log}\n{tail}")
    return json.loads(lines[-1])


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def _eval_seconds_per_utterance_from_files() -> tuple[float | None, str | None]:
    """fade's evaluation seconds per tiny.en utterance from the evaluation benchmarks, if they ran."""
    bench = REPO / "outputs" / "bench"
    for name in ("eval_vs_peers.json", "eval_throughput.json"):
        path = bench / name
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if data.get("model", "whisper-tiny.en") != "whisper-tiny.en" or not data.get("utterances"):
            continue
        if isinstance(data.get("rows"), list):  # eval_vs_peers.py
            row = next((r for r in data["rows"] if r.get("method") == "fade" and r.get("wall_s")), None)
        else:  # eval_throughput.py
            row = data.get("fade_runner")
        if row and row.get("wall_s"):
            return row["wall_s"] / data["utterances"], f"{path.relative_to(REPO)} (fade, {data['utterances']} utterances)"
    return None, None


def project_tiny_grid(summary: list[dict], args, measured_eval_per_utt: list[float]) -> dict | None:
    """Wall time of experiments/fade_grid.sh for tiny.en, with peers_common.project_grid (as eval_vs_peers.py)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from peers_common import GRID, grid_runs, project_grid

    rows = [r for r in summary if r["model"] == "whisper-tiny.en" and r["method"] in GRID_METHODS and r["wall_s"] is not None]
    if not rows:
        return {"note": "not projected: the tiny.en grid projection needs whisper-tiny.en in --models"}
    notes = []
    calibration: dict[str, float] = {}
    scale = GRID["calibration_samples"] / args.n
    for method in ("gptq", "qep", "fade"):
        measured = []
        for r in rows:
            if FADE_METHODS[r["method"]] == method:
                solve = r.get("solve_s") or 0.0  # solve seconds do not grow with the utterances
                measured.append(solve + (r["wall_s"] - solve) * scale)
        if not measured:
            return {"note": f"not projected: fade {method} was not measured"}
        calibration[method] = statistics.mean(measured)  # the grid runs both widths equally often
    if args.n != GRID["calibration_samples"]:
        notes.append(f"measured on n={args.n}: forward and statistics seconds scaled to {GRID['calibration_samples']} "
                     "utterances, solve seconds kept")
    if len({r["bits"] for r in rows}) < 2:
        notes.append("one width measured: its seconds stand for both widths")
    if args.eval_seconds is not None:
        per_utt, source = args.eval_seconds / TEST_UTTERANCES, "--eval-seconds"
    elif measured_eval_per_utt:
        per_utt, source = statistics.median(measured_eval_per_utt), "the WER runs here (quantized models)"
    else:
        per_utt, source = _eval_seconds_per_utterance_from_files()
    if per_utt is None:
        per_utt, source = 0.0, "none known: evaluation left out (pass --eval-seconds)"
    projection = project_grid(per_utt, TEST_UTTERANCES, calibration)
    # Each run is also a process that starts and loads its model: the measured total minus the timed call.
    overhead = statistics.median([r["total_wall_s"] - r["wall_s"] for r in rows if r.get("total_wall_s") is not None])
    runs = sum(grid_runs(GRID).values())
    projection["seconds"]["process_overhead"] = round(runs * overhead, 1)
    projection["total_seconds"] = round(projection["total_seconds"] + runs * overhead, 1)
    projection["total_hours"] = round(projection["total_seconds"] / 3600, 2)
    projection.update(eval_source=source, notes=notes)
    return projection


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["whisper-tiny.en"])
    parser.add_argument("--bits", nargs="+", type=int, default=[4, 3])
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=[PEER, *FADE_METHODS])
    parser.add_argument("--n", type=int, default=128, help="calibration utterances")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per method (the table shows the median)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-wer", action="store_true", help="skip the test-set WER (timings only)")
    parser.add_argument("--peer-grid", choices=["recipe", "matched"], default="recipe",
                        help="recipe: the example's W{b}A16 (symmetric, act-order static); matched: fade's grid")
    parser.add_argument("--peer-python", type=Path, default=DEFAULT_PEER_PYTHON)
    parser.add_argument("--manifest", type=Path, default=DEFAULT_CALIB)
    parser.add_argument("--test-manifest", type=Path, default=DEFAULT_TEST)
    parser.add_argument("--eval-seconds", type=float, help="seconds of one 593-utterance tiny.en test evaluation, for the grid projection")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "bench" / "calibration_vs_peers.json")
    parser.add_argument("--work-dir", type=Path, default=REPO / "outputs" / "bench" / "calibration_vs_peers",
                        help="logs, quantized weights (first repeat) and WER runs")
    parser.add_argument("--keep-weights", action="store_true", help="keep the quantized safetensors after scoring")
    parser.add_argument("--resume", action="store_true",
                        help="reuse the finished runs' reports in --work-dir made with these settings on this platform")
    # child modes
    parser.add_argument("--worker", choices=list(FADE_METHODS), help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--calibration", help=argparse.SUPPRESS)
    parser.add_argument("--weights-out", help=argparse.SUPPRESS)
    parser.add_argument("--eval-weights", help=argparse.SUPPRESS)
    parser.add_argument("--eval-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(fade_worker(args)))
        return
    if args.eval_weights:
        print(json.dumps(eval_worker(args)))
        return

    if PEER in args.methods and not args.peer_python.is_file():
        raise SystemExit(f"{args.peer_python} not found: run `bash experiments/bench/peers/setup_llmcompressor.sh`, "
                         f"pass --peer-python, or leave {PEER} out of --methods")
    from fade.data.datamodule import draw_calibration
    from fade.data.manifest import read_manifest
    from fade.models.whisper_ct2 import ensure_offline_whisper
    from fade.process import platform_tag

    # Children run in scratch folders (llm-compressor writes logs into its cwd): hand them absolute paths.
    args.work_dir, args.out = args.work_dir.resolve(), args.out.resolve()
    env = _child_env(args.threads)
    platform = platform_tag()
    resumed = 0
    args.work_dir.mkdir(parents=True, exist_ok=True)
    draw = draw_calibration(read_manifest(args.manifest), args.n, seed=0)
    calib_json = args.work_dir / f"calibration_n{args.n}_seed0.json"
    calib_json.write_text(json.dumps([{"id": u.id, "path": str(Path(u.audio).resolve()), "text": u.text} for u in draw]) + "\n")

    runs, summary, measured_eval = [], [], []
    for model in args.models:
        model_dir = ensure_offline_whisper(model)
        for bits in args.bits:
            tag = f"{model}-w{bits}g128"
            reports: dict[str, list[dict]] = {m: [] for m in args.methods}
            for repeat in range(args.repeats):
                for method in args.methods:  # interleaved, so slow drift of the machine spreads over all methods
                    weights = args.work_dir / f"{tag}-{method}.safetensors" if repeat == 0 and not args.no_wer else None
                    log = args.work_dir / f"{tag}-{method}-r{repeat}.log"
                    context = {"model": model, "bits": bits, "method": method, "repeat": repeat, "utterances": args.n,
                               "threads": args.threads, "peer_grid": args.peer_grid, "platform": platform}
                    report_path = args.work_dir / f"{tag}-{method}-r{repeat}.json"
                    report = reusable_report(report_path, context, args.resume)
                    wer_done = reusable_report(args.work_dir / f"{tag}-{method}-wer.json", {**context, "repeat": 0}, args.resume)
                    if report is not None and (weights is None or wer_done is not None or weights.is_file()):
                        reports[method].append(report)
                        runs.append(report)
                        resumed += 1
                        print(f"  {tag} {method:<20} repeat {repeat}: reused {report_path.name}", flush=True)
                        continue
                    if method == PEER:
                        cmd = [str(args.peer_python), str(PEER_SCRIPT), "--model-dir", str(model_dir),
                               "--calibration", str(calib_json), "--bits", str(bits), "--grid", args.peer_grid,
                               "--threads", str(args.threads)]
                    else:
                        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", method, "--model", model,
                               "--bits", str(bits), "--n", str(args.n), "--manifest", str(args.manifest),
                               "--calibration", str(calib_json), "--threads", str(args.threads)]
                    if weights is not None:
                        cmd += ["--out" if method == PEER else "--weights-out", str(weights)]
                    with tempfile.TemporaryDirectory() as scratch:  # llm-compressor may write logs into its cwd
                        report = _run(cmd, env=env, cwd=Path(scratch), label=f"{tag} {method} repeat {repeat}", log=log)
                    report.update(model=model, repeat=repeat, context=context,
                                  finished_at=time.strftime("%Y-%m-%dT%H:%M:%S"))
                    write_report(report_path, report)
                    reports[method].append(report)
                    runs.append(report)
                    print(f"  {tag} {method:<20} repeat {repeat}: wall {report['wall_s']:.1f} s, cpu {report['cpu_s']:.1f} s, "
                          f"peak {report['peak_rss_mib']} MiB", flush=True)
            for method in args.methods:
                rs = reports[method]
                row = {"model": model, "bits": bits, "method": method, "repeats": len(rs),
                       "wall_s": median([r["wall_s"] for r in rs]), "cpu_s": median([r["cpu_s"] for r in rs]),
                       "peak_rss_mib": median([r["peak_rss_mib"] for r in rs]),
                       "rss_growth_mib": median([r["peak_rss_mib"] - r["rss_before_mib"] for r in rs
                                                  if r.get("peak_rss_mib") is not None and r.get("rss_before_mib") is not None]),
                       "total_wall_s": median([r["total_wall_s"] for r in rs]),
                       "total_cpu_s": median([r["total_cpu_s"] for r in rs]),
                       "total_peak_rss_mib": median([r["total_peak_rss_mib"] for r in rs]), "wer": None}
                if method in FADE_METHODS:
                    row["solve_s"] = median([r["breakdown_s"]["solve"] for r in rs])
                if not args.no_wer:
                    weights = rs[0]["weights"]
                    wer_context = {**rs[0]["context"], "repeat": 0}
                    wer_path = args.work_dir / f"{tag}-{method}-wer.json"
                    result = reusable_report(wer_path, wer_context, args.resume)
                    if result is None:
                        result = _run([sys.executable, str(Path(__file__).resolve()), "--eval-weights", weights,
                                       "--model", model, "--test-manifest", str(args.test_manifest),
                                       "--threads", str(args.threads), "--eval-dir", str(args.work_dir / f"{tag}-{method}-wer")],
                                      env=env, cwd=REPO, label=f"{tag} {method} WER", log=args.work_dir / f"{tag}-{method}-wer.log")
                        write_report(wer_path, {**result, "context": wer_context})
                    row.update(wer=result["wer"], eval_seconds=result["eval_seconds"], test_utterances=result["utterances"])
                    if model == "whisper-tiny.en":
                        measured_eval.append(result["eval_seconds"] / result["utterances"])
                    if not args.keep_weights:
                        Path(weights).unlink(missing_ok=True)
                summary.append(row)
            base = next((r for r in summary if r["model"] == model and r["bits"] == bits and r["method"] == PEER), None)
            for r in summary:
                if r["model"] == model and r["bits"] == bits and base is not None:
                    r["x_wall"] = _ratio(base["wall_s"], r["wall_s"])  # > 1: faster than llm-compressor
                    r["x_cpu"] = _ratio(base["cpu_s"], r["cpu_s"])
                    r["mem_ratio"] = _ratio(r["peak_rss_mib"], base["peak_rss_mib"])  # < 1: less memory
                    r["d_wer_pts"] = (round(100 * (r["wer"] - base["wer"]), 2)
                                      if r["wer"] is not None and base["wer"] is not None else None)

    peer_run = next((r for r in runs if r["method"] == PEER), None)
    print(f"\n{args.n} utterances, {args.threads} threads, median of {args.repeats}; "
          f"x = llm-compressor's seconds / this method's; mem = peak / llm-compressor's peak; "
          f"+MiB = peak minus RSS just before calibration")
    header = (f"{'model':<17}{'W':>2} {'method':<20}{'wall s':>9}{'cpu s':>9}{'peak MiB':>10}{'+MiB':>7}{'WER %':>8}"
              f"{'x wall':>8}{'x cpu':>7}{'mem':>6}{'ΔWER':>7}")
    print(header)
    def fmt(value, spec: str) -> str:
        width = int(re.match(r"\+?(\d+)", spec).group(1))
        return "-".rjust(width) if value is None else format(value, spec)

    for r in summary:
        print(f"{r['model']:<17}{r['bits']:>2} {r['method']:<20}{fmt(r['wall_s'], '9.1f')}{fmt(r['cpu_s'], '9.1f')}"
              f"{fmt(r['peak_rss_mib'], '10.0f')}{fmt(r['rss_growth_mib'], '7.0f')}"
              f"{fmt(None if r['wer'] is None else 100 * r['wer'], '8.2f')}"
              f"{fmt(r.get('x_wall'), '8.2f')}{fmt(r.get('x_cpu'), '7.2f')}{fmt(r.get('mem_ratio'), '6.2f')}"
              f"{fmt(r.get('d_wer_pts'), '+7.2f')}")

    targets = []
    for r in summary:
        if r["method"] != "fade-gptq" or r.get("x_wall") is None:
            continue
        checks = {"wall_2x": r["x_wall"] >= 2.0, "cpu_2x": r["x_cpu"] >= 2.0,
                  "peak_rss_not_more": r["mem_ratio"] is not None and r["mem_ratio"] <= 1.0}
        if r.get("d_wer_pts") is not None:
            checks["wer_within_0.3_pts"] = r["d_wer_pts"] <= 0.3
        targets.append({"model": r["model"], "bits": r["bits"], **checks, "met": all(checks.values())})
        print(f"target {r['model']} W{r['bits']} fade-gptq vs llm-compressor: "
              + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in checks.items()))

    projection = project_tiny_grid(summary, args, measured_eval)
    if projection and "total_seconds" in projection:
        sec = projection["seconds"]
        print(f"\nprojected tiny.en paper grid ({projection['quantize_runs']} quantize runs, one after another): "
              f"{projection['total_hours']:.2f} h = calibration {sec['calibrations']:.0f} s + process start/model load "
              f"{sec['process_overhead']:.0f} s + test evaluation {sec['fp_test_evaluation'] + sec['quantized_test_evaluations']:.0f} s "
              f"+ dev evaluation {sec['dev_evaluations']:.0f} s; calibration per run: "
              + ", ".join(f"{k} {v:.0f} s" for k, v in projection["calibration_seconds_per_run"].items())
              + f"; evaluation {projection['eval_seconds_per_utterance']:.2f} s per utterance from {projection['eval_source']}")
        for note in projection["notes"]:
            print(f"  note: {note}")
    elif projection:
        print(f"\n{projection['note']}")

    payload = {"utterances": args.n, "seed": 0, "threads": args.threads, "repeats": args.repeats,
               "peer_grid": args.peer_grid, "calibration_manifest": str(args.manifest), "wer": not args.no_wer,
               "peer_versions": peer_run["versions"] if peer_run else None,
               "peer_changes": peer_run["changes"] if peer_run else None,
               "platform": platform, "resumed_runs": resumed,
               "summary": summary, "targets": targets, "grid_projection": projection, "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
