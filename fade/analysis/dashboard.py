"""``fade-dashboard``: one self-contained, offline HTML page of a run or sweep folder.

    fade-dashboard outputs/multirun/<sweep>                      # -> <sweep>/dashboard.html
    fade-dashboard outputs/runs/<run> -o run.html
    fade-dashboard outputs/multirun/<sweep> --diff RUN_A RUN_B   # per-utterance diff of two runs

The page holds, for the runs found by :func:`fade.analysis.runs.find_runs`:

1. WER per method for each model, dataset and precision: a dot per calibration seed, the mean
   over seeds and the full-precision WER as a reference line;
2. α, V_int and R_calib per layer (model order, encoder and decoder coloured), one chart per
   (model, precision, method) that records them: the mean over seeds with min–max whiskers;
3. the per-layer error against the full-precision output before (``err_uncorrected``) and after
   (``err_final``) correction;
4. per-utterance differences between two runs, with word-level highlighting;
5. a table of the runs.

Everything is drawn here as inline SVG: no CDN, no script or style from elsewhere, no network,
so the file can be mailed, archived next to the results, or opened on an offline machine. A few
lines of inline JavaScript pick the diff to show; without JavaScript every diff is shown.
Every chart is ``<svg class="plot" data-kind=...>``; its data points carry ``class="mark"`` and
their exact value in ``data-value`` (tests and scrapers read the numbers back from there).
"""

from __future__ import annotations

import argparse
import difflib
import html
import json
import math
import re
import statistics
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

from fade.analysis.runs import Run, find_runs
from fade.errors import DataError, FadeError
from fade.tasks.resume import flatten
from fade.loggers.common import IGNORE_KEYS, SEED_KEYS
from fade.process import platform_label
from fade.tasks.resume import schema_default

#: Per-layer coefficients charted, in page order: (record key, label).
COEFFICIENTS = (("alpha", "α"), ("v_int", "V_int"), ("r_calib", "R_calib"))
#: Per-layer errors of the before/after chart: (record key, legend label, colour, stroke dash).
ERROR_SERIES = (("err_uncorrected", "before correction (err_uncorrected)", "#7f7f7f", "5 3"),
                ("err_final", "after correction (err_final)", "#d62728", ""))
#: Part colours; a part not listed here takes the next colour of FALLBACK_COLOURS.
PART_COLOURS = {"encoder": "#1f77b4", "decoder": "#ff7f0e", "projector": "#2ca02c"}
FALLBACK_COLOURS = ("#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
#: Method colours of the WER charts, by position in the method order.
METHOD_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")
#: The per-utterance tables stop here: the page stays small even for a 10,000-utterance test set.
MAX_DIFF_ROWS = 200

LAYER_CHART_WIDTH, LAYER_CHART_HEIGHT = 1100, 290
WER_CHART_HEIGHT = 300
# Plot margins in pixels: room for the title and legend above, tick labels left and below.
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 72, 20, 58, 46


# ----------------------------------------------------------------------------------- text helpers

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def text(value: Any) -> str:
    """``value`` as HTML text: escaped, and control characters (which random-weight models do
    emit) shown as ``\\x12`` instead of being written into the page, where they are invalid."""
    return html.escape(_CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(value)), quote=True)


def number(value: float, digits: int = 4) -> str:
    return f"{value:.{digits}g}"


def exact(value: float) -> str:
    """A ``data-value``: enough digits to read the number back (the mean is compared to 1e-9)."""
    return repr(float(value))


def percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# ----------------------------------------------------------------------------------- runs, grouped

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


# ----------------------------------------------------------------------------------- per-layer statistics

@dataclass(frozen=True)
class LayerSummary:
    """One layer's value of a record key across the seeds of one configuration."""

    index: int  # position in the model's quantization order (the order of layers.jsonl)
    name: str
    part: str
    values: tuple[float, ...]  # one per seed with a finite value

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def low(self) -> float:
        return min(self.values)

    @property
    def high(self) -> float:
        return max(self.values)

    @property
    def std(self) -> float:
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0

    def tooltip(self, label: str) -> str:
        if len(self.values) == 1:
            return f"{self.index}: {self.name} ({self.part})\n{label} = {number(self.mean)}"
        return (f"{self.index}: {self.name} ({self.part})\n{label}: mean {number(self.mean)}, min {number(self.low)}, "
                f"max {number(self.high)}, sd {number(self.std)} over {len(self.values)} seeds")


def summarize_layers(runs: Sequence[Run], key: str) -> list[LayerSummary]:
    """``key`` per layer over ``runs`` (the seeds of one configuration), layers matched by name.

    The layer order is the first run's; a layer another seed lacks (it should not happen within
    one configuration) just has fewer values. Non-finite values (NaN R_calib of a layer without
    calibration signal) are left out; a layer with none is left out.
    """
    order: dict[str, tuple[int, str]] = {}
    values: dict[str, list[float]] = {}
    for run in runs:
        for position, record in enumerate(run.layers):
            name = str(record.get("name", position))
            order.setdefault(name, (len(order), str(record.get("part") or "model")))
            if finite(record.get(key)):
                values.setdefault(name, []).append(float(record[key]))
    return [LayerSummary(index, name, part, tuple(values[name]))
            for name, (index, part) in order.items() if name in values]


