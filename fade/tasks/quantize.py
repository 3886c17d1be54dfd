"""``task=quantize``: calibrate a quantized model, then evaluate it beside full precision.

Run folder:
- ``fp/`` and ``quantized/``: hypotheses.jsonl and metrics.json of each model;
- ``layers.csv`` / ``layers.jsonl``: one record per quantized Linear (α, errors, seconds...);
- ``metrics.json``: the summary (both WERs, calibration timings), written last and atomically.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from fade.cache import atomic_write_json, atomic_write_text, csv_text
from fade.calibration.layer import ConstantAlpha, QuantizerSettings
from fade.calibration.sequential import SequentialCalibrator
from fade.data.datamodule import SpeechDataModule, draw_calibration, draw_dev
from fade.data.sources import ListSource
from fade.errors import ConfigError
from fade.eval.fp_cache import cached_fp_evaluation
from fade.eval.runner import evaluate, format_table
from fade.models.base import LoadedModel
from fade.process import code_version, platform_record
from fade.quant import GridSpec
from fade.tasks.resume import result_config
from fade.tasks.common import build_datamodule, build_model, family_of, instantiate_source, run_dir, setup_torch, sweep_copies

log = logging.getLogger(__name__)

_DTYPES = {"float64": torch.float64, "float32": torch.float32}


def alpha_policy(cfg: DictConfig):
    """The compensation config → an α policy (None = no correction)."""
    name = cfg.compensation.name
    if name == "none":
        return None
    if name == "qep":
        return ConstantAlpha(float(cfg.compensation.alpha))
    if name == "fade":
        from fade.diagnostics import FadePolicy

        c = cfg.compensation
        try:
            return FadePolicy(c.v_int, c.r_calib, normalization=c.normalization, v_sign=c.v_sign, r_sign=c.r_sign,
                              v_weight=c.v_weight, r_weight=c.r_weight, alpha_min=c.alpha_min, alpha_max=c.alpha_max,
                              qep_damp=c.damp, warmup=c.warmup, robust=c.robust, mapping=c.mapping)
        except (KeyError, ValueError) as exc:
            raise ConfigError(f"compensation=fade: {exc}") from exc
    raise ConfigError(f"unknown compensation {name!r}; use none, qep or fade")


def quantizer_settings(cfg: DictConfig) -> QuantizerSettings:
    if cfg.quantizer.name not in ("rtn", "gptq"):
        raise ConfigError(f"task=quantize needs quantizer=rtn or gptq, got {cfg.quantizer.name!r}")
    grid = GridSpec(bits=cfg.bits.w, symmetric=cfg.bits.symmetric, group_size=cfg.bits.group_size)
    q = cfg.quantizer
    return QuantizerSettings(q.name, grid, block_size=q.block_size, percdamp=q.percdamp, act_order=q.act_order,
                             static_groups=q.static_groups)


def quantize_task(cfg: DictConfig, fingerprint: str | None = None) -> dict[str, Any]:
    out = run_dir()
    device = setup_torch(cfg)
    settings = quantizer_settings(cfg)
    policy = alpha_policy(cfg)
    logger = hydra.utils.instantiate(cfg.logger) if cfg.logger else None
    if logger is not None:
        logger.log_config(OmegaConf.to_container(cfg, resolve=True))

    datamodule = build_datamodule(cfg)
    datamodule.setup()
    calib_source = instantiate_source(cfg.calibration.source, "calibration.source")
    calib_pool = calib_source.utterances()
    calibration = draw_calibration(calib_pool, cfg.calibration.num_samples, cfg.calibration.seed)
    dev = None
    if cfg.calibration.dev_samples:
        dev_utterances = draw_dev(calib_pool, calibration, cfg.calibration.dev_samples, cfg.calibration.seed)
        dev = SpeechDataModule(ListSource(dev_utterances, f"{cfg.calibration.name}-dev"), batch_size=cfg.runner.batch_size,
                               num_workers=cfg.runner.num_workers)
        dev.setup()
    loaded = build_model(cfg, device)
    family = family_of(cfg)
    r = cfg.runner
    eval_kwargs = dict(device=device, devices=r.devices, num_beams=r.num_beams, max_new_tokens_per_second=r.max_new_tokens_per_second,
                       max_new_tokens_floor=r.max_new_tokens_floor, progress_bar=r.progress_bar)

    calibrator = SequentialCalibrator(
        family, loaded, settings, policy=policy, qep_damp=cfg.compensation.damp, exclude=cfg.quantizer.exclude,
        compensation_exclude=cfg.compensation.exclude if policy is not None else [], batch_size=cfg.calibration.batch_size,
        track_fp=cfg.calibration.track_fp, record_uncorrected=cfg.calibration.record_uncorrected,
        stats_dtype=_DTYPES[cfg.calibration.stats_dtype], stats_product_dtype=_DTYPES[cfg.calibration.stats_product_dtype],
    )
    calibrator.plan(loaded.model)  # bad bits/group sizes/patterns fail here, before any evaluation
    if cfg.export and settings.act_order and settings.grid.group_size and settings.static_groups is False:
        raise ConfigError("export=true needs contiguous groups: act-order with quantizer.static_groups=false gives a g_idx "
                          "that compressed-tensors >= 0.20 cannot load; use static_groups=null (default) or true")

    fp_key = {"model": loaded.revision, "dtype": cfg.model.dtype, "dataset": OmegaConf.to_container(cfg.dataset, resolve=True),
              "batch_size": r.batch_size, "num_beams": r.num_beams, "cap": [r.max_new_tokens_per_second, r.max_new_tokens_floor],
              "device": device.type, **({"devices": r.devices} if r.devices != 1 else {})}  # shares change batches
    fp_metrics = cached_fp_evaluation(fp_key, out / "fp", lambda folder: evaluate(family, loaded, datamodule, folder, **eval_kwargs,
                                                                                extra={"precision": "fp"}), sweep_copies(out, "fp"))
    if dev is not None:  # the dev split's ids are in the key: each calibration seed has its own
        dev_key = {**fp_key, "dataset": {"dev_of": cfg.calibration.name, "ids": [u.id for u in dev.utterances]}}
        fp_dev_metrics = cached_fp_evaluation(dev_key, out / "dev" / "fp", lambda folder: evaluate(
            family, loaded, dev, folder, **eval_kwargs, extra={"precision": "fp"}), sweep_copies(out, "dev/fp"))

    start = time.perf_counter()
    result = calibrator.run(calibration)
    calibration_seconds = time.perf_counter() - start
    records = result.records
    atomic_write_text(out / "layers.jsonl", "".join(json.dumps(rec) + "\n" for rec in records))
    atomic_write_text(out / "layers.csv", csv_text(records))
    if cfg.export:  # packed low-bit checkpoint (compressed-tensors pack-quantized)
        from fade.export import export_packed

        export_report = export_packed(loaded, result, settings.grid, out / "packed", overwrite=True,
                                      actorder="weight" if settings.act_order else None)
        log.info("packed checkpoint: %s (%.3f bits per quantized weight)", out / "packed",
                 export_report["totals"]["bits_per_quantized_weight"])

    quantized = LoadedModel(loaded.family, loaded.name, result.model, loaded.processor, loaded.revision, dict(loaded.info))
    method = settings.method + ("" if policy is None else f"+{cfg.compensation.name}")
    q_metrics = evaluate(family, quantized, datamodule, out / "quantized", **eval_kwargs,
                         extra={"precision": f"w{settings.grid.bits}" + (f"g{settings.grid.group_size}" if settings.grid.group_size else "")})
    dev_summary = {}
    if dev is not None:
        q_dev_metrics = evaluate(family, quantized, dev, out / "dev" / "quantized", **eval_kwargs)
        dev_summary = {"wer_dev": q_dev_metrics["wer"], "wer_dev_fp": fp_dev_metrics["wer"],
                       "dev_utterances": q_dev_metrics["utterances"], "dev_words": q_dev_metrics["words"],
                       "capped_utterances_dev": q_dev_metrics["capped_utterances"]}
    summary = {
        "model": loaded.name, "model_revision": loaded.revision, "dataset": datamodule.name, "method": method,
        "quantizer": settings.method, "compensation": cfg.compensation.name,
        "alpha": cfg.compensation.alpha if cfg.compensation.name == "qep" else None,
        "alpha_mean": (sum(r["alpha"] for r in records) / len(records)) if policy is not None and records else None,
        "bits": settings.grid.bits, "group_size": settings.grid.group_size, "symmetric": settings.grid.symmetric,
        "calibration": cfg.calibration.name, "calibration_samples": len(calibration), "calibration_seed": cfg.calibration.seed,
        "seed": cfg.seed, "wer_fp": fp_metrics["wer"], "wer": q_metrics["wer"], "wer_delta": q_metrics["wer"] - fp_metrics["wer"],
        "utterances": q_metrics["utterances"], "words": q_metrics["words"],
        "capped_utterances": q_metrics["capped_utterances"], "capped_utterances_fp": fp_metrics["capped_utterances"],
        "token_cap_rule": q_metrics["token_cap_rule"], "quantized_linears": len(records),
        "kept_in_full_precision": "embeddings, convolutional stem, output projection and any quantizer.exclude match",
        "calibration_seconds": round(calibration_seconds, 2), "calibration_breakdown_seconds": result.seconds,
        "eval_seconds": q_metrics["seconds"], "eval_seconds_fp": fp_metrics["seconds"], "device": str(device),
        "platform": platform_record(device), "code": code_version(),
        **dev_summary, "tags": list(cfg.tags), "config_fingerprint": fingerprint,
        "config": result_config(cfg),
    }
    if logger is not None:
        logger.log_layers(records)
        logger.log_metrics(summary)
        logger.finish()
    atomic_write_json(out / "metrics.json", summary)
    print("\n" + format_table([{**fp_metrics, "label": f"{loaded.name} fp"}, {**q_metrics, "label": f"{loaded.name} {method} w{settings.grid.bits}"}]))
    print(f"results: {out}")
    return summary
