"""``logger=wandb``: Weights & Biases run per fade job, offline by default.

One W&B run per Hydra job: it opens in :meth:`WandbLogger.log_config` (the first call, when the
resolved config is known, so that group and name can be derived from it) and closes in
:meth:`WandbLogger.finish`. What it records:

- ``config``: the resolved fade config (plus ``hydra``: overrides, job number, run folder);
- ``layers/table``: one row per quantized Linear, every record key a column (plus ``index``,
  the quantization order);
- ``layers/alpha_by_layer`` (and ``v_int``/``r_calib``/``s``... when recorded): a line chart over
  the layer index with one series per part (encoder/decoder/projector), and
  ``layers/alpha_<part>`` bar charts, one per part (``wandb.plot.bar`` has only label and value
  fields: no colour/split field, hence one chart per part);
- ``layers/error_by_layer``: per-layer error before (``err_uncorrected``) and after (``err_final``)
  correction, plus ``err_input_only``/``err_local`` when present;
- ``run.summary``: every summary key (``wer_fp``, ``wer``, ``wer_delta``...) and a small
  ``summary/wer`` table with its bar chart.

``mode``: ``offline`` (default: nothing leaves the machine; run files under
``<run folder>/wandb/offline-run-*``, upload later with ``wandb sync``), ``online``, ``auto``
(``WANDB_MODE`` if set, else online when an API key is configured: ``WANDB_API_KEY`` or
``wandb login``'s netrc entry, else offline) or ``disabled``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import weakref
from pathlib import Path
from typing import Any, Sequence

from fade.loggers.common import (IGNORE_KEYS, SEED_KEYS, default_tags, finite, hydra_job_info, layer_columns, plain,
                                 run_folder, run_name, scalar, sweep_group)

log = logging.getLogger(__name__)

#: Per-layer quantities charted by layer index, one series per part, when the records have them.
LAYER_SERIES = ("alpha", "v_int", "r_calib", "s", "delta_norm_ratio")
#: Error columns of the before/after chart, in legend order.
ERROR_SERIES = ("err_input_only", "err_uncorrected", "err_final", "err_local")

# Runs opened by WandbLogger and not finished yet. In a basic-launcher multirun all jobs share one
# process: a job that crashed before finish() leaves its run open, and the next job closes it
# (marked failed) before opening its own.
_OPEN: "weakref.WeakSet[WandbLogger]" = weakref.WeakSet()


def has_credentials() -> bool:
    """Whether an API key is configured (env or netrc), without contacting the server."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")
    try:
        from wandb.sdk.lib import wbauth

        return bool(wbauth.read_netrc_auth(host=host))
    except Exception:  # noqa: BLE001 - private API moved: fall back to the public (deprecated) one
        pass
    try:
        import wandb

        return bool(wandb.api.api_key)
    except Exception:  # noqa: BLE001
        return False


def resolve_mode(mode: str) -> str:
    mode = (mode or "offline").lower()
    if mode == "auto":
        env = os.environ.get("WANDB_MODE")
        if env:
            return "offline" if env == "dryrun" else env
        return "online" if has_credentials() else "offline"
    if mode not in ("online", "offline", "disabled"):
        raise ValueError(f"logger.mode must be online, offline, auto or disabled, got {mode!r}")
    return mode