def part_colours(parts: Iterable[str]) -> dict[str, str]:
    colours, spare = {}, iter(FALLBACK_COLOURS * 4)
    for part in dict.fromkeys(parts):
        colours[part] = PART_COLOURS.get(part) or next(spare)
    return colours


# ----------------------------------------------------------------------------------- SVG scales and axes

@dataclass(frozen=True)
class Scale:
    """Maps data values in [low, high] to pixels in [start, stop] (log10 when ``log``)."""

    low: float
    high: float
    start: float
    stop: float
    log: bool = False

    def _t(self, value: float) -> float:
        return math.log10(value) if self.log else value

    def __call__(self, value: float) -> float:
        low, high = self._t(self.low), self._t(self.high)
        fraction = (self._t(value) - low) / (high - low) if high > low else 0.5
        return round(self.start + fraction * (self.stop - self.start), 1)

    def ticks(self, count: int = 5) -> list[float]:
        if self.log:
            powers = [10.0 ** k for k in range(math.ceil(math.log10(self.low)), math.floor(math.log10(self.high)) + 1)]
            if len(powers) >= 2:
                return powers
            return [v for k in range(math.floor(math.log10(self.low)), math.ceil(math.log10(self.high)) + 1)
                    for v in (10.0 ** k, 2 * 10.0 ** k, 5 * 10.0 ** k) if self.low <= v <= self.high]
        step = nice_step(self.high - self.low, count)
        first = math.ceil(self.low / step - 1e-9) * step
        ticks, value = [], first
        while value <= self.high + step * 1e-9:
            ticks.append(0.0 if abs(value) < step * 1e-9 else value)
            value += step
        return ticks


def nice_step(span: float, count: int) -> float:
    """A 1/2/2.5/5 × 10^k step giving about ``count`` intervals over ``span``."""
    raw = span / max(count, 1) if span > 0 else 1.0
    magnitude = 10.0 ** math.floor(math.log10(raw))
    for factor in (1.0, 2.0, 2.5, 5.0, 10.0):
        if raw <= factor * magnitude * (1 + 1e-9):
            return factor * magnitude
    return 10.0 * magnitude


def value_scale(values: Sequence[float], start: float, stop: float, *, include_zero: bool = False,
                allow_log: bool = False) -> Scale:
    """A y scale over ``values`` with nice, padded limits.

    Log when ``allow_log`` and the values are positive and span more than 30×: layer errors
    often range over orders of magnitude, and a linear axis would flatten all but the largest.
    """
    low, high = min(values), max(values)
    if allow_log and low > 0 and high / low > 30:
        return Scale(10 ** math.floor(math.log10(low)), 10 ** math.ceil(math.log10(high)), start, stop, log=True)
    if include_zero:
        low, high = min(low, 0.0), max(high, 0.0)
    if high == low:
        pad = abs(high) * 0.5 or 0.5
        low, high = low - pad, high + pad
    else:
        pad = (high - low) * 0.05
        low = low if (include_zero and low == 0) else low - pad
        high = high if (include_zero and high == 0) else high + pad
    step = nice_step(high - low, 5)
    return Scale(math.floor(low / step) * step, math.ceil(high / step) * step, start, stop)


@dataclass(frozen=True)
class Frame:
    """The pixel box of one chart and its plot area."""

    width: float
    height: float
    margin_bottom: float = MARGIN_BOTTOM

    @property
    def left(self) -> float:
        return MARGIN_LEFT

    @property
    def right(self) -> float:
        return self.width - MARGIN_RIGHT

    @property
    def top(self) -> float:
        return MARGIN_TOP

    @property
    def bottom(self) -> float:
        return self.height - self.margin_bottom


def attributes(values: dict[str, Any]) -> str:
    return "".join(f' {key}="{text(value)}"' for key, value in values.items() if value is not None)


def svg_open(kind: str, title: str, frame: Frame, data: dict[str, Any] | None = None) -> str:
    """The chart's root: a ``<title>`` for screen readers and tooltips, and the visible heading."""
    root = attributes({"class": "plot", "data-kind": kind, **(data or {}), "xmlns": "http://www.w3.org/2000/svg",
                       "viewBox": f"0 0 {frame.width} {frame.height}", "width": frame.width, "height": frame.height,
                       "role": "img", "aria-label": title})
    return (f"<svg{root}><title>{text(title)}</title>"
            f'<rect class="background" x="0" y="0" width="{frame.width}" height="{frame.height}" fill="#fff"/>'
            f'<text class="chart-title" x="{frame.left}" y="18" font-size="14" font-weight="600">{text(title)}</text>')


def y_axis(scale: Scale, frame: Frame, label: str, format_tick=lambda v: number(v, 3)) -> str:
    parts = []
    for tick in scale.ticks():
        y = scale(tick)
        parts.append(f'<path class="grid" d="M{frame.left} {y}H{frame.right}" stroke="#e5e5e5"/>'
                     f'<text class="tick" x="{frame.left - 6}" y="{y + 4}" text-anchor="end" font-size="11">'
                     f"{text(format_tick(tick))}</text>")
    if not scale.log and scale.low < 0 < scale.high:  # the sign of V_int and R_calib matters: mark zero
        parts.append(f'<path class="zero" d="M{frame.left} {scale(0.0)}H{frame.right}" stroke="#999"/>')
    middle = (frame.top + frame.bottom) / 2
    parts.append(f'<path class="axis" d="M{frame.left} {frame.top}V{frame.bottom}H{frame.right}" stroke="#333" fill="none"/>'
                 f'<text class="axis-label" x="16" y="{middle}" transform="rotate(-90 16 {middle})" text-anchor="middle" '
                 f'font-size="12">{text(label)}</text>')
    return "".join(parts)


