"""Charts for the admin pages, drawn on the server as inline SVG.

Plain Python, no Django: each function takes numbers and returns an SVG
fragment as a string, with every piece of text escaped, ready to be marked
safe by the caller. No JavaScript, no font or file from anywhere, no ``style``
attribute: the page works offline and under a strict Content Security Policy.

Colours come twice: as SVG presentation attributes (light ones, for an SVG
shown on its own) and as classes that the admin pages' stylesheet
(``static/mingus_sessions/admin/pools.css``) maps to Django admin's CSS
variables, which win over the attributes; so the charts and bars follow the
admin's light and dark themes. Each chart carries a ``<title>`` and a
``<desc>`` that a screen reader announces, labelled axes, and a ``<title>`` on
every sampled point, which a browser shows on hover.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

__all__ = ["Line", "format_ms", "format_percent", "line_chart", "utilization_bar"]

#: Line colours, in order (Okabe-Ito: told apart with the common colour blindnesses). The
#: stylesheet keeps the first six in both themes and draws the seventh (black) in the theme's
#: loudest text colour, so that it shows on a dark background too.
PALETTE = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#d55e00", "#56b4e9", "#000000")
_AXIS = "#666666"
_GRID = "#dddddd"
_TEXT = "#333333"
_BACKGROUND = "#ffffff"
_FONT = 'font-family="sans-serif" font-size="11"'
#: The classes the stylesheet colours: background, grid, axes, texts (see pools.css).
_BG_CLASS = 'class="mingus-chart-bg"'
_GRID_CLASS = 'class="mingus-grid"'
_AXIS_CLASS = 'class="mingus-axis"'
_TEXT_CLASS = 'class="mingus-text"'
_QUIET_CLASS = 'class="mingus-text mingus-quiet"'

# Plot margins: room for tick labels left and below, the x-axis label under them.
_LEFT, _RIGHT, _TOP, _BOTTOM = 72, 24, 12, 44
_LEGEND_ROW = 18
_Y_TICKS = 5
_X_TICKS = 4


@dataclass(frozen=True, slots=True)
class Line:
    """One labelled line: ``(unix time, value)`` points, oldest first."""

    label: str
    points: Sequence[tuple[float, float]]


def format_percent(value: float) -> str:
    return f"{value * 100:.0f} %"


def format_ms(value: float) -> str:
    return f"{value:g} ms" if value >= 1 or value == 0 else f"{value:.2g} ms"


def _clock(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, tz=dt.UTC).strftime("%H:%M:%S")


def _nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times 10^n at or above ``value`` (1 for nothing)."""
    if value <= 0 or not math.isfinite(value):
        return 1.0
    magnitude = 10.0 ** math.floor(math.log10(value))
    for step in (1.0, 2.0, 2.5, 5.0, 10.0):
        if value <= step * magnitude * (1 + 1e-9):
            return step * magnitude
    return 10.0 * magnitude  # pragma: no cover - the loop always returns


def _legend_rows(labels: Sequence[str], width: int) -> list[list[tuple[int, str, int]]]:
    """Legend entries ``(line index, label, x)`` laid out left to right, wrapped to ``width``."""
    rows: list[list[tuple[int, str, int]]] = [[]]
    x = _LEFT
    for index, label in enumerate(labels):
        entry_width = 22 + 7 * len(label) + 14
        if rows[-1] and x + entry_width > width - _RIGHT:
            rows.append([])
            x = _LEFT
        rows[-1].append((index, label, x))
        x += entry_width
    return rows if rows[0] else []


@dataclass(frozen=True, slots=True)
class _Plot:
    """Where a chart's plot area sits in its SVG, legend rows included."""

    width: int
    total_height: int
    top: int
    plot_w: int
    plot_h: int


