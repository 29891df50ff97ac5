"""Prometheus metrics: what a worker does, and what the database holds.

Two sources, both optional (``pip install "django-alarms[prometheus]"``, which brings
``prometheus-client``; nothing here imports it until metrics are asked for):

- :func:`worker_metrics` counts in a worker process: attempts by handler and outcome, how late
  each attempt started against its intended time, handler durations, claims and the latency of
  the claim statement, lost attempts rescued, occurrences skipped by a misfire policy, fenced
  writes, and gauges read at scrape time (armed timers, attempts in flight, how far ahead the
  window reaches). ``run_alarms --metrics-port`` serves them with the process's own metrics.
- :class:`DatabaseCollector` reads the tables when it is scraped (alarms by state and handler,
  overdue alarms, the next due time, live workers, the latest heartbeat), for any web
  process: register it with ``django-prometheus``'s registry, or serve it with the view in
  :mod:`django_alarms.urls`.

Labels are bounded: handler names (those registered in the process; any other name found in
the database counts as ``unregistered`` in a worker) and outcomes, never alarm ids or keys.
"""

from __future__ import annotations

import importlib.util
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django_alarms.types import FINAL_STATES as FINISHED
from django_alarms.validation import parse_address

__all__ = ["DatabaseCollector", "Gauges", "WorkerMetrics", "parse_address", "worker_metrics"]

if TYPE_CHECKING:
    from django_alarms.claims import Claim
    from django_alarms.outcomes import Completion

#: The distribution, the module and the extra that provide metrics.
DISTRIBUTION = "prometheus-client"
MODULE = "prometheus_client"
EXTRA = "prometheus"

#: A handler name found in the database that this process has not registered (a label value).
UNREGISTERED = "unregistered"

#: Lateness buckets, in seconds: fine below 10 ms (a delivery on time is 1-3 ms late on the
#: machine of docs/performance.md), coarse up to an hour (an outage caught up).
LATENESS_BUCKETS = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0,
)  # fmt: skip
DURATION_BUCKETS = (
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
)  # fmt: skip
STATEMENT_BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
)  # fmt: skip


def available() -> bool:
    """Whether prometheus-client is installed."""
    return importlib.util.find_spec(MODULE) is not None


class MetricsUnavailable(RuntimeError):
    """Metrics were asked for and prometheus-client is not installed."""

    def __init__(self) -> None:
        super().__init__(
            f'metrics need {DISTRIBUTION}: pip install "django-alarms[{EXTRA}]"',
        )


def _client() -> Any:
    try:
        import prometheus_client
    except ImportError:
        raise MetricsUnavailable() from None
    return prometheus_client


def _gauge(name: str, documentation: str, labels: Sequence[str] = ()) -> Any:
    """A gauge family that a collector fills at each scrape."""
    _client()
    from prometheus_client.core import GaugeMetricFamily

    return GaugeMetricFamily(name, documentation, labels=labels)


# -- the worker ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Gauges:
    """What a running worker reports when it is scraped."""

    armed: int
    in_flight: int
    window_ahead_seconds: float


class WorkerMetrics:
    """The worker's hooks. This base counts nothing: a worker without metrics calls these at
    the cost of a method call, once per batch, never per alarm."""

    enabled = False

    def recorded(self, applied: Sequence[Completion]) -> None:
        """Attempts that were written: count, and observe lateness and duration."""

    def claimed(self, count: int, seconds: float) -> None:
        """One claim statement took ``seconds`` and claimed ``count`` alarms."""

    def rescued(self, count: int) -> None:
        """Lost attempts recorded by the rescue sweep."""

    def missed(self, claim: Claim, count: int) -> None:
        """Occurrences of a recurring alarm skipped by its misfire policy."""

    def fenced(self, count: int) -> None:
        """Completions that the fence refused (the claim was no longer this worker's)."""

    def watch(self, gauges: Callable[[], Gauges]) -> None:
        """Report what ``gauges`` returns at each scrape, while the worker runs."""

    def unwatch(self, gauges: Callable[[], Gauges]) -> None:
        """Stop reporting ``gauges``."""


OFF = WorkerMetrics()