def x_axis_label(frame: Frame, label: str) -> str:
    return (f'<text class="axis-label" x="{(frame.left + frame.right) / 2}" y="{frame.height - 8}" text-anchor="middle" '
            f'font-size="12">{text(label)}</text>')


@dataclass(frozen=True)
class LegendItem:
    label: str
    colour: str
    shape: str = "dot"  # dot, line, dashed or tick
    dash: str = ""


def legend(items: Sequence[LegendItem], frame: Frame) -> str:
    """One row of legend items under the title (legend text is laid out at ~7 px per character)."""
    parts, x, y = ['<g class="legend">'], frame.left, 38
    for item in items:
        if item.shape == "dot":
            parts.append(f'<circle cx="{x + 6}" cy="{y - 4}" r="5" fill="{item.colour}"/>')
        else:
            dash = f' stroke-dasharray="{item.dash}"' if item.dash else ""
            width = 3 if item.shape == "tick" else 2
            parts.append(f'<path d="M{x} {y - 4}h14" stroke="{item.colour}" stroke-width="{width}"{dash}/>')
        parts.append(f'<text x="{x + 18}" y="{y}" font-size="12">{text(item.label)}</text>')
        x += 30 + 7 * len(item.label)
    parts.append("</g>")
    return "".join(parts)


# ----------------------------------------------------------------------------------- per-layer charts

@dataclass(frozen=True)
class Series:
    """Points of one chart over the layer index; ``colours`` maps a layer's part to its colour
    (a single-colour series maps every part to the same one)."""

    key: str
    label: str
    points: list[LayerSummary]
    colours: dict[str, str]
    line: bool = False
    dash: str = ""


def part_bands(layers: Sequence[LayerSummary], x: Scale, frame: Frame, colours: dict[str, str]) -> str:
    """A tinted background and a label over each contiguous run of one part (encoder, decoder):
    the model's structure stays visible without relying on colour alone."""
    parts, spans = [], []
    for layer in sorted(layers, key=lambda s: s.index):
        if spans and spans[-1][0] == layer.part:
            spans[-1][2] = layer.index
        else:
            spans.append([layer.part, layer.index, layer.index])
    for part, first, last in spans:
        x0, x1 = x(first - 0.5), x(last + 0.5)
        colour = colours.get(part, "#999")
        parts.append(f'<rect class="band" data-part="{text(part)}" x="{x0}" y="{frame.top}" width="{round(x1 - x0, 1)}" '
                     f'height="{frame.bottom - frame.top}" fill="{colour}" fill-opacity="0.06"/>'
                     f'<text class="band-label" x="{x0 + 4}" y="{frame.top + 12}" font-size="11" fill="{colour}">'
                     f"{text(part)}</text>")
    return "".join(parts)


def layer_chart(kind: str, title: str, y_label: str, series: Sequence[Series], legend_items: Sequence[LegendItem],
                data: dict[str, Any], *, include_zero: bool = False, allow_log: bool = False) -> str:
    """Mean per layer (dots, optionally joined) with min–max whiskers over seeds."""
    frame = Frame(LAYER_CHART_WIDTH, LAYER_CHART_HEIGHT)
    layers = [point for s in series for point in s.points]
    count = max(point.index for point in layers) + 1
    x = Scale(-0.5, count - 0.5, frame.left, frame.right)
    y = value_scale([v for point in layers for v in (point.low, point.high)], frame.bottom, frame.top,
                    include_zero=include_zero, allow_log=allow_log)
    band_colours = part_colours(point.part for point in layers)
    out = [svg_open(kind, title, frame, data), part_bands(layers, x, frame, band_colours),
           y_axis(y, frame, y_label + (" (log scale)" if y.log else "")), layer_ticks(x, frame, count),
           x_axis_label(frame, "layer index (quantization order = model order)"), legend(legend_items, frame)]
    radius = 3.5 if count <= 120 else 2
    for s in series:
        points = sorted(s.points, key=lambda p: p.index)
        if s.line and len(points) > 1:
            path = "M" + "L".join(f"{x(p.index)} {y(p.mean)}" for p in points)
            dash = f' stroke-dasharray="{s.dash}"' if s.dash else ""
            colour = next(iter(s.colours.values()))
            out.append(f'<path class="mark line" data-series="{text(s.key)}" d="{path}" fill="none" stroke="{colour}" '
                       f'stroke-width="1.5"{dash}/>')
        for p in points:
            colour = s.colours.get(p.part, "#333")
            if p.high > p.low:
                out.append(f'<path class="whisker" d="M{x(p.index)} {y(p.low)}V{y(p.high)}" stroke="{colour}" '
                           f'stroke-opacity="0.6"/>')
            mark = attributes({"class": "mark", "cx": x(p.index), "cy": y(p.mean), "r": radius, "fill": colour,
                               "data-series": s.key, "data-layer": p.name, "data-index": p.index, "data-part": p.part,
                               "data-value": exact(p.mean), "data-min": exact(p.low), "data-max": exact(p.high),
                               "data-seeds": len(p.values)})
            out.append(f"<circle{mark}><title>{text(p.tooltip(s.label))}</title></circle>")
    out.append("</svg>")
    return "".join(out)


