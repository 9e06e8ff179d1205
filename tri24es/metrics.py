"""The fleet at a glance, for ``tri24es top`` and the Prometheus endpoint.

A ``Glance`` is read from the projection tables inside one snapshot (indexed lookups only),
so it costs the same on a log of a hundred events or a hundred million. Counts of events by
type are not in the views: ``EventCounter`` keeps them by following the log, reading only the
events committed since the previous scrape.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from eventlog import EventStore, RecordedEvent
from tri24es.config import Settings
from tri24es.events import Priority
from tri24es.machines import TaskState, WorkerState
from tri24es.projections import QUEUE, SPEND, KillSwitchView, connection_of, read_killswitch
from tri24es.projections.spend import UNITS_PER_USD
from tri24es.projections.sql import Db
from tri24es.timeutil import now_us

MINUTE_US = 60_000_000
SPARK_MINUTES = 60
COUNTED_TYPES = ("TaskSubmitted", "TaskClaimed", "TaskCompleted", "TaskFailed",
                 "TaskRequeued", "TaskDeadLettered", "TaskCancelled", "SpendRecorded",
                 "KillSwitchActivated")


@dataclass
class WorkerLine:
    worker_id: str
    state: str
    current_task: str | None
    last_seen: int


@dataclass
class Glance:
    now: int
    head: int
    queue: dict[tuple[str, str], int]  # (state, priority) -> tasks
    workers: list[WorkerLine]
    spend_total: Decimal
    window_total: Decimal
    window_seconds: int
    rate_limit: Decimal  # USD per minute
    per_minute: list[Decimal]  # the last hour, oldest first
    killswitch: KillSwitchView
    recent: list[RecordedEvent] = field(default_factory=list)

    @property
    def rate(self) -> Decimal:
        """USD per minute over the budget window."""
        return self.window_total * 60 / self.window_seconds

    def workers_by_state(self) -> Counter[str]:
        return Counter(w.state for w in self.workers)


def per_minute(conn: Db, now: int, minutes: int = SPARK_MINUTES) -> list[Decimal]:
    """Spend in each of the last ``minutes`` whole minutes up to ``now``, oldest first."""
    start = now - minutes * MINUTE_US
    buckets = [0] * minutes
    rows = conn.execute(
        "SELECT (occurred_at - ?) / ?, sum(amount_units) FROM spend"
        " WHERE occurred_at > ? AND occurred_at <= ? GROUP BY 1",
        (start + 1, MINUTE_US, start, now),
    )
    for index, units in rows:
        buckets[min(int(index), minutes - 1)] += units
    return [Decimal(units) / UNITS_PER_USD for units in buckets]


def glance(store: EventStore, settings: Settings, now: int | None = None,
           recent: int = 10) -> Glance:
    """Everything ``top`` shows and ``metrics`` serves, from one consistent snapshot."""
    now = now_us() if now is None else now
    with store.snapshot() as tx:
        conn = connection_of(tx)
        head = store.head()
        queue = {(state, list(Priority)[rank].value): n
                 for (state, rank), n in QUEUE.counts(conn).items()}
        workers = [WorkerLine(*row) for row in conn.execute(
            "SELECT worker_id, state, current_task, last_seen FROM workers"
            " ORDER BY worker_id")]
        (units,) = conn.execute(
            "SELECT coalesce(sum(amount_units), 0) FROM spend_buckets").fetchone()
        window = settings.budget_window_size
        window_total = SPEND.window_total(conn, now - window * 1_000_000, now + 1)
        sparks = per_minute(conn, now)
        killswitch = read_killswitch(conn)
        last = store.read_page(max(head - recent, 0), recent) if recent else []
    return Glance(now, head, queue, workers, Decimal(units) / UNITS_PER_USD, window_total,
                  window, settings.budget_rate_limit, sparks, killswitch, last)


class EventCounter:
    """Events of each counted type, kept up to date by reading only what is new."""

    def __init__(self, store: EventStore) -> None:
        self._store = store
        self._position = 0
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def counts(self) -> Counter[str]:
        with self._lock:
            head = self._store.head()
            for page in self._store.read_pages(self._position, COUNTED_TYPES, head):
                self._counts.update(event.type for event in page)
            self._position = max(self._position, head)  # none of the types: still read
            return Counter(self._counts)


class FleetCollector(Collector):
    """Computes every metric from the views on each scrape."""

    def __init__(self, store: EventStore, settings: Settings) -> None:
        self._store = store
        self._settings = settings
        self._events = EventCounter(store)
        self._lock = threading.Lock()

    def collect(self) -> Iterator[Metric]:
        with self._lock:  # one scrape at a time on the store's single connection
            g = glance(self._store, self._settings, recent=0)
            counts = self._events.counts()
        queue = GaugeMetricFamily("tri24es_queue_tasks", "Tasks by state and priority.",
                                  labels=["state", "priority"])
        for state in TaskState:
            for priority in Priority:
                queue.add_metric([state.value, priority.value],
                                 g.queue.get((state.value, priority.value), 0))
        yield queue
        workers = GaugeMetricFamily("tri24es_workers", "Registered workers by state.",
                                    labels=["state"])
        by_state = g.workers_by_state()
        for wstate in WorkerState:
            workers.add_metric([wstate.value], by_state.get(wstate.value, 0))
        yield workers
        for name, topic, doc in (
            ("tri24es_task_claims", "TaskClaimed", "Claims (attempts started)."),
            ("tri24es_task_completions", "TaskCompleted", "Attempts that completed."),
            ("tri24es_task_failures", "TaskFailed", "Attempts that failed."),
        ):
            yield CounterMetricFamily(name, doc, value=counts.get(topic, 0))
        events = CounterMetricFamily("tri24es_events", "Events in the log by type.",
                                     labels=["type"])
        for topic in COUNTED_TYPES:
            events.add_metric([topic], counts.get(topic, 0))
        yield events
        yield CounterMetricFamily("tri24es_spend_usd", "Spend recorded, in USD.",
                                  value=float(g.spend_total))
        yield GaugeMetricFamily(
            "tri24es_spend_rate_usd_per_minute",
            f"Spend rate over the last {g.window_seconds} s (BUDGET_WINDOW_SIZE).",
            value=float(g.rate))
        yield GaugeMetricFamily("tri24es_spend_rate_limit_usd_per_minute",
                                "BUDGET_RATE_LIMIT.", value=float(g.rate_limit))
        yield GaugeMetricFamily("tri24es_kill_switch_active", "1 while the kill switch is on.",
                                value=int(g.killswitch.active))
        yield GaugeMetricFamily("tri24es_log_head_position", "The last position in the log.",
                                value=g.head)