def line_chart(
    *,
    chart_id: str,
    title: str,
    description: str,
    lines: Sequence[Line],
    y_label: str,
    y_format: Callable[[float], str],
    y_max: float | None = None,
    x_label: str = "time (UTC)",
    width: int = 640,
    height: int = 220,
) -> str:
    """An SVG line chart of ``lines`` over time; "no samples yet" when there are none.

    ``y_max`` fixes the top of the y axis (1.0 for a ratio); otherwise it is
    the largest value rounded up to a round number. ``description`` becomes
    the chart's ``<desc>``, followed by the latest value of each line.
    """
    legend = _legend_rows([line.label for line in lines], width)
    top = _TOP + _LEGEND_ROW * len(legend)
    total_height = height + _LEGEND_ROW * len(legend)
    plot = _Plot(width, total_height, top, width - _LEFT - _RIGHT, total_height - top - _BOTTOM)
    points = [p for line in lines for p in line.points]

    latest = "; ".join(
        f"{line.label}: {y_format(line.points[-1][1])}" for line in lines if line.points
    )
    desc = f"{description} Latest: {latest}." if latest else f"{description} No samples yet."
    parts = _opening(plot, escape(chart_id), title, desc)
    parts.extend(_legend(legend))
    top_value = (
        y_max if y_max is not None else _nice_ceiling(max((v for _, v in points), default=0))
    )
    parts.extend(_axes(plot, top_value, y_format, y_label, x_label))
    if not points:
        parts.append(
            f'<text x="{_LEFT + plot.plot_w / 2:.1f}" y="{top + plot.plot_h / 2:.1f}" '
            f'text-anchor="middle" fill="{_AXIS}" {_QUIET_CLASS} {_FONT}>No samples yet</text>'
            "</svg>"
        )
        return "".join(parts)
    start = min(t for t, _ in points)
    end = max(t for t, _ in points)
    parts.extend(_time_ticks(plot, start, end))
    parts.extend(_polylines(plot, lines, start, end - start or 1.0, top_value, y_format))
    parts.append("</svg>")
    return "".join(parts)


def _opening(plot: _Plot, ident: str, title: str, desc: str) -> list[str]:
    """The ``<svg>`` element's opening, its title and description, and its background."""
    width, total_height = plot.width, plot.total_height
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="mingus-chart" id="{ident}" '
        f'width="{width}" height="{total_height}" viewBox="0 0 {width} {total_height}" '
        f'role="img" aria-labelledby="{ident}-title {ident}-desc">',
        f'<title id="{ident}-title">{escape(title)}</title>',
        f'<desc id="{ident}-desc">{escape(desc)}</desc>',
        f'<rect x="0" y="0" width="{width}" height="{total_height}" fill="{_BACKGROUND}" '
        f"{_BG_CLASS}/>",
    ]


def _legend(legend: list[list[tuple[int, str, int]]]) -> list[str]:
    """A coloured stroke and a label per line, in the rows :func:`_legend_rows` laid out."""
    parts = []
    for row_number, row in enumerate(legend):
        row_y = _TOP + _LEGEND_ROW * row_number + 9
        for index, label, left in row:
            colour = PALETTE[index % len(PALETTE)]
            series = _series_class(index)
            parts.append(
                f'<line x1="{left}" y1="{row_y}" x2="{left + 16}" y2="{row_y}" stroke="{colour}" '
                f'stroke-width="3" {series}/>'
                f'<text x="{left + 22}" y="{row_y + 4}" fill="{_TEXT}" {_TEXT_CLASS} {_FONT}>'
                f"{escape(label)}</text>"
            )
    return parts


def _axes(
    plot: _Plot,
    top_value: float,
    y_format: Callable[[float], str],
    y_label: str,
    x_label: str,
) -> list[str]:
    """The y axis's grid lines and tick labels, the y axis itself, and both axis labels."""
    top, plot_w, plot_h = plot.top, plot.plot_w, plot.plot_h
    parts = []
    for tick in range(_Y_TICKS + 1):
        value = top_value * tick / _Y_TICKS
        y = top + plot_h - plot_h * tick / _Y_TICKS
        line = f'stroke="{_GRID}" {_GRID_CLASS}' if tick else f'stroke="{_AXIS}" {_AXIS_CLASS}'
        parts.append(
            f'<line x1="{_LEFT}" y1="{y:.1f}" x2="{_LEFT + plot_w}" y2="{y:.1f}" {line} '
            f'stroke-width="1"/>'
            f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" fill="{_TEXT}" '
            f"{_TEXT_CLASS} {_FONT}>{escape(y_format(value))}</text>"
        )
    parts.append(
        f'<line x1="{_LEFT}" y1="{top}" x2="{_LEFT}" y2="{top + plot_h}" stroke="{_AXIS}" '
        f'{_AXIS_CLASS} stroke-width="1"/>'
        f'<text x="12" y="{top + plot_h / 2:.1f}" text-anchor="middle" fill="{_TEXT}" '
        f'{_TEXT_CLASS} {_FONT} transform="rotate(-90 12 {top + plot_h / 2:.1f})">'
        f"{escape(y_label)}</text>"
        f'<text x="{_LEFT + plot_w / 2:.1f}" y="{plot.total_height - 6}" text-anchor="middle" '
        f'fill="{_TEXT}" {_TEXT_CLASS} {_FONT}>{escape(x_label)}</text>'
    )
    return parts


