"""The dashboard's charts: α, V_int and R_calib by layer (mean over seeds, min–max whiskers), the
per-layer error before and after correction, and WER per method with a dot per seed."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from fade.analysis.dashboard.entries import Entry, group_by
from fade.analysis.dashboard.svg import (MARGIN_BOTTOM, MARGIN_LEFT, MARGIN_RIGHT, Frame, LegendItem, Scale, attributes,
                                         exact, finite, legend, number, percent, svg_open, text, value_scale,
                                         x_axis_label, y_axis)
from fade.analysis.runs import Run

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

LAYER_CHART_WIDTH, LAYER_CHART_HEIGHT = 1100, 290
WER_CHART_HEIGHT = 300


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
    values: dict[str, list[float]] = {}
    for run in runs:
        for position, record in enumerate(run.layers):
            if finite(record.get(key)):
                values.setdefault(_layer_name(record, position), []).append(float(record[key]))
    return [LayerSummary(index, name, part, tuple(values[name]))
            for name, (index, part) in _layer_order(runs).items() if name in values]


def _layer_name(record: dict[str, Any], position: int) -> str:
    return str(record.get("name", position))


def _layer_order(runs: Sequence[Run]) -> dict[str, tuple[int, str]]:
    """Layer name → (index, part), numbered in the order the runs first record them."""
    order: dict[str, tuple[int, str]] = {}
    for run in runs:
        for position, record in enumerate(run.layers):
            order.setdefault(_layer_name(record, position), (len(order), str(record.get("part") or "model")))
    return order


def layer_parts(runs: Sequence[Run]) -> list[tuple[int, str]]:
    """(index, part) of every layer the runs record, in the order ``summarize_layers`` numbers them.

    The charts of one configuration take their x range and encoder/decoder bands from this, not
    from the layers that have a value: R_calib is undefined on layers with no incoming error, and
    its chart would otherwise start its encoder band, or end its axis, somewhere else than α's."""
    return list(_layer_order(runs).values())


def part_colours(parts: Iterable[str]) -> dict[str, str]:
    colours, spare = {}, iter(FALLBACK_COLOURS * 4)
    for part in dict.fromkeys(parts):
        colours[part] = PART_COLOURS.get(part) or next(spare)
    return colours


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


def part_bands(layers: Sequence[tuple[int, str]], x: Scale, frame: Frame, colours: dict[str, str]) -> str:
    """A tinted background and a label over each contiguous run of one part (encoder, decoder):
    the model's structure stays visible without relying on colour alone. ``layers``: (index, part)."""
    parts, spans = [], []
    for index, part in sorted(layers):
        if spans and spans[-1][0] == part:
            spans[-1][2] = index
        else:
            spans.append([part, index, index])
    for part, first, last in spans:
        x0, x1 = x(first - 0.5), x(last + 0.5)
        colour = colours.get(part, "#999")
        parts.append(f'<rect class="band" data-part="{text(part)}" x="{x0}" y="{frame.top}" width="{round(x1 - x0, 1)}" '
                     f'height="{frame.bottom - frame.top}" fill="{colour}" fill-opacity="0.06"/>'
                     f'<text class="band-label" x="{x0 + 4}" y="{frame.top + 12}" font-size="11" fill="{colour}">'
                     f"{text(part)}</text>")
    return "".join(parts)


def layer_chart(kind: str, title: str, y_label: str, series: Sequence[Series], legend_items: Sequence[LegendItem],
                data: dict[str, Any], *, structure: Sequence[tuple[int, str]] = (), include_zero: bool = False,
                allow_log: bool = False) -> str:
    """Mean per layer (dots, optionally joined) with min–max whiskers over seeds.

    ``structure``: (index, part) of every layer of the model (``layer_parts``), for the x range and
    the part bands; without it they come from the layers that have a value."""
    frame = Frame(LAYER_CHART_WIDTH, LAYER_CHART_HEIGHT)
    layers = [point for s in series for point in s.points]
    structure = list(structure) or sorted({(point.index, point.part) for point in layers})
    count = max(index for index, _ in structure) + 1
    x = Scale(-0.5, count - 0.5, frame.left, frame.right)
    y = value_scale([v for point in layers for v in (point.low, point.high)], frame.bottom, frame.top,
                    include_zero=include_zero, allow_log=allow_log)
    band_colours = part_colours(part for _, part in structure)
    out = [svg_open(kind, title, frame, data), part_bands(structure, x, frame, band_colours),
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


def signal_off(runs: Sequence[Run], key: str) -> bool:
    """True when the runs record ``<key>_raw`` and it is undefined on every layer: the FADE signal
    was switched off (its normalised value is then a 0 per layer). Runs older than the raw
    records are charted as before."""
    raw = key + "_raw"
    records = [record for run in runs for record in run.layers if raw in record]
    return bool(records) and not any(finite(record[raw]) for record in records)


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
        if signal_off(runs, key):
            continue  # e.g. V_int of the direct step: recorded as 0 on every layer, nothing to see
        colours = part_colours(p.part for p in points)
        items = [LegendItem(part, colour) for part, colour in colours.items()]
        title = f"{label} by layer · {first.model} · {first.precision} · {first.method} · {seeds_note(runs)}"
        data = {"data-key": key, "data-model": first.model, "data-precision": first.precision, "data-method": first.method,
                "data-runs": len(runs)}
        charts.append(layer_chart(f"layer-{key}", title, label, [Series(key, label, points, colours)], items, data,
                                  structure=layer_parts(runs), include_zero=key == "alpha"))
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
    return layer_chart("layer-errors", title, "relative output error", series, items, data, structure=layer_parts(runs),
                       include_zero=True, allow_log=True)


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