def layer_ticks(x: Scale, frame: Frame, count: int) -> str:
    parts = []
    for tick in Scale(0, max(count - 1, 1), 0, 1).ticks(10):
        if tick == int(tick) and tick < count:
            px = x(tick)
            parts.append(f'<path class="tick-mark" d="M{px} {frame.bottom}v4" stroke="#333"/>'
                         f'<text class="tick" x="{px}" y="{frame.bottom + 16}" text-anchor="middle" font-size="11">'
                         f"{int(tick)}</text>")
    return "".join(parts)


def seeds_note(runs: Sequence[Run]) -> str:
    seeds = sorted({run.seed for run in runs if run.seed is not None})
    if len(runs) <= 1:
        return "one run"
    named = f" (seeds {', '.join(map(str, seeds))})" if seeds else ""
    return f"{len(runs)} runs{named}: mean, whiskers min–max"


def constant_alpha(points: Sequence[LayerSummary]) -> float | None:
    """The α every layer of every run shares (a global-α QEP configuration), else None."""
    values = {v for p in points for v in p.values}
    return values.pop() if len(values) == 1 else None


def coefficient_charts(entries: Sequence[Entry]) -> list[str]:
    """α, V_int and R_calib by layer for one (model, precision, method): one chart each that
    the runs record (QEP records only α; FADE all three)."""
    runs = [entry.run for entry in entries]
    first = entries[0]
    if not first.compensated:
        return []  # uncompensated GPTQ/RTN records α = 0 for every layer: nothing to chart
    charts = []
    for key, label in COEFFICIENTS:
        points = summarize_layers(runs, key)
        if not points or (key == "alpha" and constant_alpha(points) is not None):
            continue  # a global α (QEP) is one number, named in the section's note, not a flat chart
        colours = part_colours(p.part for p in points)
        items = [LegendItem(part, colour) for part, colour in colours.items()]
        title = f"{label} by layer · {first.model} · {first.precision} · {first.method} · {seeds_note(runs)}"
        data = {"data-key": key, "data-model": first.model, "data-precision": first.precision, "data-method": first.method,
                "data-runs": len(runs)}
        charts.append(layer_chart(f"layer-{key}", title, label, [Series(key, label, points, colours)], items, data,
                                  include_zero=key == "alpha"))
    return charts


def error_chart(entries: Sequence[Entry]) -> str | None:
    """err_uncorrected vs err_final by layer for one configuration (None without layer records)."""
    runs = [entry.run for entry in entries]
    first = entries[0]
    series, items = [], []
    for key, label, colour, dash in ERROR_SERIES:
        points = summarize_layers(runs, key)
        if points:
            series.append(Series(key, label, points, {p.part: colour for p in points}, line=True, dash=dash))
            items.append(LegendItem(label, colour, "dashed" if dash else "line", dash))
    if not series:
        return None
    title = (f"Layer error vs the full-precision output · {first.model} · {first.precision} · {first.method} · "
             f"{seeds_note(runs)}")
    data = {"data-model": first.model, "data-precision": first.precision, "data-method": first.method,
            "data-runs": len(runs)}
    return layer_chart("layer-errors", title, "relative output error", series, items, data, include_zero=True,
                       allow_log=True)


# ----------------------------------------------------------------------------------- WER chart

def category_lines(label: str) -> list[str]:
    """A method label on a few short lines: ``gptq+fade`` / ``(v_int=None,`` / ``r_calib=heldout_gain)``.

    One setting per line keeps each slot narrow, so a sweep with many variants still fits the
    page without the browser shrinking the whole chart (and its text) to fit."""
    for separator in (" [", "("):
        head, found, tail = label.partition(separator)
        if found and head:
            settings = (found + tail).strip().split(",")
            return [head] + [part.strip() + ("," if i < len(settings) - 1 else "") for i, part in enumerate(settings)]
    return [label]


def category_label(label: str, x: float, y: float) -> str:
    lines = category_lines(label)
    spans = "".join(f'<tspan x="{x}" dy="{0 if i == 0 else 13}">{text(line)}</tspan>' for i, line in enumerate(lines))
    return f'<text class="tick" x="{x}" y="{y}" text-anchor="middle" font-size="11">{spans}</text>'


def wer_dots(entries: Sequence[Entry], method: str, colour: str, centre: float, slot: float, y: Scale) -> str:
    """One dot per run, spread sideways by seed so that equal WERs stay visible."""
    spacing = min(12.0, slot * 0.6 / max(len(entries), 1))
    out = []
    for rank, entry in enumerate(entries):
        cx = round(centre + (rank - (len(entries) - 1) / 2) * spacing, 1)
        tip = f"{entry.label()}\nWER {percent(entry.wer)} %\n{entry.run.path.name}"
        mark = attributes({"class": "mark", "cx": cx, "cy": y(entry.wer), "r": 5, "fill": colour, "fill-opacity": 0.75,
                           "data-method": method, "data-seed": entry.seed, "data-run": entry.run.path.name,
                           "data-value": exact(entry.wer)})
        out.append(f"<circle{mark}><title>{text(tip)}</title></circle>")
    return "".join(out)


