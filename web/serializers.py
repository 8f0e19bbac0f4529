"""Prometheus exposition for GET /api/v1/metrics, written by prometheus_client.

The store is read once per scrape into a `MetricsSnapshot` (a fixed number of
queries); `metrics_text` turns it into the text format through a collector
registered in a registry of its own, so nothing is kept between scrapes and
every process (or several `fleet serve`) answers from the same store.
Histograms that must survive restarts are counted from the store's history
(finished runs, drift_resolutions), never from process memory.

The JSON shapes of runs, hosts, revisions and approvals live in the core
(`fleet.shapes`), shared by the CLI and the API.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from fleet import vocabulary
from fleet.store import workers
from fleet.store.views import HistogramView, HostView, SourceView
from fleet.store.workers import WorkerView
from fleet.vocabulary import HostStatus, aware, epoch_seconds

# Prometheus' text format 0.0.4, which generate_latest writes (names stay plain ASCII).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
ALL_HOSTS = "all"  # Ansible's names: every host is in "all", a host of no other group in "ungrouped"
UNGROUPED = "ungrouped"


@dataclass(frozen=True)
class MetricsSnapshot:
    """What one scrape shows, read from the store."""

    now: datetime
    hosts: list[HostView]  # the inventory's hosts
    run_counts: dict[tuple[str, str], int]  # finished runs per (kind, final status)
    queue_depth: int
    source: SourceView | None
    drift_fix: HistogramView
    run_durations: dict[str, HistogramView]  # per run kind; a kind without finished runs may be missing
    workers: list[WorkerView] = field(default_factory=list)  # every worker seen (scale-out)
    executor: str = "local"  # FLEET_EXECUTOR of this process


def metrics_text(snapshot: MetricsSnapshot) -> bytes:
    """The snapshot in Prometheus' text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_SnapshotCollector(snapshot))
    return generate_latest(registry)


class _SnapshotCollector:
    """A prometheus_client collector over one snapshot (collect() is all a registry asks of it)."""

    def __init__(self, snapshot: MetricsSnapshot):
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot
        yield from host_families(snap.hosts, snap.now)
        yield hosts_family(snap.hosts)
        yield runs_family(snap.run_counts)
        yield run_duration_family(snap.run_durations)
        yield histogram_family(
            "fleet_drift_to_in_sync_seconds",
            "Time from a host's drift first found to the host proven in_sync, per fixed drift.",
            [([], snap.drift_fix)],
            [],
        )
        yield from source_families(snap.source)
        yield _gauge("fleet_queue_depth", "Runs queued for the controller.", snap.queue_depth)
        yield from worker_families(snap.workers, snap.executor)
        newest = max((h.last_check_at for h in snap.hosts if h.last_check_at), default=None)
        yield _gauge(
            "fleet_last_check_timestamp_seconds",
            "When any host was last checked, seconds since the epoch (0: never); "
            "per host: fleet_host_last_check_timestamp_seconds.",
            epoch_seconds(newest),
        )


def worker_families(listed: list[WorkerView], executor: str) -> Iterator[Metric]:
    """Scale-out: workers per state, the shard slots that take work, and whether runs can execute at all."""
    family = GaugeMetricFamily(
        "fleet_workers", "fleet workers seen, by state (online, lost, stopped).", labels=["state"]
    )
    for state in workers.WORKER_STATES:
        family.add_metric([state], sum(1 for w in listed if w.state == state))
    yield family
    slots = workers.capacity_of(listed)
    yield _gauge("fleet_worker_slots", "Shards the online workers of this fleet version can run at once.", slots)
    yield _gauge(
        "fleet_executor_workers_missing",
        "1 when FLEET_EXECUTOR=celery and no online worker of this version takes shards: runs wait.",
        1 if executor == "celery" and slots == 0 else 0,
    )


