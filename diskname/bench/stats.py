"""Percentiles and a self-contained SVG chart of a latency distribution."""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation between ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary_ms(seconds: Sequence[float]) -> dict[str, float | None]:
    ms = [s * 1000 for s in seconds]
    if not ms:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    return {
        "p50": round(percentile(ms, 50), 1),
        "p95": round(percentile(ms, 95), 1),
        "p99": round(percentile(ms, 99), 1),
        "max": round(max(ms), 1),
    }


def cdf_svg(series: dict[str, Sequence[float]], title: str) -> str:
    """A cumulative distribution chart (x: latency in ms, y: share of hot-plugs)."""
    width, height, pad = 640, 360, 50
    all_ms = [v * 1000 for values in series.values() for v in values] or [1.0]
    x_max = _nice(max(all_ms))
    colours = ["#2563eb", "#dc2626", "#16a34a", "#9333ea"]
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="14">{escape(title)}</text>',
    ]
    out += _axes(width, height, pad, x_max)
    for i, (label, values) in enumerate(series.items()):
        colour = colours[i % len(colours)]
        out.append(_curve(sorted(v * 1000 for v in values), width, height, pad, x_max, colour))
        y = height - pad - 12 - 16 * (len(series) - 1 - i)  # lower right, clear of the curves
        out.append(f'<rect x="{width - 200}" y="{y - 9}" width="10" height="10" fill="{colour}"/>')
        out.append(f'<text x="{width - 185}" y="{y}">{escape(label)} (n={len(values)})</text>')
    out.append("</svg>")
    return "\n".join(out)


def _nice(value: float) -> float:
    magnitude = 10 ** math.floor(math.log10(max(value, 1e-9)))
    for step in (1, 2, 5, 10):
        if value <= step * magnitude:
            return float(step * magnitude)
    return float(10 * magnitude)


def _axes(width: int, height: int, pad: int, x_max: float) -> list[str]:
    x0, y0, x1, y1 = pad, height - pad, width - 20, 35
    parts = [
        f'<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="black"/>',
        f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="black"/>',
        f'<text x="{(x0 + x1) / 2}" y="{height - 12}" text-anchor="middle">'
        "REST hot-plug request to name readable (ms)</text>",
    ]
    for k in range(6):
        x = x0 + (x1 - x0) * k / 5
        y = y0 - (y0 - y1) * k / 5
        parts.append(f'<text x="{x}" y="{y0 + 16}" text-anchor="middle">{x_max * k / 5:g}</text>')
        parts.append(f'<text x="{x0 - 6}" y="{y + 4}" text-anchor="end">{k * 20}%</text>')
        parts.append(f'<line x1="{x0}" y1="{y}" x2="{x1}" y2="{y}" stroke="#eee"/>')
    return parts


def _curve(ms: list[float], width: int, height: int, pad: int, x_max: float, colour: str) -> str:
    x0, y0, x1, y1 = pad, height - pad, width - 20, 35
    points = [f"{x0},{y0}"]
    for i, value in enumerate(ms):
        x = x0 + (x1 - x0) * min(value / x_max, 1.0)
        points.append(f"{x:.1f},{y0 - (y0 - y1) * i / len(ms):.1f}")
        points.append(f"{x:.1f},{y0 - (y0 - y1) * (i + 1) / len(ms):.1f}")
    return f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{" ".join(points)}"/>'
