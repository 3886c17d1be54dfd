"""Inline-SVG building blocks of the dashboard: escaping and number formats, scales with nice
ticks (linear or log), the chart frame, axes and legends. Nothing here knows about runs."""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass
from typing import Any, Sequence

# Plot margins in pixels: room for the title and legend above, tick labels left and below.
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 72, 20, 58, 46

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
