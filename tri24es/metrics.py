"""The Prometheus endpoint's collector: every metric computed from the views on a scrape.

A scrape reads a :class:`~tri24es.projections.reads.Glance` (indexed lookups only, the same
cost at any log size). Counts of events by type are not in the views: ``EventCounter`` keeps
them by following the log, reading only the events committed since the previous scrape.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from eventlog import EventStore
from tri24es.budget import BudgetLimits
from tri24es.machines import TaskState, WorkerState
from tri24es.names import Priority
from tri24es.projections import connection_of, reads
from tri24es.timeutil import now_us

COUNTED_TYPES = ("TaskSubmitted", "TaskClaimed", "TaskCompleted", "TaskFailed",
                 "TaskRequeued", "TaskDeadLettered", "TaskCancelled", "SpendRecorded",
                 "KillSwitchActivated")


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

    def __init__(self, store: EventStore, limits: BudgetLimits) -> None:
        self._store = store
        self._limits = limits
        self._events = EventCounter(store)
        self._lock = threading.Lock()

    def collect(self) -> Iterator[Metric]:
        with self._lock:  # one scrape at a time on the store's single connection
            with self._store.snapshot() as tx:
                g = reads.glance(self._store, connection_of(tx), self._limits, now_us(),
                                 recent=0, explain=False)
            counts = self._events.counts()
        queue = GaugeMetricFamily("tri24es_queue_tasks", "Tasks by state and priority.",
                                  labels=["state", "priority"])
        for state in TaskState:
            for priority in Priority:
                queue.add_metric([state.value, priority.value],
                                 g.queue.get((state.value, priority.rank), 0))
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