def wer_mean(entries: Sequence[Entry], method: str, colour: str, centre: float, slot: float, y: Scale) -> str:
    """The mean over seeds: a short bar across the dots, its value to the right."""
    mean = statistics.fmean(e.wer for e in entries)
    half = min(30.0, slot * 0.35)
    return (f'<path class="summary" data-method="{text(method)}" data-value="{exact(mean)}" '
            f'd="M{round(centre - half, 1)} {y(mean)}h{round(2 * half, 1)}" stroke="{colour}" stroke-width="3">'
            f"<title>{text(method)}: mean WER {percent(mean)} % over {len(entries)} runs</title></path>"
            f'<text class="value" x="{round(centre + half + 3, 1)}" y="{y(mean) + 4}" font-size="11">{percent(mean)}</text>')


def wer_reference(fp_wer: float, frame: Frame, y: Scale) -> str:
    # The label goes at the left end: the first method's dots sit mid-slot, so it is free of marks there.
    return (f'<path class="reference" data-value="{exact(fp_wer)}" d="M{frame.left} {y(fp_wer)}H{frame.right}" '
            f'stroke="#000" stroke-dasharray="6 4"><title>full precision: WER {percent(fp_wer)} %</title></path>'
            f'<text class="value" x="{frame.left + 4}" y="{y(fp_wer) - 4}" font-size="11">FP {percent(fp_wer)}</text>')


def wer_chart(entries: Sequence[Entry], fp_wer: float | None) -> str:
    """WER per method for one (model, dataset, precision): a dot per run (seed), the mean over
    seeds as a short bar with its value, and the full-precision WER as a dashed line."""
    methods = group_by(entries, "method")
    labels = [category_lines(method) for (method,) in methods]
    longest = max(len(line) for lines in labels for line in lines)
    slot = max(110.0, 6.5 * longest + 12)  # room for the method label under each slot
    extra_lines = max(len(lines) for lines in labels) - 2  # the margin holds two label lines
    margin_bottom = MARGIN_BOTTOM + 13 * max(0, extra_lines)
    # At least 580 px: the legend fits, and two charts still sit side by side on the 1180 px page.
    frame = Frame(max(580, round(MARGIN_LEFT + MARGIN_RIGHT + slot * len(methods))),
                  WER_CHART_HEIGHT + margin_bottom - MARGIN_BOTTOM, margin_bottom)
    slot = (frame.right - frame.left) / len(methods)
    wers = [e.wer for e in entries if e.wer is not None] + ([fp_wer] if fp_wer is not None else [])
    y = value_scale(wers or [0.0], frame.bottom, frame.top, include_zero=True)
    first = entries[0]
    title = f"WER · {first.model} · {first.precision}" + (f" · {first.dataset}" if first.dataset else "")
    items = [LegendItem("one dot per seed", "#555"), LegendItem("mean over seeds", "#555", "tick")]
    if fp_wer is not None:
        items.append(LegendItem("full precision", "#000", "dashed", "6 4"))
    out = [svg_open("wer", title, frame, {"data-model": first.model, "data-precision": first.precision,
                                          "data-dataset": first.dataset, "data-runs": len(entries)}),
           y_axis(y, frame, "WER %", lambda v: f"{100 * v:.3g}"), legend(items, frame)]
    for position, ((method,), runs) in enumerate(methods.items()):
        colour = METHOD_COLOURS[position % len(METHOD_COLOURS)]
        centre = round(frame.left + slot * (position + 0.5), 1)
        out.append(category_label(method, centre, frame.bottom + 16))
        scored = [e for e in runs if e.wer is not None]
        if scored:
            out.append(wer_dots(scored, method, colour, centre, slot, y) + wer_mean(scored, method, colour, centre, slot, y))
    if fp_wer is not None:
        out.append(wer_reference(fp_wer, frame, y))
    out.append(f'<text class="axis-label" x="{(frame.left + frame.right) / 2}" y="{frame.height - 6}" '
               f'text-anchor="middle" font-size="12">method</text></svg>')
    return "".join(out)


def reference_wer(group: Sequence[Entry], fp_entries: Sequence[Entry]) -> float | None:
    """The FP WER of a (model, dataset, precision) group: the quantize runs' ``wer_fp`` (the same
    cached FP evaluation in every run), else an evaluate run of the same model and dataset."""
    values = [e.wer_fp for e in group if e.wer_fp is not None]
    values = values or [e.wer for e in fp_entries if e.wer is not None]
    return statistics.fmean(values) if values else None


# ----------------------------------------------------------------------------------- per-utterance diff

@dataclass(frozen=True)
class Side:
    """One side of a diff: a run's full-precision or quantized hypotheses."""

    entry: Entry
    which: str  # "fp" or "quantized"

    def label(self) -> str:
        if self.which == "fp" or self.entry.is_fp:
            return f"{self.entry.model} full precision"
        return self.entry.label()

    def utterances(self) -> dict[str, dict[str, Any]]:
        return self.entry.run.utterances(self.which)


