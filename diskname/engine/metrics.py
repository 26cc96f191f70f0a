"""The engine's Prometheus metrics, written by hand in the text format 0.0.4."""

from __future__ import annotations

import bisect
import time
from collections import Counter
from collections.abc import Iterable

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
MAX_PENDING_PLUGS = 10_000


class Histogram:
    """Cumulative buckets, a sum and a count."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def render(self, name: str) -> list[str]:
        lines, running = [], 0
        for bound, count in zip(self.buckets, self.counts, strict=False):
            running += count
            lines.append(f'{name}_bucket{{le="{bound}"}} {running}')
        lines.append(f'{name}_bucket{{le="+Inf"}} {self.count}')
        lines.append(f"{name}_sum {self.sum}")
        lines.append(f"{name}_count {self.count}")
        return lines


class Metrics:
    """Counters and the hot-plug-to-name latency histogram of one engine."""

    def __init__(self) -> None:
        self.polls = 0
        # Polls the host answered with its stats digest alone (nothing moved).
        self.polls_unchanged = 0
        # Hosts polled at least once since this engine started.
        self.hosts_polled: set[str] = set()
        self.full_list_calls = 0
        self.db_writes = 0
        self.rejected: Counter[str] = Counter()
        # Why the names counted as rejected bad_name were refused (names.refusal).
        self.names_refused: Counter[str] = Counter()
        # Entries of host replies not stored, by reason (deferred, vm_error, ...).
        self.reports_dropped: Counter[str] = Counter()
        # Reports of VMs registered on another host, ignored (SPEC §12).
        self.foreign_reports = 0
        # Claims a host may not make (SPEC §19), by reason (engine/core/claims.py).
        self.claims_refused: Counter[str] = Counter()
        self.name_latency = Histogram(LATENCY_BUCKETS)
        # host name -> 1 while this engine holds the host's lease, else 0
        self.hosts_owned: dict[str, int] = {}
        # failed sign-ins by reason: password, token, throttled (engine/http/auth.py)
        self.login_failures: Counter[str] = Counter()
        self._plugged_at: dict[tuple[str, str], float] = {}

    def plug_requested(self, vm_id: str, disk_id: str, at: float | None = None) -> None:
        """Remember when a hot-plug of ``disk_id`` into ``vm_id`` was requested."""
        if len(self._plugged_at) >= MAX_PENDING_PLUGS:
            self._plugged_at.pop(next(iter(self._plugged_at)))
        self._plugged_at[(vm_id, disk_id)] = time.monotonic() if at is None else at

    def plug_abandoned(self, vm_id: str, disk_id: str) -> None:
        self._plugged_at.pop((vm_id, disk_id), None)

    def name_stored(self, vm_id: str, disk_id: str) -> None:
        """A name was stored for the disk: close its latency measurement, if any."""
        started = self._plugged_at.pop((vm_id, disk_id), None)
        if started is not None:
            self.name_latency.observe(time.monotonic() - started)

    def render(self) -> str:
        lines = [
            *_counter("diskname_engine_polls_total", "Host.getAllVmStats calls", self.polls),
            *_counter(
                "diskname_engine_polls_unchanged_total",
                "Host.getAllVmStats answered with the stats digest alone",
                self.polls_unchanged,
            ),
            "# HELP diskname_engine_hosts_polled hosts polled since the engine started",
            "# TYPE diskname_engine_hosts_polled gauge",
            f"diskname_engine_hosts_polled {len(self.hosts_polled)}",
            *_counter(
                "diskname_engine_full_list_calls_total",
                "Host.getVMFullList calls",
                self.full_list_calls,
            ),
            *_counter(
                "diskname_engine_db_writes_total", "statements that changed rows", self.db_writes
            ),
            *_labelled(
                "diskname_engine_guest_data_rejected_total",
                "guest mapping entries dropped",
                "reason",
                sorted(self.rejected.items()),
            ),
            *_labelled(
                "diskname_engine_guest_names_refused_total",
                "guest names refused (counted as bad_name above), by why",
                "reason",
                sorted(self.names_refused.items()),
            ),
            *_counter(
                "diskname_engine_foreign_vm_reports_total",
                "reports of VMs registered on another host, ignored",
                self.foreign_reports,
            ),
            *_labelled(
                "diskname_engine_host_claims_refused_total",
                "disks and VM names a host reported that are not its to claim",
                "reason",
                sorted(self.claims_refused.items()),
            ),
            *_labelled(
                "diskname_engine_host_reports_dropped_total",
                "host reply entries not stored",
                "reason",
                sorted(self.reports_dropped.items()),
            ),
            "# HELP diskname_engine_name_latency_seconds hot-plug request to stored name",
            "# TYPE diskname_engine_name_latency_seconds histogram",
            *self.name_latency.render("diskname_engine_name_latency_seconds"),
            *_labelled(
                "diskname_engine_host_owned",
                "1 when this engine monitors the host",
                "host",
                sorted(self.hosts_owned.items()),
                kind="gauge",
            ),
            *_labelled(
                "diskname_engine_login_failures_total",
                "refused sign-ins and credentials",
                "reason",
                [(r, self.login_failures[r]) for r in ("password", "token", "throttled")],
            ),
        ]
        return "\n".join(lines) + "\n"


def _counter(name: str, help_text: str, value: int) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} counter", f"{name} {value}"]


def _labelled(
    name: str,
    help_text: str,
    label: str,
    values: Iterable[tuple[str, int]],
    *,
    kind: str = "counter",
) -> list[str]:
    """A metric family with one sample per label value."""
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    return lines + [f'{name}{{{label}="{_label(key)}"}} {value}' for key, value in values]


def _label(value: str) -> str:
    """A label value escaped as the text format requires (host names are user input)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