class WandbLogger:
    """Logs a fade run to Weights & Biases.

    Args:
        mode: ``offline`` (default), ``online``, ``auto`` or ``disabled`` (see the module doc).
        project, entity: W&B project (``fade``) and entity (null = the user's default).
        group: W&B group; null = derived from the config so that every calibration seed of one
            configuration shares it (:func:`fade.loggers.common.sweep_group`).
        name: run name; null = configuration + seeds (``whisper_tiny_en-gptq+qep-w4g128-a0.5-cs1-s0``).
        job_type: null = the config's ``task`` (``quantize``).
        tags: extra tags (model, method, bits, dataset and the config's ``tags`` are always added).
        notes: run description.
        dir: parent of the ``wandb/`` folder; null = the Hydra run folder (cwd outside Hydra).
        seed_keys: dotted config keys left out of the group (what a seed sweep varies).
        ignore_keys: dotted config keys that do not split groups (progress bar, threads...).
        charts: log the per-layer charts (the table is always logged).
        settings: extra ``wandb.Settings`` fields (e.g. ``{x_save_requirements: false}``).
        strict: raise logging errors. By default a failure to log layers/metrics is a warning, and an
            online run whose ``wandb.init`` fails (no network, bad key) falls back to offline.
    """

    def __init__(self, mode: str = "offline", project: str = "fade", entity: str | None = None, group: str | None = None,
                 name: str | None = None, job_type: str | None = None, tags: Sequence[str] = (), notes: str | None = None,
                 dir: str | None = None, seed_keys: Sequence[str] = SEED_KEYS, ignore_keys: Sequence[str] = IGNORE_KEYS,
                 charts: bool = True, settings: dict[str, Any] | None = None, strict: bool = False):
        self.mode = resolve_mode(mode)
        self.project, self.entity, self.group, self.name = project, entity, group, name
        self.job_type, self.tags, self.notes = job_type, list(tags or ()), notes
        self.dir = run_folder(dir)
        self.seed_keys, self.ignore_keys = list(seed_keys), list(ignore_keys)
        self.charts = charts
        self.extra_settings = dict(settings or {})
        self.strict = strict
        self.run = None
        self.run_folder: Path | None = None

    # -- run lifetime ---------------------------------------------------------------------------

    def _settings(self):
        import wandb

        base = dict(silent=True, console="off", disable_code=True, disable_git=True, save_code=False,
                    disable_job_creation=True, x_disable_stats=True, x_disable_meta=self.mode != "online",
                    x_disable_machine_info=self.mode != "online")
        base.update(self.extra_settings)
        return wandb.Settings(**base)

    def log_config(self, config: dict[str, Any]) -> None:
        import wandb

        for stale in list(_OPEN):
            if stale is not self:
                log.warning("closing W&B run %s left open by an earlier job (marked failed)", stale.name)
                stale.finish(exit_code=1)
        config = plain(config)
        if self.run is not None:
            self.run.config.update(config, allow_val_change=True)
            return
        # Group and name come from fade's config alone (the Hydra block below names the job's
        # overrides, seeds included, so it must not enter the group hash).
        self.group = self.group or sweep_group(config, self.seed_keys, self.ignore_keys)
        self.name = self.name or run_name(config)
        self.job_type = self.job_type or str(config.get("task") or "quantize")
        tags = list(dict.fromkeys([*self.tags, *default_tags(config)]))
        hydra = hydra_job_info()
        if hydra is not None:
            config = {**config, "hydra": hydra}
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.mode != "online":
            # wandb-core's own error reporting (Sentry) is the one thing that could still try the
            # network; it reads this when the service starts (once per process).
            os.environ.setdefault("WANDB_ERROR_REPORTING", "false")
        kwargs = dict(project=self.project, entity=self.entity, group=self.group, name=self.name, job_type=self.job_type,
                      tags=tags, notes=self.notes, config=config, dir=str(self.dir),
                      reinit="create_new")  # never adopt or close runs this logger did not open (see _OPEN)
        try:
            self.run = wandb.init(mode=self.mode, settings=self._settings(), **kwargs)
        except Exception:
            if self.strict or self.mode != "online":
                raise
            # Server unreachable or key rejected: keep the run, offline (upload it later with wandb sync).
            log.warning("W&B: online init failed; logging this run offline instead", exc_info=True)
            self.mode = "offline"
            self.run = wandb.init(mode="offline", settings=self._settings(), **kwargs)
        _OPEN.add(self)
        # <dir>/wandb/offline-run-<time>-<id>/ (run-<id>.wandb, files/): see fade.loggers.wandb_offline
        self.run_folder = Path(self.run.dir).parent if getattr(self.run, "dir", None) else None

    def finish(self, exit_code: int | None = None) -> None:
        """Close the run (flushes the offline files); safe to call twice."""
        run, self.run = self.run, None
        _OPEN.discard(self)
        if run is not None:
            run.finish(exit_code=exit_code)

    def __enter__(self) -> "WandbLogger":
        return self

    def __exit__(self, kind, value, traceback) -> None:
        self.finish(exit_code=1 if kind is not None else None)

    @contextlib.contextmanager
    def _guard(self, what: str):
        """Unless ``strict``, a logging failure is a warning: it must not cost the quantized run."""
        try:
            yield
        except Exception:
            if self.strict:
                raise
            log.warning("W&B: could not log the %s; the run folder still has everything", what, exc_info=True)

    def _require_run(self):
        if self.run is None:
            # log_layers/log_metrics without log_config: open a run with an empty config.
            self.log_config({})
        return self.run

    # -- content ---------------------------------------------------------------------------------

    def layer_table(self, records: Sequence[dict[str, Any]]):
        import wandb

        columns = layer_columns(records)
        rows = [[scalar(index if key == "index" and "index" not in record else record.get(key)) for key in columns]
                for index, record in enumerate(records)]
        return wandb.Table(columns=columns, data=rows, allow_mixed_types=True)

    def log_layers(self, records: Sequence[dict[str, Any]]) -> None:
        with self._guard("per-layer records"):
            self._log_layers(records)

    def _log_layers(self, records: Sequence[dict[str, Any]]) -> None:
        run = self._require_run()
        records = [plain(r) for r in records]
        if not records:
            return
        payload: dict[str, Any] = {"layers/table": self.layer_table(records)}
        if self.charts:
            payload.update(self._layer_charts(records))
        run.log(payload)
        run.summary["layers/count"] = len(records)

    def _layer_charts(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        import wandb

        charts: dict[str, Any] = {}
        parts = list(dict.fromkeys(str(r.get("part") or "model") for r in records))
        indexed = [(r.get("index", i), r) for i, r in enumerate(records)]
        for key in LAYER_SERIES:
            xs, ys, keys = [], [], []
            for part in parts:
                points = [(i, r[key]) for i, r in indexed if str(r.get("part") or "model") == part and finite(r.get(key))]
                if points:
                    xs.append([p[0] for p in points])
                    ys.append([p[1] for p in points])
                    keys.append(part)
            if ys:
                charts[f"layers/{key}_by_layer"] = wandb.plot.line_series(xs, ys, keys=keys, title=f"{key} by layer",
                                                                          xname="layer index")
        for part in parts:
            rows = [[f"{i:03d} {r.get('name', '')}", r["alpha"]] for i, r in indexed
                    if str(r.get("part") or "model") == part and finite(r.get("alpha"))]
            if rows:
                table = wandb.Table(columns=["layer", "alpha"], data=rows)
                charts[f"layers/alpha_{part}"] = wandb.plot.bar(table, "layer", "alpha", title=f"α by layer ({part})")
        series = [k for k in ERROR_SERIES if any(finite(r.get(k)) for r in records)]
        if series:
            xs, ys = [], []
            for key in series:
                points = [(i, r[key]) for i, r in indexed if finite(r.get(key))]
                xs.append([p[0] for p in points])
                ys.append([p[1] for p in points])
            charts["layers/error_by_layer"] = wandb.plot.line_series(
                xs, ys, keys=series, title="layer error before (err_uncorrected) / after (err_final) correction",
                xname="layer index")
        return charts

    def log_metrics(self, metrics: dict[str, Any]) -> None:
        with self._guard("summary"):
            self._log_metrics(metrics)

    def _log_metrics(self, metrics: dict[str, Any]) -> None:
        import wandb

        run = self._require_run()
        metrics = plain(metrics)
        run.summary.update(metrics)
        wers = [[label, metrics[key]] for label, key in (("fp", "wer_fp"), ("quantized", "wer")) if finite(metrics.get(key))]
        if wers:
            table = wandb.Table(columns=["precision", "wer"], data=wers)
            payload = {"summary/wer": table}
            if self.charts:
                payload["summary/wer_chart"] = wandb.plot.bar(table, "precision", "wer", title="WER (full precision vs quantized)")
            run.log(payload)
