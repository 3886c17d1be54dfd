"""The dashboard's unit: one finished run with the labels the page groups it by (model, dataset,
precision, method, seed), the config it shares with the other seeds, and the page's sort order."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

from fade.analysis.dashboard.svg import finite
from fade.analysis.runs import Run, find_runs
from fade.loggers.common import IGNORE_KEYS, SEED_KEYS
from fade.process import platform_label
from fade.tasks.resume import flatten, schema_default

@dataclass(frozen=True)
class Entry:
    """One finished run and the labels the page groups it by (``Run.method`` reads a config file
    for FADE runs, so the labels are computed once here)."""

    run: Run
    model: str
    dataset: str
    precision: str
    method: str
    seed: int | None
    configuration: str = ""  # the config without seeds and bookkeeping, as JSON: equal across a seed sweep

    @property
    def wer(self) -> float | None:
        value = self.run.metrics.get("wer")
        return float(value) if finite(value) else None

    @property
    def wer_fp(self) -> float | None:
        value = self.run.metrics.get("wer_fp")
        return float(value) if finite(value) else None

    @property
    def compensated(self) -> bool:
        """Whether the run's layers carry compensation coefficients (runs older than the
        ``compensation`` key count as compensated: their records decide)."""
        return self.run.metrics.get("compensation", "unknown") not in ("none", None)

    @property
    def is_fp(self) -> bool:
        """An evaluate run (full precision only): a WER reference, no layers."""
        return self.precision == "fp"

    def label(self) -> str:
        seed = "" if self.seed is None else f" seed {self.seed}"
        return f"{self.model} {self.precision} {self.method}{seed}"


def load_entries(folder: Path) -> list[Entry]:
    entries = [Entry(run, run.model, str(run.metrics.get("dataset") or ""), run.precision, run.method, run.seed,
                     json.dumps(configuration(run.metrics), sort_keys=True, default=str))
               for run in find_runs(folder)]
    return sorted(disambiguate(entries), key=entry_order)


def configuration(metrics: dict[str, Any]) -> dict[str, Any]:
    """The run's config (metrics.json ``config``, flattened; plus its platform) without the seed keys and the keys
    that do not change results: what the seeds of one configuration share (as in W&B groups)."""
    config = metrics.get("config")
    if not isinstance(config, dict):
        return {}  # a run older than the stored config: its labels alone group it
    shared = {key: value for key, value in flatten(config).items()
              if key not in SEED_KEYS and not any(key == k or key.startswith(k + ".") for k in IGNORE_KEYS)}
    if metrics.get("platform"):
        # runs of two machines are not seeds of one configuration (fade/analysis/aggregate.py)
        shared["platform"] = platform_label(metrics["platform"])
    return shared


def disambiguate(entries: Sequence[Entry]) -> list[Entry]:
    """Entries whose labels coincide but whose configs differ (say two ``calibration.num_samples``)
    would pass for seeds of one configuration; their method label gets the differing keys."""
    out: list[Entry] = []
    for group in group_by(entries, "model", "dataset", "precision", "method").values():
        configs = {e.configuration: json.loads(e.configuration) for e in group}
        if len(configs) == 1:
            out.extend(group)
            continue
        keys = dict.fromkeys(key for config in configs.values() for key in config)
        # A run made before an option existed behaved as its schema default (as resume reads it).
        value = lambda config, key: config[key] if key in config else schema_default(key)  # noqa: E731
        differing = [key for key in keys if len({json.dumps(value(c, key), default=str) for c in configs.values()}) > 1]
        if not differing:
            out.extend(group)
            continue
        for entry in group:
            config = configs[entry.configuration]
            detail = ", ".join(f"{key}={value(config, key)}" for key in differing[:3]) + (", …" if len(differing) > 3 else "")
            out.append(replace(entry, method=f"{entry.method} [{detail}]"))
    return out


def method_order(method: str) -> tuple[int, int, str]:
    """Baselines first: rtn, gptq, then QEP and FADE variants, each alphabetically."""
    quantizer, _, compensation = method.split(" [")[0].partition("+")
    compensation_name = compensation.split("(")[0]
    return ({"fp": 0, "rtn": 1, "gptq": 2}.get(quantizer, 3), {"": 0, "qep": 1, "fade": 2}.get(compensation_name, 3), method)


def precision_order(entry: Entry) -> tuple[int, int]:
    bits, group = entry.run.metrics.get("bits"), entry.run.metrics.get("group_size")
    return (bits if isinstance(bits, int) else 99, group if isinstance(group, int) else 0)


def entry_order(entry: Entry) -> tuple[Any, ...]:
    return (entry.model, entry.dataset, precision_order(entry), method_order(entry.method),
            entry.seed is None, entry.seed or 0, str(entry.run.path))


def group_by(entries: Iterable[Entry], *fields: str) -> dict[tuple[str, ...], list[Entry]]:
    """Entries by the values of ``fields``, in the (sorted) order of first appearance."""
    groups: dict[tuple[str, ...], list[Entry]] = {}
    for entry in entries:
        groups.setdefault(tuple(getattr(entry, name) for name in fields), []).append(entry)
    return groups
