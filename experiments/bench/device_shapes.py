"""Calibration and evaluation timings of fade on a device, with Whisper models of the real shapes.

GPU machines lent to this project cannot reach a model hub and take at most 64 MiB of files per
call, less than Whisper tiny.en's weights. Seconds of calibration and evaluation depend on the
shapes, not on the weight values, so this benchmark builds randomly initialised Whisper models
with tiny.en's and base's exact dimensions (vocabulary included) and times fade's own calibrator
(GPTQ and GPTQ+QEP, W4 g128) and evaluation runner on synthetic audio of kathleen's test-set
durations. The same measurement at fewer utterances on the CPU is the baseline in the same run.

    python experiments/bench/device_shapes.py --device cuda --out $OUT/device_shapes.json
    python experiments/bench/device_shapes.py --device cpu --calib-n 8 --eval-n 16   # a smoke test here

What differs from a real run, on purpose: random weights never emit end-of-text, so every
utterance decodes up to its token cap (``ceil(10·s) + 16``), about 3× the tokens a real
transcript of kathleen needs; decoding seconds are therefore an upper bound, and tokens per
second is reported beside them. WER is meaningless here and is not reported.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

#: Dimensions of the real checkpoints (their config.json): d_model, layers, heads, vocabulary.
SHAPES = {
    "whisper-tiny.en": dict(d_model=384, layers=4, heads=6, vocab_size=51864),
    "whisper-base": dict(d_model=512, layers=6, heads=8, vocab_size=51865),
}
#: kathleen test.tsv: 593 utterances of 0.76 to 6.09 s, mean 3.0 s.
DURATION_RANGE_S = (0.76, 5.24)


def build_shaped_whisper(shape: str, seed: int = 0):
    """A random Whisper with the shape of a real checkpoint, wrapped like fade's loaded models."""
    import torch
    from transformers import GenerationConfig, WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration
    from transformers import WhisperProcessor, WhisperTokenizer

    from fade.models.base import LoadedModel
    from fade.models.random_tokenizer import byte_vocab
    from fade.models.whisper import RANDOM_SPECIAL_TOKENS

    dims = SHAPES[shape]
    specials = len(RANDOM_SPECIAL_TOKENS)
    vocab = dict(byte_vocab())
    # Filler entries bring the vocabulary (and so the output projection) to the real size.
    vocab.update({f"<filler{i}>": i for i in range(len(vocab), dims["vocab_size"] - specials)})
    tokenizer = WhisperTokenizer(vocab=vocab, merges=[])
    tokenizer.add_special_tokens({"additional_special_tokens": RANDOM_SPECIAL_TOKENS[1:]})
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in RANDOM_SPECIAL_TOKENS}
    config = WhisperConfig(
        vocab_size=len(tokenizer), num_mel_bins=80, d_model=dims["d_model"],
        encoder_layers=dims["layers"], decoder_layers=dims["layers"],
        encoder_attention_heads=dims["heads"], decoder_attention_heads=dims["heads"],
        encoder_ffn_dim=4 * dims["d_model"], decoder_ffn_dim=4 * dims["d_model"],
        max_source_positions=1500, max_target_positions=448,
        decoder_start_token_id=ids["<|startoftranscript|>"], eos_token_id=ids["<|endoftext|>"],
        pad_token_id=ids["<|endoftext|>"], bos_token_id=ids["<|endoftext|>"],
    )
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        decoder_start_token_id=ids["<|startoftranscript|>"], eos_token_id=ids["<|endoftext|>"],
        pad_token_id=ids["<|endoftext|>"], no_timestamps_token_id=ids["<|notimestamps|>"], is_multilingual=False,
        max_length=448, suppress_tokens=[], begin_suppress_tokens=[ids["<|endoftext|>"]],
    )
    processor = WhisperProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=80), tokenizer=tokenizer)
    return LoadedModel("whisper", f"random-{shape}-shape", model, processor, revision=f"random-seed{seed}")