@dataclass(frozen=True)
class DiffRow:
    id: str
    reference: str
    words: int
    errors_a: int
    errors_b: int
    hypothesis_a: str
    hypothesis_b: str

    @property
    def difference(self) -> int:
        return self.errors_b - self.errors_a


def errors(record: dict[str, Any]) -> int:
    return int(record.get("substitutions", 0)) + int(record.get("deletions", 0)) + int(record.get("insertions", 0))


def diff_rows(a: Side, b: Side) -> tuple[list[DiffRow], int]:
    """Utterances whose normalized hypotheses differ, largest error difference first (then B
    worse before B better, then by id), and how many utterances the two sides share."""
    left, right = a.utterances(), b.utterances()
    shared = [key for key in left if key in right]
    rows = []
    for key in shared:
        ra, rb = left[key], right[key]
        hypothesis_a, hypothesis_b = str(ra.get("hypothesis_normalized", "")), str(rb.get("hypothesis_normalized", ""))
        if hypothesis_a != hypothesis_b:
            rows.append(DiffRow(str(key), str(ra.get("reference_normalized", "")), int(ra.get("words", 0)),
                                errors(ra), errors(rb), hypothesis_a, hypothesis_b))
    rows.sort(key=lambda r: (-abs(r.difference), -r.difference, r.id))
    return rows, len(shared)


def highlight_words(a: str, b: str) -> tuple[str, str]:
    """Both hypotheses as HTML, words only in A in ``<del>``, words only in B in ``<ins>``."""
    words_a, words_b = a.split(), b.split()
    out_a, out_b = [], []
    for op, a0, a1, b0, b1 in difflib.SequenceMatcher(a=words_a, b=words_b, autojunk=False).get_opcodes():
        chunk_a, chunk_b = text(" ".join(words_a[a0:a1])), text(" ".join(words_b[b0:b1]))
        if op == "equal":
            out_a.append(chunk_a)
            out_b.append(chunk_b)
            continue
        if chunk_a:
            out_a.append(f"<del>{chunk_a}</del>")
        if chunk_b:
            out_b.append(f"<ins>{chunk_b}</ins>")
    return " ".join(out_a) or '<span class="empty">(empty)</span>', " ".join(out_b) or '<span class="empty">(empty)</span>'


def default_pairs(entries: Sequence[Entry]) -> list[tuple[Side, Side]]:
    """For each (model, dataset, precision): full precision vs the quantized run with the lowest WER."""
    pairs = []
    for group in group_by([e for e in entries if not e.is_fp], "model", "dataset", "precision").values():
        scored = [e for e in group if e.wer is not None]
        if scored:
            best = min(scored, key=lambda e: e.wer)
            pairs.append((Side(best, "fp"), Side(best, "quantized")))
    return pairs


def resolve_side(spec: str, folder: Path, entries: Sequence[Entry]) -> Side:
    """A ``--diff`` argument: a run folder (a path, or relative to the dashboard's folder, or a
    run folder's name), its quantized hypotheses; ``RUN:fp`` for the run's full-precision ones."""
    which = "quantized"
    if spec.endswith(":fp") and not Path(spec).exists():
        spec, which = spec[: -len(":fp")], "fp"
    by_path = {e.run.path.resolve(): e for e in entries}
    for candidate in (Path(spec), folder / spec):
        if candidate.exists() and candidate.resolve() in by_path:
            return Side(by_path[candidate.resolve()], which)
    named = [e for e in entries if e.run.path.name == spec]
    if len(named) == 1:
        return Side(named[0], which)
    if len(named) > 1:
        raise DataError(f"--diff {spec!r} names {len(named)} runs under {folder}; pass its path instead")
    if Path(spec).exists():  # a finished run outside the dashboard's folder
        outside = load_entries(Path(spec))
        if len(outside) == 1:
            return Side(outside[0], which)
    raise DataError(f"--diff {spec!r} is not a finished run under {folder} (a run folder holds metrics.json); "
                    f"pass a run folder path or name, optionally with ':fp' for its full-precision hypotheses")


def diff_section(position: int, a: Side, b: Side) -> str:
    title = f"A: {a.label()} → B: {b.label()}"
    try:
        rows, shared = diff_rows(a, b)
    except DataError as exc:  # the per-utterance files were deleted: say so, keep the rest of the page
        return (f'<section class="diff" id="diff-{position}" data-pair="{position}"><h3>{text(title)}</h3>'
                f'<p class="note">{text(exc)}</p></section>')
    wer_a = a.entry.wer_fp if a.which == "fp" else a.entry.wer
    wer_b = b.entry.wer_fp if b.which == "fp" else b.entry.wer
    out = [f'<section class="diff" id="diff-{position}" data-pair="{position}"><h3>{text(title)}</h3>',
           f"<p>WER A {percent(wer_a)} %, B {percent(wer_b)} %. {len(rows)} of {shared} shared utterances differ "
           f"after normalization"
           + (f"; the {MAX_DIFF_ROWS} with the largest error difference are shown" if len(rows) > MAX_DIFF_ROWS else "")
           + ". Δ = errors(B) − errors(A): positive means B is worse. "
             "<del>struck</del>: words only in A; <ins>underlined</ins>: words only in B.</p>"]
    if not rows:
        out.append('<p class="note">No utterance differs.</p></section>')
        return "".join(out)
    out.append('<table class="diff-table"><thead><tr><th>Δ errors</th><th>id</th><th>reference (normalized)</th>'
               "<th>A</th><th>B</th><th>errors A / B</th></tr></thead><tbody>")
    for row in rows[:MAX_DIFF_ROWS]:
        html_a, html_b = highlight_words(row.hypothesis_a, row.hypothesis_b)
        tone = "worse" if row.difference > 0 else "better" if row.difference < 0 else "same"
        out.append(f'<tr class="{tone}" data-difference="{row.difference}"><td class="num">{row.difference:+d}</td>'
                   f"<td>{text(row.id)}</td><td>{text(row.reference)}</td><td>{html_a}</td><td>{html_b}</td>"
                   f'<td class="num">{row.errors_a} / {row.errors_b} of {row.words}</td></tr>')
    out.append("</tbody></table></section>")
    return "".join(out)


