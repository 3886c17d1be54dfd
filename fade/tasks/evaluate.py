"""``task=evaluate``: transcribe the evaluation set with the model as loaded and report WER."""

from __future__ import annotations

import logging
from typing import Any

from omegaconf import DictConfig

from fade.eval.runner import evaluate, format_table
from fade.tasks.resume import result_config
from fade.tasks.common import build_datamodule, build_model, family_of, run_dir, setup_torch

log = logging.getLogger(__name__)


def evaluate_task(cfg: DictConfig, fingerprint: str | None = None) -> dict[str, Any]:
    device = setup_torch(cfg)
    datamodule = build_datamodule(cfg)
    datamodule.setup()  # read the manifest first: a bad dataset fails before the model loads
    loaded = build_model(cfg, device)
    r = cfg.runner
    metrics = evaluate(
        family_of(cfg), loaded, datamodule, run_dir(), device=device, devices=r.devices, num_beams=r.num_beams,
        max_new_tokens_per_second=r.max_new_tokens_per_second, max_new_tokens_floor=r.max_new_tokens_floor,
        progress_bar=r.progress_bar, extra={"precision": "fp", "model_dtype": cfg.model.dtype, "config_fingerprint": fingerprint,
               "config": result_config(cfg)},
    )
    print("\n" + format_table([metrics]))
    print(f"results: {run_dir()}")
    return metrics
