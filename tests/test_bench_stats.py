"""The bench's arithmetic: percentiles, the summary, the chart, the savings."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

from diskname.bench.run import savings
from diskname.bench.stats import cdf_svg, percentile, summary_ms


def test_percentiles_interpolate_between_ranks() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.5
    assert percentile(values, 99) == 99.01
    assert percentile([3.0], 95) == 3.0
    assert math.isnan(percentile([], 50))


def test_summary_is_in_milliseconds() -> None:
    assert summary_ms([0.010, 0.020, 0.030]) == {"p50": 20.0, "p95": 29.0, "p99": 29.8, "max": 30.0}
    assert summary_ms([]) == {"p50": None, "p95": None, "p99": None, "max": None}


def test_chart_is_well_formed_svg() -> None:
    svg = ET.fromstring(cdf_svg({"events": [0.05, 0.07, 0.2], "poll": [1.2]}, "t <&>"))
    assert svg.tag.endswith("svg")
    assert len([e for e in svg.iter() if e.tag.endswith("polyline")]) == 2


def test_savings_are_ratios_of_measured_figures() -> None:
    gated = {"full_list_calls": 0, "db_writes": 0, "engine_cpu_ms_per_cycle": 2.0}
    naive = {"full_list_calls": 500, "db_writes": 4, "engine_cpu_ms_per_cycle": 90.0}
    out = savings(gated, naive)
    assert out["engine_cpu_ratio"] == 45.0
    assert out["full_list_calls_saved"] == 500 and out["full_list_calls_ratio"] is None


def test_the_growth_chart_has_a_panel_per_metric_and_a_point_per_fleet(tmp_path: Path) -> None:
    from diskname.bench.growth import load, main

    for vms, cpu in ((1000, 5.0), (100_000, 60.0), (10_000, 20.0)):
        result = {
            "vms": vms,
            "steady": {"engine_cpu_ms_per_cycle": cpu},
            "engine_rss_mib": {"peak": vms / 1000},
            "latency_ms": {"p99": 100.0},
        }
        (tmp_path / f"{vms}.json").write_text("progress\n" + json.dumps(result) + "\n")
    files = sorted(tmp_path.glob("*.json"))
    assert [r["vms"] for r in load(files)] == [1000, 10_000, 100_000]
    assert main([str(tmp_path / "g.svg"), *map(str, files)]) == 0
    svg = ET.fromstring((tmp_path / "g.svg").read_text())
    assert len([e for e in svg.iter() if e.tag.endswith("polyline")]) == 3
    assert len([e for e in svg.iter() if e.tag.endswith("circle")]) == 9
