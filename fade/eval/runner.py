"""Evaluation runner: transcribe a dataset with a Lightning Trainer, score WER, write results.

Outputs in the run folder:
- ``hypotheses.jsonl``: one line per utterance (id, reference, hypothesis, normalised forms,
  error counts, duration, token cap and whether it was hit);
- ``metrics.json``: corpus WER and its parts, counts, timing, settings. Written last and
  atomically, so a run that crashed midway has no metrics.json.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from fade.cache import atomic_write_json, atomic_write_text
from fade.data.datamodule import SpeechDataModule
from fade.eval.module import TranscriptionModule
from fade.eval.wer import normalize, score
from fade.models.base import LoadedModel, ModelFamily
from fade.process import platform_record

log = logging.getLogger(__name__)


def resolve_device(device: str) -> torch.device:
    """``auto`` → CUDA if present else CPU; ``cuda`` without a GPU is an error, not a silent fallback."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"runner.device={device!r} but no CUDA device is available; use runner.device=cpu or auto")
    return torch.device(device)


class _RankPredictionWriter(BasePredictionWriter):
    """Each evaluation process writes its share of the transcripts to ``folder/rank<N>.json``.

    Lightning's documented way to collect predictions of several processes: a spawned process
    returns only rank 0's predictions, so every rank writes its own file and the calling process
    merges them (``UnrepeatedDistributedSamplerWrapper`` gives each utterance to exactly one rank).
    """

    def __init__(self, folder: Path):
        super().__init__(write_interval="batch")  # per batch: spawned predict loops keep no predictions
        self.folder = Path(folder)
        self.rows: list[dict[str, Any]] = []

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx) -> None:
        self.rows.extend(prediction)

    def on_predict_epoch_end(self, trainer, pl_module) -> None:
        atomic_write_text(self.folder / f"rank{trainer.global_rank}.json", json.dumps(self.rows))


def _trainer(device: torch.device, devices: Any, progress_bar: bool, rank_folder: Path) -> L.Trainer:
    """One evaluation Trainer; with several processes each writes its transcripts into ``rank_folder``."""
    # Lightning announces the hardware and advertises add-ons at INFO on every Trainer; fade
    # records the device in metrics.json instead.
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero", "lightning.pytorch.accelerators.cuda"):
        logging.getLogger(name).setLevel(logging.WARNING)
    if device.type == "cuda" and device.index is not None and devices == 1:
        devices = [device.index]  # runner.device=cuda:1 means that GPU, not the first visible one
    settings = dict(accelerator="gpu" if device.type == "cuda" else "cpu", devices=devices, logger=False,
                    enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=progress_bar,
                    inference_mode=True)
    trainer = L.Trainer(**settings)
    if trainer.world_size > 1:
        # Plain DDP re-launches the whole command once per device, which would calibrate again in
        # every process (and restart a `fade -m` sweep); spawned processes instead receive the
        # model as it is in memory, calibrated or not, and each transcribes a share of the data.
        trainer = L.Trainer(**settings, strategy="ddp_spawn", callbacks=[_RankPredictionWriter(rank_folder)])
    return trainer


def transcribe_dataset(family: ModelFamily, loaded: LoadedModel, datamodule: SpeechDataModule, *, device: torch.device,
                       devices: Any = 1, num_beams: int = 1, max_new_tokens_per_second: float = 10.0,
                       max_new_tokens_floor: int = 16, progress_bar: bool = True) -> list[dict[str, Any]]:
    """Transcripts of every utterance, in the data module's order; ``devices`` > 1 shares them out."""
    module = TranscriptionModule(family, loaded, num_beams=num_beams, max_new_tokens_per_second=max_new_tokens_per_second,
                                 max_new_tokens_floor=max_new_tokens_floor)
    with tempfile.TemporaryDirectory(prefix="fade-ranks-") as folder:
        trainer = _trainer(device, devices, progress_bar, rank_folder=Path(folder))
        if trainer.world_size == 1:
            batches = trainer.predict(module, datamodule=datamodule)
            return [row for batch in batches for row in batch]
        trainer.predict(module, datamodule=datamodule, return_predictions=False)
        shares = [Path(folder) / f"rank{rank}.json" for rank in range(trainer.world_size)]
        missing = [path.name for path in shares if not path.is_file()]
        if missing:
            raise RuntimeError(f"evaluation processes {missing} returned no transcripts; see their errors above")
        rows = [row for path in shares for row in json.loads(path.read_text())]
    datamodule.setup()  # the spawned processes set up their own copies
    order = {u.id: index for index, u in enumerate(datamodule.utterances)}
    if sorted(order[row["id"]] for row in rows) != list(range(len(order))):
        raise RuntimeError(f"{trainer.world_size} evaluation processes returned {len(rows)} transcripts for "
                           f"{len(order)} utterances; each utterance must be transcribed exactly once")
    return sorted(rows, key=lambda row: order[row["id"]])