class _Prometheus(WorkerMetrics):
    enabled = True

    def __init__(self, registry: Any) -> None:
        client = _client()
        from django_alarms.handlers import registry as handlers

        self._handlers = handlers
        self._attempts = client.Counter(
            "django_alarms_attempts",
            "Attempts recorded, by handler and outcome.",
            ("handler", "outcome"),
            registry=registry,
        )
        self._lateness = client.Histogram(
            "django_alarms_lateness_seconds",
            "How late each attempt started: its start minus the time it was intended for.",
            ("handler",),
            buckets=LATENESS_BUCKETS,
            registry=registry,
        )
        self._duration = client.Histogram(
            "django_alarms_handler_duration_seconds",
            "How long each attempt ran, from its start to its end.",
            ("handler",),
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self._claims = client.Counter(
            "django_alarms_claims", "Alarms claimed by this worker.", registry=registry
        )
        self._claim_seconds = client.Histogram(
            "django_alarms_claim_statement_seconds",
            "How long each claim statement took.",
            buckets=STATEMENT_BUCKETS,
            registry=registry,
        )
        self._rescued = client.Counter(
            "django_alarms_rescued",
            "Lost attempts (their worker stopped renewing the lease) recorded by this "
            "worker's rescue sweep.",
            registry=registry,
        )
        self._missed = client.Counter(
            "django_alarms_misfires_skipped",
            "Occurrences of recurring alarms that their misfire policy skipped.",
            ("handler",),
            registry=registry,
        )
        self._fenced = client.Counter(
            "django_alarms_fenced_writes",
            "Completions not written because the claim was no longer this worker's.",
            registry=registry,
        )
        # Children by label values: labels() takes a lock and builds a key on every call.
        self._children: dict[tuple[str, str], tuple[Any, Any, Any]] = {}
        self._lock = threading.Lock()
        self._plain: list[Callable[[], Gauges]] = []
        registry.register(_GaugeCollector(self))

    def _label(self, handler: str) -> str:
        return handler if handler in self._handlers else UNREGISTERED

    def _of(self, handler: str, outcome: str) -> tuple[Any, Any, Any]:
        found = self._children.get((handler, outcome))
        if found is None:
            name = self._label(handler)
            found = (
                self._attempts.labels(name, outcome),
                self._lateness.labels(name),
                self._duration.labels(name),
            )
            with self._lock:
                if len(self._children) < 10_000:
                    self._children[(handler, outcome)] = found
        return found

    def recorded(self, applied: Sequence[Completion]) -> None:
        for item in applied:
            claim, result = item.claim, item.result
            attempts, lateness, duration = self._of(claim.handler, str(result.outcome))
            attempts.inc()
            late = (result.started_at - claim.intended_at).total_seconds()
            lateness.observe(late if late > 0 else 0.0)
            duration.observe((result.finished_at - result.started_at).total_seconds())

    def claimed(self, count: int, seconds: float) -> None:
        self._claims.inc(count)
        self._claim_seconds.observe(seconds)

    def rescued(self, count: int) -> None:
        if count:
            self._rescued.inc(count)

    def missed(self, claim: Claim, count: int) -> None:
        self._missed.labels(self._label(claim.handler)).inc(count)

    def fenced(self, count: int) -> None:
        if count:
            self._fenced.inc(count)

    def watch(self, gauges: Callable[[], Gauges]) -> None:
        with self._lock:
            self._plain.append(gauges)

    def unwatch(self, gauges: Callable[[], Gauges]) -> None:
        with self._lock:
            if gauges in self._plain:
                self._plain.remove(gauges)

    def gauges(self) -> list[Gauges]:
        with self._lock:
            sources = list(self._plain)
        return [source() for source in sources]


class _GaugeCollector:
    """The worker's gauges, read when scraped (nothing is updated between scrapes)."""

    def __init__(self, metrics: _Prometheus) -> None:
        self.metrics = metrics

    def describe(self) -> Iterator[Any]:
        return self._families([])

    def collect(self) -> Iterator[Any]:
        return self._families(self.metrics.gauges())

    def _families(self, found: Sequence[Gauges]) -> Iterator[Any]:
        armed = _gauge("django_alarms_worker_armed_timers", "Alarms armed in memory.")
        in_flight = _gauge(
            "django_alarms_worker_in_flight_attempts",
            "Claims held: waiting for their due time, running, or being recorded.",
        )
        ahead = _gauge(
            "django_alarms_worker_window_ahead_seconds",
            "How far ahead of now the loaded window reaches.",
        )
        if found:
            armed.add_metric([], sum(item.armed for item in found))
            in_flight.add_metric([], sum(item.in_flight for item in found))
            ahead.add_metric([], min(item.window_ahead_seconds for item in found))
        yield from (armed, in_flight, ahead)


_worker: _Prometheus | None = None
_worker_lock = threading.Lock()


def worker_metrics(enabled: bool = True) -> WorkerMetrics:
    """The worker's metrics, registered once per process with prometheus-client's default
    registry (so that the process's own CPU and memory metrics are served beside them);
    :data:`OFF` when not ``enabled``. Raises :class:`MetricsUnavailable` without the extra."""
    global _worker
    if not enabled:
        return OFF
    with _worker_lock:
        if _worker is None:
            _worker = _Prometheus(_client().REGISTRY)
        return _worker


def serve(address: tuple[str, int]) -> Callable[[], None]:
    """Serve prometheus-client's default registry over HTTP at ``(host, port)`` in a daemon
    thread; returns what stops it. ``OSError`` when the port cannot be bound."""
    client = _client()
    host, port = address
    server, thread = client.start_http_server(port, addr=host)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return stop


# -- the database -------------------------------------------------------------------------------


class DatabaseCollector:
    """Metrics read from the alarm tables at each scrape: a handful of bounded queries (the
    same the overview and ``alarms_status`` run). Register it with a prometheus-client
    registry: ``REGISTRY.register(DatabaseCollector())``."""

    def __init__(self, *, now: Callable[[], datetime] | None = None) -> None:
        from django_alarms import clock

        self.now = now or clock.now

    def describe(self) -> Iterator[Any]:
        return self._families(None)

    def collect(self) -> Iterator[Any]:
        return self._families(self._read())

    def _read(self) -> dict[str, Any]:
        from django_alarms import selectors
        from django_alarms.models import Worker

        now = self.now()
        started = time.perf_counter()
        active = selectors.active_by_handler()
        states = selectors.state_counts()
        oldest = selectors.oldest_overdue(now=now)
        upcoming = selectors.next_due(now=now, limit=1)
        beats = list(Worker.objects.values_list("heartbeat_at", flat=True))
        since = selectors.alive_since(now)
        return {
            "active": active,
            "finished": {state: states[state].value for state in FINISHED},
            "overdue": selectors.overdue_count(now=now).value,
            "oldest": (now - oldest.due_at).total_seconds() if oldest is not None else 0.0,
            "next": (upcoming[0].due_at - now).total_seconds() if upcoming else None,
            "alive": sum(1 for beat in beats if beat >= since),
            "beat": min((now - beat).total_seconds() for beat in beats) if beats else None,
            "took": time.perf_counter() - started,
        }

    def _families(self, found: dict[str, Any] | None) -> Iterator[Any]:
        alarms = _gauge(
            "django_alarms_alarms",
            "Scheduled, running and paused alarms, by state and handler.",
            labels=("state", "handler"),
        )
        finished = _gauge(
            "django_alarms_finished_alarms",
            "Succeeded, failed and cancelled alarms not purged yet, by state (counted up to "
            "10,000 each).",
            labels=("state",),
        )
        overdue = _gauge(
            "django_alarms_overdue_alarms",
            "Scheduled alarms whose due time has passed (counted up to 10,000).",
        )
        oldest = _gauge(
            "django_alarms_oldest_overdue_seconds",
            "How long the oldest overdue alarm has been due (0: none is).",
        )
        upcoming = _gauge(
            "django_alarms_next_due_seconds",
            "Seconds until the next scheduled alarm is due (absent: none is scheduled).",
        )
        alive = _gauge(
            "django_alarms_live_workers",
            "Workers whose heartbeat is within three HEARTBEAT_INTERVALs.",
        )
        beat = _gauge(
            "django_alarms_last_heartbeat_age_seconds",
            "Age of the latest heartbeat of any worker (absent: no worker is registered).",
        )
        took = _gauge(
            "django_alarms_collector_duration_seconds",
            "How long reading these metrics from the database took.",
        )
        if found is not None:
            for handler, counts in sorted(found["active"].items()):
                for state, count in sorted(counts.items()):
                    alarms.add_metric([state, handler], count)
            for state, count in found["finished"].items():
                finished.add_metric([state], count)
            overdue.add_metric([], found["overdue"])
            oldest.add_metric([], found["oldest"])
            if found["next"] is not None:
                upcoming.add_metric([], found["next"])
            alive.add_metric([], found["alive"])
            if found["beat"] is not None:
                beat.add_metric([], found["beat"])
            took.add_metric([], found["took"])
        yield from (alarms, finished, overdue, oldest, upcoming, alive, beat, took)


def database_exposition() -> tuple[bytes, str]:
    """The database collector's metrics in the text exposition format, and its content type
    (what the view in :mod:`django_alarms.urls` answers)."""
    client = _client()
    registry = client.CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector())
    return client.generate_latest(registry), client.CONTENT_TYPE_LATEST
