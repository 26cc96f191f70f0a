"""How the engine's cost grows with the fleet: a chart from several bench results.

``python -m diskname.bench.growth OUT.svg RESULT.json ...`` reads bench results
(each file's last line is the bench's JSON object) and draws, against the
number of VMs on a log scale, the quiet fleet's engine CPU per cycle, the
engine's peak RSS and the hot-plug p99: one panel each, one point per result,
labelled with its value. Self-contained SVG, no dependencies.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from html import escape
from pathlib import Path
from typing import Any

import orjson

Metric = tuple[str, str, Callable[[dict[str, Any]], float | None]]

METRICS: tuple[Metric, ...] = (
    ("engine CPU per 3 s cycle", "ms", lambda r: r["steady"]["engine_cpu_ms_per_cycle"]),
    ("engine RSS (peak)", "MiB", lambda r: (r.get("engine_rss_mib") or {}).get("peak")),
    ("hot-plug → name p99", "ms", lambda r: r["latency_ms"]["p99"]),
)
PANEL_W, PANEL_H, PAD = 300, 240, 48


def load(paths: Sequence[Path]) -> list[dict[str, Any]]:
    """The bench result in each file (its last non-empty line), by fleet size."""
    results = []
    for path in paths:
        lines = [line for line in path.read_bytes().splitlines() if line.strip()]
        results.append(orjson.loads(lines[-1]))
    return sorted(results, key=lambda r: int(r["vms"]))


def growth_svg(results: Sequence[dict[str, Any]], title: str) -> str:
    width = PANEL_W * len(METRICS)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{PANEL_H + 40}" '
        'font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{PANEL_H + 40}" fill="white"/>',
        f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="14">{escape(title)}</text>',
    ]
    for i, (name, unit, value) in enumerate(METRICS):
        points = [(int(r["vms"]), value(r)) for r in results]
        out += _panel(i * PANEL_W, 30, name, unit, [(x, y) for x, y in points if y is not None])
    out.append("</svg>")
    return "\n".join(out)


def _panel(left: int, top: int, name: str, unit: str, points: list[tuple[int, float]]) -> list[str]:
    x0, y0 = left + PAD, top + PANEL_H - PAD
    x1, y1 = left + PANEL_W - 32, top + 24
    xs = [math.log10(x) for x, _ in points] or [0.0]
    lo, hi = math.floor(min(xs)), math.ceil(max(xs)) or 1
    hi = hi if hi > lo else lo + 1
    y_max = _nice(max((y for _, y in points), default=1.0) * 1.15)

    def at(x: int, y: float) -> tuple[float, float]:
        fx = (math.log10(x) - lo) / (hi - lo)
        return x0 + (x1 - x0) * fx, y0 - (y0 - y1) * min(y / y_max, 1.0)

    parts = [
        f'<text x="{(x0 + x1) / 2}" y="{top + 12}" text-anchor="middle" font-size="12">'
        f"{escape(name)} ({escape(unit)})</text>",
        f'<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="black"/>',
        f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="black"/>',
        f'<text x="{(x0 + x1) / 2}" y="{y0 + 30}" text-anchor="middle">VMs</text>',
    ]
    for decade in range(lo, hi + 1):
        x, _ = at(10**decade, 0)
        parts.append(f'<text x="{x}" y="{y0 + 14}" text-anchor="middle">{10**decade:,}</text>')
    for k in range(5):
        y = y0 - (y0 - y1) * k / 4
        parts.append(f'<line x1="{x0}" y1="{y}" x2="{x1}" y2="{y}" stroke="#eee"/>')
        label = f"{y_max * k / 4:g}"
        parts.append(f'<text x="{x0 - 4}" y="{y + 4}" text-anchor="end">{label}</text>')
    coords = [at(x, y) for x, y in points]
    if len(coords) > 1:
        line = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
        parts.append(f'<polyline fill="none" stroke="#2563eb" stroke-width="2" points="{line}"/>')
    for (x, y), (_, value) in zip(coords, points, strict=True):
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="#2563eb"/>')
        parts.append(f'<text x="{x:.1f}" y="{y - 8:.1f}" text-anchor="middle">{value:g}</text>')
    return parts


def _nice(value: float) -> float:
    magnitude = 10 ** math.floor(math.log10(max(value, 1e-9)))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude:
            return float(step * magnitude)
    return float(10 * magnitude)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2:
        print("usage: python -m diskname.bench.growth OUT.svg RESULT.json ...", file=sys.stderr)
        return 2
    results = load([Path(a) for a in args[1:]])
    sizes = ", ".join(f"{int(r['vms']):,}" for r in results)
    Path(args[0]).write_text(growth_svg(results, f"the engine as the fleet grows ({sizes} VMs)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