def _time_ticks(plot: _Plot, start: float, end: float) -> list[str]:
    """The x axis's ticks and clock labels from ``start`` to ``end`` (one tick if they meet)."""
    top, plot_w, plot_h = plot.top, plot.plot_w, plot.plot_h
    span = end - start or 1.0
    parts = []
    for tick in range(_X_TICKS + 1):
        if end == start and tick:
            break
        t = start + span * tick / _X_TICKS
        x = _LEFT + plot_w * tick / _X_TICKS
        # The last label ends at its tick, so that it stays inside the chart.
        anchor = "end" if tick == _X_TICKS else "middle"
        parts.append(
            f'<line x1="{x:.1f}" y1="{top + plot_h}" x2="{x:.1f}" y2="{top + plot_h + 4}" '
            f'stroke="{_AXIS}" {_AXIS_CLASS} stroke-width="1"/>'
            f'<text x="{x:.1f}" y="{top + plot_h + 16}" text-anchor="{anchor}" fill="{_TEXT}" '
            f"{_TEXT_CLASS} {_FONT}>{_clock(t)}</text>"
        )
    return parts


def _series_class(index: int) -> str:
    return f'class="mingus-series mingus-series-{index % len(PALETTE)}"'


def _polylines(
    plot: _Plot,
    lines: Sequence[Line],
    start: float,
    span: float,
    top_value: float,
    y_format: Callable[[float], str],
) -> list[str]:
    """Each line with points as a polyline, then a point per sample with its value as title.

    The points are invisible until hovered (the stylesheet shows the one under the
    pointer), except the latest, drawn as a dot; each point's ``<title>`` says the
    line, the value and the time, which the browser shows as a tooltip.
    """
    top, plot_w, plot_h = plot.top, plot.plot_w, plot.plot_h

    def place(t: float, value: float) -> tuple[float, float]:
        # Values above a fixed y_max are drawn at the top edge rather than off the chart.
        ratio = min(max(value / top_value, 0.0), 1.0)
        return _LEFT + plot_w * (t - start) / span, top + plot_h - plot_h * ratio

    parts = []
    for index, line in enumerate(lines):
        if not line.points:
            continue
        colour = PALETTE[index % len(PALETTE)]
        series = _series_class(index)
        placed = [place(t, v) for t, v in line.points]
        coordinates = " ".join(f"{x:.1f},{y:.1f}" for x, y in placed)
        parts.append(
            f'<polyline points="{coordinates}" fill="none" stroke="{colour}" stroke-width="2" '
            f'stroke-linejoin="round" {series}><title>{escape(line.label)}</title></polyline>'
            f'<g class="mingus-points" data-series="{escape(line.label)}">'
        )
        last = len(placed) - 1
        for number, ((x, y), (t, value)) in enumerate(zip(placed, line.points, strict=True)):
            kind = "mingus-point mingus-latest" if number == last else "mingus-point"
            opacity = "1" if number == last else "0"
            tip = f"{line.label}: {y_format(value)} at {_clock(t)} UTC"
            parts.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{colour}" '
                f'fill-opacity="{opacity}" class="{kind} mingus-series-{index % len(PALETTE)}">'
                f"<title>{escape(tip)}</title></circle>"
            )
        parts.append("</g>")
    return parts


def utilization_bar(utilization: float, *, width: int = 100, height: int = 12) -> str:
    """A small horizontal bar of a 0..1 ratio: green, amber from 0.7, red from 0.9.

    The empty part is the page's background inside a border (in either theme), so
    that only the filled part reads as used.
    """
    ratio = min(max(utilization, 0.0), 1.0)
    level = "high" if ratio >= 0.9 else "warn" if ratio >= 0.7 else "ok"
    colour = {"high": "#d55e00", "warn": "#e69f00", "ok": "#009e73"}[level]
    label = escape(f"utilization {format_percent(ratio)}")
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="mingus-bar" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="{label}">'
        f"<title>{label}</title>"
        f'<rect x="0.5" y="0.5" width="{width - 1}" height="{height - 1}" fill="{_BACKGROUND}" '
        f'stroke="#bbbbbb" class="mingus-bar-track"/>'
        f'<rect x="0" y="0" width="{width * ratio:.1f}" height="{height}" fill="{colour}" '
        f'class="mingus-bar-fill mingus-bar-{level}"/>'
        "</svg>"
    )