def diff_picker(pairs: Sequence[tuple[Side, Side]]) -> str:
    if len(pairs) < 2:
        return ""
    options = "".join(f'<option value="{i}">{text(a.label())} → {text(b.label())}</option>'
                      for i, (a, b) in enumerate(pairs))
    return (f'<p class="picker"><label for="diff-pick">Show diff: </label><select id="diff-pick">{options}'
            f'<option value="all">all pairs</option></select></p>')


# ----------------------------------------------------------------------------------- page

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1180px;color:#222;
padding:0 12px}
h1{font-size:22px;margin-bottom:4px}h2{font-size:18px;margin-top:36px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:15px;margin:20px 0 6px}nav a{margin-right:14px}.note{color:#666}
svg.plot{display:block;max-width:100%;height:auto;margin:8px 0 16px;border:1px solid #eee}
.charts{display:flex;flex-wrap:wrap;gap:12px}.charts svg.plot{margin:0}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border:1px solid #ddd;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f5f5f5}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.worse td.num:first-child{color:#b00}tr.better td.num:first-child{color:#070}
del{background:#fdd;color:#900}ins{background:#dfd;color:#060;text-decoration:underline}.empty{color:#999}
"""

# Without JavaScript every diff section shows; with it, the picker shows one at a time.
SCRIPT = """
(function(){var pick=document.getElementById('diff-pick');if(!pick)return;
function show(){var v=pick.value;document.querySelectorAll('section.diff').forEach(function(s){
s.style.display=(v==='all'||s.getAttribute('data-pair')===v)?'':'none';});}
pick.addEventListener('change',show);show();})();
"""


def wer_section(entries: Sequence[Entry]) -> str:
    quantized = [e for e in entries if not e.is_fp]
    fp_runs = group_by([e for e in entries if e.is_fp], "model", "dataset")
    charts = [wer_chart(group, reference_wer(group, fp_runs.get((model, dataset), [])))
              for (model, dataset, _), group in group_by(quantized, "model", "dataset", "precision").items()
              if any(e.wer is not None for e in group)]
    body = f'<div class="charts">{"".join(charts)}</div>' if charts else '<p class="note">No quantized run.</p>'
    return ('<section id="wer"><h2>WER by method</h2><p class="note">One chart per model, dataset and precision; a dot '
            "per run (calibration seed), the mean over seeds as a bar with its value, the full-precision WER dashed.</p>"
            f"{body}</section>")


def layer_sections(entries: Sequence[Entry]) -> tuple[str, str]:
    # Per dataset too: two test sets of one configuration would otherwise count as two seeds.
    configurations = group_by([e for e in entries if not e.is_fp], "model", "dataset", "precision", "method").values()
    coefficient_parts, error_parts, global_alphas = [], [], []
    for group in configurations:
        first = group[0]
        alpha = constant_alpha(summarize_layers([e.run for e in group], "alpha")) if first.compensated else None
        if alpha is not None:
            global_alphas.append(f"{text(first.model)} · {text(first.precision)} · {text(first.method)}: α = {number(alpha, 3)}")
        heading = (f"<h3>{text(first.model)} · {text(first.precision)} · {text(first.method)}"
                   + (f" · test set {text(first.dataset)}" if first.dataset else "") + "</h3>")
        charts = coefficient_charts(group)
        if charts:
            coefficient_parts.append(heading + "".join(charts))
        chart = error_chart(group)
        if chart:
            error_parts.append(heading + chart)
    coefficients = "".join(coefficient_parts) or ('<p class="note">No run records per-layer α, V_int or R_calib '
                                                  "(only compensated runs, QEP and FADE, do).</p>")
    if global_alphas:
        coefficients = ('<p class="note" id="global-alpha">One α for every layer (global-α QEP, not charted): '
                        + "; ".join(global_alphas) + ".</p>" + coefficients)
    errors_html = "".join(error_parts) or '<p class="note">No run has per-layer records (layers.jsonl).</p>'
    return (
        '<section id="coefficients"><h2>Compensation coefficients by layer</h2><p class="note">α (the compensation '
        "strength), and for FADE its inputs V_int and R_calib, per quantized Linear in model order; colour = part. "
        "Several seeds: the dot is the mean, the whisker spans min–max (hover for the values).</p>"
        f"{coefficients}</section>",
        '<section id="errors"><h2>Layer error before and after correction</h2><p class="note">Relative error of each '
        "layer's output against the full-precision model's, before (err_uncorrected: GPTQ on the drifted input) and after "
        "(err_final) the compensation; without compensation the two coincide.</p>"
        f"{errors_html}</section>")


def diff_section_all(pairs: Sequence[tuple[Side, Side]]) -> str:
    if not pairs:
        body = '<p class="note">No quantized run with a WER to compare.</p>'
    else:
        body = diff_picker(pairs) + "".join(diff_section(i, a, b) for i, (a, b) in enumerate(pairs))
    return ('<section id="utterances"><h2>Per-utterance differences</h2><p class="note">Utterances whose normalized '
            "hypotheses differ between two runs (default: each model and precision's full-precision output vs its best "
            f"quantized run; <code>--diff RUN_A RUN_B</code> picks two runs).</p>{body}</section>")


def runs_table(entries: Sequence[Entry], folder: Path) -> str:
    rows = []
    for e in entries:
        m = e.run.metrics
        dev = m.get("wer_dev")
        alpha = m.get("alpha_mean") if finite(m.get("alpha_mean")) else m.get("alpha")
        try:
            where = e.run.path.relative_to(folder)
        except ValueError:
            where = e.run.path
        rows.append(f"<tr><td>{text(e.model)}</td><td>{text(e.dataset)}</td><td>{text(e.precision)}</td>"
                    f"<td>{text(e.method)}</td><td class=\"num\">{text('' if e.seed is None else e.seed)}</td>"
                    f'<td class="num">{percent(e.wer)}</td><td class="num">{percent(e.wer_fp)}</td>'
                    f'<td class="num">{percent(dev) if finite(dev) else "–"}</td>'
                    f'<td class="num">{number(alpha, 3) if finite(alpha) else "–"}</td><td>{text(where)}</td></tr>')
    return ('<section id="runs"><h2>Runs</h2><table><thead><tr><th>model</th><th>dataset</th><th>precision</th>'
            "<th>method</th><th>seed</th><th>WER %</th><th>FP WER %</th><th>dev WER %</th><th>mean α</th><th>folder</th>"
            f"</tr></thead><tbody>{''.join(rows)}</tbody></table></section>")


def render(folder: Path, entries: Sequence[Entry], pairs: Sequence[tuple[Side, Side]]) -> str:
    coefficients, layer_errors = layer_sections(entries)
    title = f"fade dashboard: {folder.resolve().name}"
    models = sorted({e.model for e in entries})
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{text(title)}</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{STYLE}</style></head><body>'
        f"<h1>{text(title)}</h1><p class=\"note\">{len(entries)} runs of {len(models)} model(s) under "
        f"<code>{text(folder)}</code>. Hover a point for its values.</p>"
        '<nav><a href="#wer">WER</a><a href="#coefficients">α / V_int / R_calib</a><a href="#errors">layer errors</a>'
        '<a href="#utterances">per-utterance diff</a><a href="#runs">runs</a></nav>'
        f"{wer_section(entries)}{coefficients}{layer_errors}{diff_section_all(pairs)}{runs_table(entries, folder)}"
        f"<script>{SCRIPT}</script></body></html>\n")


def build_dashboard(folder: str | Path, output: str | Path | None = None,
                    diff: Sequence[str] | None = None) -> Path:
    """Write the dashboard of the runs under ``folder`` to ``output`` (default
    ``<folder>/dashboard.html``) and return its path.

    ``diff``: two runs (see :func:`resolve_side`) whose per-utterance outputs to compare instead of
    the default full-precision vs best-quantized pairs. Raises :class:`DataError` for a missing
    folder, a folder without finished runs, or a ``diff`` run that cannot be found.
    """
    root = Path(folder)
    entries = load_entries(root)  # DataError: not a folder / no finished runs
    if diff:
        if len(diff) != 2:
            raise DataError(f"--diff takes two runs, got {len(diff)}: {list(diff)}")
        pairs = [(resolve_side(diff[0], root, entries), resolve_side(diff[1], root, entries))]
    else:
        pairs = default_pairs(entries)
    path = Path(output) if output is not None else root / "dashboard.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(root, entries, pairs), encoding="utf-8")
    return path


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="fade-dashboard",
        description="Write one self-contained, offline HTML page (inline SVG charts, no network) of the finished "
                    "runs under a run or sweep folder: WER per method across seeds, α/V_int/R_calib and layer errors "
                    "by layer, per-utterance differences. See docs/dashboard.md.")
    parser.add_argument("folder", help="a run folder (outputs/runs/...) or a sweep folder (outputs/multirun/...)")
    parser.add_argument("-o", "--output", help="the HTML file to write (default: <folder>/dashboard.html)")
    parser.add_argument("--diff", nargs=2, metavar=("RUN_A", "RUN_B"),
                        help="compare these two runs' per-utterance outputs (a run folder path or name; RUN:fp for its "
                             "full-precision outputs) instead of each model's FP vs best quantized run")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        path = build_dashboard(args.folder, args.output, args.diff)
    except FadeError as exc:
        # Bad input: one clear line, no traceback (as the fade command does).
        print(f"fade-dashboard: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
