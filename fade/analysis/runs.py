"""Finished runs on disk, as the tasks write them (see fade/tasks/quantize.py).

A run folder holds ``metrics.json`` (written last: its presence means the run finished),
``layers.jsonl`` (one record per quantized Linear), and ``fp/`` and ``quantized/`` folders
with ``hypotheses.jsonl`` (per-utterance word counts). A sweep folder holds run folders at any
depth. Runs without a metrics.json (crashed or still running) are never read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

from fade.errors import DataError


@dataclass
class Run:
    path: Path
    metrics: dict[str, Any]
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def model(self) -> str:
        return str(self.metrics.get("model"))

    @property
    def bits(self) -> int | None:
        return self.metrics.get("bits")

    @property
    def precision(self) -> str:
        """``w3g128``-style label, or ``fp`` for an evaluate run."""
        bits, group = self.metrics.get("bits"), self.metrics.get("group_size")
        if bits is None:
            return "fp"
        return f"w{bits}" + (f"g{group}" if group else "")

    @property
    def method(self) -> str:
        """The method label tables group by: rtn, gptq, gptq+qep(α=0.5), gptq+fade, fp."""
        m = self.metrics
        if "method" not in m:
            return "fp"
        if m.get("compensation") == "qep":
            return f"{m['method']}(α={float(m['alpha']):g})"
        if m.get("compensation") == "fade":
            changed = fade_variant(m.get("config", {}).get("compensation", {}))
            return f"{m['method']}({changed})" if changed else str(m["method"])
        return str(m["method"])

    @property
    def platform(self) -> str:
        """The platform that made this run, in short (``unknown`` for runs older than the record).

        Low-bit WERs move by tenths of a point with floating-point detail (the first GPTQ layer already
        rounds differently on two CPUs), so methods are compared only on runs of the same platform.
        """
        from fade.process import platform_label

        return platform_label(self.metrics.get("platform"))

    @property
    def seed(self) -> int | None:
        return self.metrics.get("calibration_seed")

    @property
    def capped_dev(self) -> int | None:
        """Dev utterances that hit their token cap (loops), or None for a run without a dev split."""
        if "capped_utterances_dev" in self.metrics:
            return self.metrics["capped_utterances_dev"]
        path = self.path / "dev" / "quantized" / "metrics.json"
        return json.loads(path.read_text()).get("capped_utterances") if path.is_file() else None

    @cached_property
    def layers(self) -> list[dict[str, Any]]:
        path = self.path / "layers.jsonl"
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def utterances(self, which: str = "quantized") -> dict[str, dict[str, Any]]:
        """Per-utterance records of ``fp`` or ``quantized`` (an evaluate run: the run folder), by id."""
        if which not in self._cache:
            folder = self.path / which if (self.path / which / "hypotheses.jsonl").is_file() else self.path
            path = folder / "hypotheses.jsonl"
            if not path.is_file():
                raise DataError(f"{path} is missing: the per-utterance results of {self.path} are gone")
            self._cache[which] = {r["id"]: r for r in map(json.loads, path.read_text().splitlines()) if r}
        return self._cache[which]


#: The FADE keys a variant is labelled by when they differ from conf/compensation/fade.yaml.
_FADE_KEYS = ("v_int", "r_calib", "normalization", "v_sign", "r_sign", "v_weight", "r_weight", "alpha_min", "alpha_max",
              "warmup", "robust", "mapping")


@lru_cache(maxsize=1)
def _fade_defaults() -> dict[str, Any]:
    """conf/compensation/fade.yaml, read once (every FADE run's label is compared with it)."""
    from omegaconf import OmegaConf

    from fade.cli import CONFIG_DIR

    return OmegaConf.to_container(OmegaConf.load(Path(CONFIG_DIR) / "compensation" / "fade.yaml"))


def fade_variant(compensation: dict[str, Any]) -> str:
    """``v_int=kurtosis,r_calib=None`` for an ablation; empty for the default FADE config."""
    defaults = _fade_defaults()
    return ",".join(f"{key}={compensation[key]}" for key in _FADE_KEYS
                    if key in compensation and compensation[key] != defaults.get(key))


def find_runs(folder: str | Path, *, allow_none: bool = False) -> list[Run]:
    """Every finished run under ``folder`` (itself a run folder, or a sweep of them), sorted by path.
    None finished is an error unless ``allow_none`` (a sweep that has only started, or only crashed)."""
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"{root} is not a folder; pass a run folder (outputs/runs/...) or a sweep folder (outputs/multirun/...)")
    runs = []
    for metrics_path in sorted(root.rglob("metrics.json")):
        run_folder = metrics_path.parent
        if run_folder.name in ("fp", "quantized") or run_folder.parent.name == "dev":
            continue  # the per-model parts of a quantize run, not runs themselves
        try:
            metrics = json.loads(metrics_path.read_text())
        except json.JSONDecodeError as exc:
            raise DataError(f"{metrics_path} is not valid JSON ({exc}); delete it and re-run that run") from exc
        runs.append(Run(run_folder, metrics))
    if not runs and not allow_none:
        raise DataError(f"no finished runs under {root} (no metrics.json): has the sweep written any results yet?")
    return runs
