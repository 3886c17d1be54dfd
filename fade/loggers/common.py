"""Helpers shared by the loggers: where a run writes, how layer records become columns, and
how a run is named and grouped across seeds."""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

#: Record keys shown first, in this order; any other key follows in first-seen order.
LAYER_COLUMNS = (
    "index", "name", "part", "block", "group", "out_features", "in_features", "bits", "group_size", "method",
    "tokens", "alpha", "v_int", "r_calib", "s", "v_int_raw", "r_calib_raw", "delta_norm_ratio",
    "err_input_only", "err_uncorrected", "err_final", "err_local", "seconds",
)

#: Config keys (dotted) that vary inside one configuration's seed sweep: left out of the group.
SEED_KEYS = ("seed", "calibration.seed")
#: Config keys that do not change results (or are bookkeeping): left out of the group hash.
IGNORE_KEYS = ("hydra", "logger", "paths", "tags", "task", "export",
               "runner.progress_bar", "runner.threads", "runner.num_workers")


def run_folder(explicit: str | Path | None = None) -> Path:
    """``explicit`` when given, else the Hydra run folder, else the current folder."""
    if explicit is not None:
        return Path(explicit)
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            return Path(HydraConfig.get().runtime.output_dir)
    except (ImportError, ValueError):
        pass
    return Path.cwd()


def hydra_job_info() -> dict[str, Any] | None:
    """The Hydra job's number, overrides and run folder; None outside a Hydra app."""
    try:
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            return None
        hc = HydraConfig.get()
        return {"overrides": list(hc.overrides.task), "job_num": hc.job.get("num"), "output_dir": hc.runtime.output_dir,
                "mode": str(hc.mode)}
    except Exception:  # noqa: BLE001 - purely informative
        return None


def layer_columns(records: Sequence[Mapping[str, Any]], with_index: bool = True) -> list[str]:
    """All keys of ``records`` (plus ``index``), known ones first in :data:`LAYER_COLUMNS` order."""
    present = dict.fromkeys(k for r in records for k in r)
    if with_index:
        present.setdefault("index", None)
    known = [k for k in LAYER_COLUMNS if k in present]
    return known + [k for k in present if k not in known]


def scalar(value: Any) -> Any:
    """A JSON scalar for tables: lists/dicts become JSON text, numpy/torch scalars plain numbers."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return scalar(item())
        except (TypeError, ValueError):
            pass
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, default=str)
    return str(value)


def plain(value: Any) -> Any:
    """``value`` made JSON-safe (numpy/torch scalars → numbers, Paths → text), structure kept."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return scalar(value)


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _get(config: Mapping[str, Any], dotted: str, default: Any = None) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def _drop(config: Mapping[str, Any], dotted_keys: Iterable[str]) -> dict[str, Any]:
    out = json.loads(json.dumps(plain(dict(config)), default=str))
    for dotted in dotted_keys:
        *parents, leaf = dotted.split(".")
        node = out
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return out


def config_fingerprint(config: Mapping[str, Any], seed_keys: Iterable[str] = SEED_KEYS,
                       ignore_keys: Iterable[str] = IGNORE_KEYS, length: int = 6) -> str:
    """A short hash of ``config`` without its seeds and bookkeeping keys: equal across a seed sweep."""
    kept = _drop(config, [*seed_keys, *ignore_keys])
    return hashlib.sha1(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:length]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+=-]+", "_", text).strip("_")


def describe(config: Mapping[str, Any]) -> dict[str, str]:
    """Readable pieces of a fade config: model, method, bits, alpha, dataset, calibration."""
    quantizer = str(_get(config, "quantizer.name", "none"))
    compensation = str(_get(config, "compensation.name", "none"))
    method = quantizer if compensation in ("none", "None") else f"{quantizer}+{compensation}"
    w, group_size = _get(config, "bits.w"), _get(config, "bits.group_size")
    bits = "" if w is None else f"w{w}" + (f"g{group_size}" if group_size else "") + ("s" if _get(config, "bits.symmetric") else "")
    alpha = _get(config, "compensation.alpha")
    calibration = _get(config, "calibration.name")
    samples = _get(config, "calibration.num_samples")
    return {
        "model": str(_get(config, "model.name", "model")),
        "method": method,
        "bits": bits,
        "alpha": "" if compensation in ("none", "None") or alpha is None else f"a{alpha}",
        "dataset": str(_get(config, "dataset.name", "")),
        "calibration": "" if calibration is None else f"{calibration}{samples if samples is not None else ''}",
    }


def sweep_group(config: Mapping[str, Any], seed_keys: Iterable[str] = SEED_KEYS,
                ignore_keys: Iterable[str] = IGNORE_KEYS) -> str:
    """Group of a run: the same for every seed of one configuration, different otherwise.

    ``whisper_tiny_en-gptq+qep-w4g128-a0.5-synthetic-synthetic128-3f9a2c``: readable parts, then a
    hash of everything else in the config (so two runs differing only in, say, ``quantizer.percdamp``
    land in different groups). At most 128 characters (W&B's limit).
    """
    d = describe(config)
    parts = [d["model"], d["method"], d["bits"], d["alpha"], d["dataset"], d["calibration"]]
    prefix = "-".join(_slug(p) for p in parts if p)
    fingerprint = config_fingerprint(config, seed_keys, ignore_keys)
    return f"{prefix[:120]}-{fingerprint}"


def seed_suffix(config: Mapping[str, Any]) -> str:
    calibration_seed, seed = _get(config, "calibration.seed"), _get(config, "seed")
    pieces = []
    if calibration_seed is not None:
        pieces.append(f"cs{calibration_seed}")
    if seed is not None:
        pieces.append(f"s{seed}")
    return "-".join(pieces)


def run_name(config: Mapping[str, Any]) -> str:
    """``whisper_tiny_en-gptq+qep-w4g128-a0.5-cs0-s0``: the configuration and its seeds."""
    d = describe(config)
    prefix = "-".join(_slug(p) for p in (d["model"], d["method"], d["bits"], d["alpha"]) if p)
    suffix = seed_suffix(config)
    return f"{prefix}-{suffix}" if suffix else prefix


def default_tags(config: Mapping[str, Any]) -> list[str]:
    d = describe(config)
    tags = [d["model"], d["method"], d["bits"], d["dataset"]]
    tags += [str(t) for t in (_get(config, "tags") or [])]
    return list(dict.fromkeys(t[:64] for t in tags if t))