def synthetic_utterances(count: int, seed: int):
    """Noise-and-tone audio at 16 kHz with durations spread like kathleen's test set."""
    from fade.data.utterance import Utterance

    rng = np.random.default_rng(seed)
    utterances = []
    for index in range(count):
        seconds = float(rng.uniform(*DURATION_RANGE_S))
        t = np.arange(int(seconds * 16_000)) / 16_000
        audio = (0.1 * np.sin(2 * np.pi * rng.uniform(120, 400) * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
        utterances.append(Utterance(f"synthetic{index:04d}", "", audio, duration=seconds))
    return utterances


def _synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calibration(shape: str, method: str, device, n: int, batch_size: int) -> dict:
    import torch

    from fade.calibration.layer import ConstantAlpha, QuantizerSettings
    from fade.calibration.sequential import SequentialCalibrator
    from fade.models import get_family
    from fade.quant import GridSpec

    loaded = build_shaped_whisper(shape)
    loaded.model.to(device)
    policy = ConstantAlpha(0.5) if method == "gptq+qep" else None
    calibrator = SequentialCalibrator(get_family("whisper"), loaded, QuantizerSettings("gptq", GridSpec(4, group_size=128)),
                                      policy=policy, track_fp=policy is not None, record_uncorrected=False,
                                      batch_size=batch_size, stats_product_dtype=torch.float32)
    utterances = synthetic_utterances(n, seed=1)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _synchronize(device)
    start = time.perf_counter()
    result = calibrator.run(utterances)
    _synchronize(device)
    seconds = time.perf_counter() - start
    row = {"shape": shape, "phase": "calibration", "method": method, "device": str(device), "utterances": n,
           "batch_size": batch_size, "seconds": round(seconds, 2), "seconds_per_utterance": round(seconds / n, 4),
           "breakdown_s": result.seconds, "linears": len(result.records)}
    if device.type == "cuda":
        row["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return row


def time_evaluation(shape: str, device, n: int, batch_size: int) -> dict:
    import torch

    from fade.eval.module import TranscriptionModule
    from fade.models import get_family

    loaded = build_shaped_whisper(shape)
    loaded.model.to(device)
    module = TranscriptionModule(get_family("whisper"), loaded)
    utterances = sorted(synthetic_utterances(n, seed=2), key=lambda u: -u.duration)  # as SpeechDataModule sorts
    rows = []
    _synchronize(device)
    start = time.perf_counter()
    for first in range(0, n, batch_size):
        chunk = utterances[first:first + batch_size]
        rows += module.transcribe({"id": [u.id for u in chunk], "text": [u.text for u in chunk],
                                   "audio": [u.load() for u in chunk], "duration": [u.duration for u in chunk]})
    _synchronize(device)
    seconds = time.perf_counter() - start
    return {"shape": shape, "phase": "evaluation", "method": "fp", "device": str(device), "utterances": n,
            "batch_size": batch_size, "seconds": round(seconds, 2), "utterances_per_second": round(n / seconds, 3),
            "capped": sum(r["capped"] for r in rows), "token_cap_sum": sum(r["token_cap"] for r in rows),
            "audio_seconds": round(sum(u.duration for u in utterances), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--calib-n", type=int, default=128)
    parser.add_argument("--eval-n", type=int, default=593)
    parser.add_argument("--calib-batch", type=int, default=8)
    parser.add_argument("--eval-batch", type=int, default=16)
    parser.add_argument("--cpu-n", type=int, default=0,
                        help="also time calibration on the CPU with this many utterances (the baseline in the same run)")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench/device_shapes.json"))
    args = parser.parse_args()

    from fade.process import configure_process, platform_tag

    configure_process()
    import torch

    device = torch.device(args.device)
    facts = {"torch": torch.__version__, "platform": platform_tag(), "python": platform.python_version(),
             "cpu_threads": torch.get_num_threads()}
    if device.type == "cuda":
        facts["gpu"] = torch.cuda.get_device_name(device)
    rows = []
    for shape in args.shapes:
        for method in ("gptq", "gptq+qep"):
            rows.append(time_calibration(shape, method, device, args.calib_n, args.calib_batch))
            if args.cpu_n and device.type != "cpu":
                rows.append(time_calibration(shape, method, torch.device("cpu"), args.cpu_n, args.calib_batch))
        rows.append(time_evaluation(shape, device, args.eval_n, args.eval_batch))
        for row in rows[-(3 + 2 * bool(args.cpu_n and device.type != "cpu")):]:
            print(json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"facts": facts, "rows": rows}, indent=2) + "\n")
    tmp.replace(args.out)  # a crash midway leaves no complete-looking file
    print(f"{'shape':<18}{'phase':<13}{'method':<10}{'device':<8}{'n':>5}{'seconds':>10}{'s / utt':>10}")
    for r in rows:
        print(f"{r['shape']:<18}{r['phase']:<13}{r['method']:<10}{r['device']:<8}{r['utterances']:>5}{r['seconds']:>10.2f}"
              f"{r['seconds'] / r['utterances']:>10.4f}")


if __name__ == "__main__":
    main()