def host_families(hosts: list[HostView], now: datetime) -> Iterator[Metric]:
    """Per host: its last successful check (when, how long ago) and, if drifted, the drift's age."""
    stamp = GaugeMetricFamily(
        "fleet_host_last_check_timestamp_seconds",
        "When the host was last checked successfully (judged in_sync, drifted or "
        "unverified), seconds since the epoch; 0: never.",
        labels=["host"],
    )
    age = GaugeMetricFamily(
        "fleet_host_seconds_since_last_check",
        "Seconds since the host's last successful check; +Inf: never checked successfully.",
        labels=["host"],
    )
    drift = GaugeMetricFamily(
        "fleet_host_drift_age_seconds",
        "Seconds since drift was first found on a host that is drifted now.",
        labels=["host"],
    )
    for host in hosts:
        checked = aware(host.last_ok_check_at)
        stamp.add_metric([host.name], epoch_seconds(checked))
        age.add_metric([host.name], _seconds(now, checked))
        if host.status == HostStatus.DRIFTED:
            # Drifted before fleet kept drift_since: its last check is the earliest sure sighting.
            drift.add_metric([host.name], _seconds(now, aware(host.drift_since or host.last_check_at)))
    return [stamp, age, drift]


def hosts_family(hosts: list[HostView]) -> Metric:
    """Hosts per group and status; group "all" counts each host once. Every status of every group is
    there, at 0 if need be, so an alert never sees a series vanish."""
    counts: dict[tuple[str, str], int] = {}
    for host in hosts:
        for group in [ALL_HOSTS, *(host.group_list or [UNGROUPED])]:
            counts[(group, host.status)] = counts.get((group, host.status), 0) + 1
    groups = [ALL_HOSTS] + sorted({group for group, _ in counts} - {ALL_HOSTS})
    statuses = list(vocabulary.HOST_STATUSES) + sorted({s for _, s in counts} - set(vocabulary.HOST_STATUSES))
    family = GaugeMetricFamily(
        "fleet_hosts", 'Inventory hosts by group and status (group="all": every host once).', labels=["group", "status"]
    )
    for group in groups:
        for status in statuses:
            family.add_metric([group, status], counts.get((group, status), 0))
    return family


def runs_family(counts: dict[tuple[str, str], int]) -> Metric:
    # Only finished runs: a counter must never go down, and queued/running counts would
    # (fleet_queue_depth shows the queue). Every known series is present, at 0 if need be.
    keys = [(k, s) for k in vocabulary.RUN_KINDS for s in vocabulary.RUN_FINAL_STATUSES]
    keys += sorted(set(counts) - set(keys))
    family = CounterMetricFamily(
        "fleet_runs_total", "Runs finished, by kind and final status.", labels=["kind", "status"]
    )
    for kind, status in keys:
        family.add_metric([kind, status], counts.get((kind, status), 0))
    return family


def run_duration_family(durations: dict[str, HistogramView]) -> Metric:
    kinds = list(vocabulary.RUN_KINDS) + sorted(set(durations) - set(vocabulary.RUN_KINDS))
    bounds = vocabulary.RUN_DURATION_BUCKETS
    empty = HistogramView(bounds, (0,) * len(bounds), 0, 0.0)
    return histogram_family(
        "fleet_run_duration_seconds",
        "How long finished runs took, by kind.",
        [([kind], durations.get(kind, empty)) for kind in kinds],
        ["kind"],
    )


def histogram_family(
    name: str, help_text: str, samples: list[tuple[list[str], HistogramView]], labels: list[str]
) -> Metric:
    family = HistogramMetricFamily(name, help_text, labels=labels)
    for values, histogram in samples:
        buckets = [
            (floatToGoString(bound), count) for bound, count in zip(histogram.bounds, histogram.counts, strict=False)
        ]
        family.add_metric(values, buckets + [("+Inf", histogram.count)], histogram.total)
    return family


def source_families(source: SourceView | None) -> list[Metric]:
    return [
        _gauge(
            "fleet_source_stale", "1 when the last fetch of the git source failed.", 1 if source and source.stale else 0
        ),
        _gauge(
            "fleet_source_last_fetch_timestamp_seconds",
            "When the controller last fetched the git source (fleet_source_stale: whether that failed), "
            "seconds since the epoch; 0: never.",
            epoch_seconds(source.last_fetch_at if source else None),
        ),
    ]


def _gauge(name: str, help_text: str, value: float) -> Metric:
    return GaugeMetricFamily(name, help_text, value=value)


def _seconds(now: datetime, since: datetime | None) -> float:
    return math.inf if since is None else max(0.0, (now - since).total_seconds())