def evaluate(family: ModelFamily, loaded: LoadedModel, datamodule: SpeechDataModule, output_dir: Path, *,
             device: torch.device, devices: Any = 1, num_beams: int = 1, max_new_tokens_per_second: float = 10.0,
             max_new_tokens_floor: int = 16, progress_bar: bool = True, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Transcribe and score one dataset; write hypotheses and metrics into ``output_dir``."""
    output_dir = Path(output_dir)
    start = time.perf_counter()
    rows = transcribe_dataset(family, loaded, datamodule, device=device, devices=devices, num_beams=num_beams,
                              max_new_tokens_per_second=max_new_tokens_per_second,
                              max_new_tokens_floor=max_new_tokens_floor, progress_bar=progress_bar)
    seconds = time.perf_counter() - start
    result = score([r["reference"] for r in rows], [r["hypothesis"] for r in rows])
    for row, utt in zip(rows, result.per_utterance):
        row.update(reference_normalized=normalize(row["reference"]), hypothesis_normalized=normalize(row["hypothesis"]),
                   words=utt.reference_words, substitutions=utt.substitutions, deletions=utt.deletions,
                   insertions=utt.insertions)
    audio_seconds = sum(r["duration"] for r in rows)
    metrics = {
        "wer": result.wer,
        "substitutions": result.substitutions,
        "deletions": result.deletions,
        "insertions": result.insertions,
        "hits": result.hits,
        "words": result.words,
        "utterances": len(rows),
        "model": loaded.name,
        "model_family": loaded.family,
        "model_revision": loaded.revision,
        "dataset": datamodule.name,
        "seconds": round(seconds, 3),
        "audio_seconds": round(audio_seconds, 3),
        "utterances_per_second": round(len(rows) / seconds, 4) if seconds > 0 else None,
        "real_time_factor": round(seconds / audio_seconds, 5) if audio_seconds > 0 else None,
        "device": str(device),
        "platform": platform_record(device),
        "batch_size": datamodule.batch_size,
        "num_beams": num_beams,
        "token_cap_rule": f"ceil({max_new_tokens_per_second} * seconds) + {max_new_tokens_floor}",
        "capped_utterances": sum(bool(r["capped"]) for r in rows),
        "normalizer": "whisper EnglishTextNormalizer (whisper-normalizer)",
        **(extra or {}),
    }
    lines = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in sorted(rows, key=lambda r: r["id"]))
    atomic_write_text(output_dir / "hypotheses.jsonl", lines)
    atomic_write_json(output_dir / "metrics.json", metrics)
    return metrics


def format_table(rows: list[dict[str, Any]]) -> str:
    """A short plain-text table of runs: model, dataset, utterances, WER, seconds."""
    header = f"{'model':<28} {'dataset':<20} {'utts':>5} {'WER %':>7} {'S/D/I':>13} {'capped':>6} {'sec':>8}"
    lines = [header, "-" * len(header)]
    for m in rows:
        sdi = f"{m['substitutions']}/{m['deletions']}/{m['insertions']}"
        lines.append(f"{m.get('label', m['model']):<28.28} {m['dataset']:<20.20} {m['utterances']:>5} {100 * m['wer']:>7.2f} "
                     f"{sdi:>13} {m['capped_utterances']:>6} {m['seconds']:>8.1f}")
    return "\n".join(lines)
