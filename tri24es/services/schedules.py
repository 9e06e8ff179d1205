"""Recurring tasks: add and remove schedules, and submit the task of each slot that is due.

Who fires them: the queue watcher, on each of its scans (so ``tri24es up`` does). A slot's
task id is derived from the schedule and the slot (``scheduling.slot_task_id``), and submits
are idempotent by id, so two watchers on one store never submit a slot twice. Only the latest
slot is fired: a fleet that was down for three nights runs the nightly task once, not three
times, and a schedule never fires a slot from before it was added.
"""

from __future__ import annotations

from tri24es import events as ev
from tri24es.errors import UsageError
from tri24es.names import schedule_stream
from tri24es.projections import connection_of
from tri24es.projections.queue import QUEUE
from tri24es.projections.schedules import ScheduleRow, all_schedules, load_schedule
from tri24es.scheduling import check_cron, last_slot, next_slot, slot_task_id
from tri24es.services.base import NotFound, ServiceError, TaskSpec, retry_on_conflict
from tri24es.services.tasks import TaskCommands


class ScheduleExists(ServiceError, UsageError):
    """A schedule of that name exists already."""


class ScheduleCommands(TaskCommands):
    @retry_on_conflict
    def add_schedule(self, event: ev.ScheduleAdded) -> None:
        """Add a recurring task; ValueError for a bad cron expression or zone."""
        check_cron(event.cron, event.timezone, self.clock())
        stream = schedule_stream(event.name)
        with self.store.transaction() as tx:
            conn = connection_of(tx)
            if load_schedule(conn, event.name) is not None:
                raise ScheduleExists(f"schedule {event.name!r} exists: remove it first")
            self._append(conn, tx, stream, [event], tx.stream_version(stream))

    @retry_on_conflict
    def remove_schedule(self, name: str, *, by: str | None) -> None:
        with self.store.transaction() as tx:
            conn = connection_of(tx)
            row = load_schedule(conn, name)
            if row is None:
                raise NotFound(f"no schedule {name!r}")
            self._append(conn, tx, schedule_stream(name),
                         [ev.ScheduleRemoved(name=name, by=by)], row.version)

    def schedules(self) -> list[tuple[ScheduleRow, ev.ScheduleAdded]]:
        """Every schedule with the event that added it (its task's fields)."""
        with self.store.snapshot() as tx:
            rows = all_schedules(connection_of(tx))
        return [(row, self._added(row)) for row in rows]

    def fire_schedules(self) -> tuple[list[TaskSpec], int | None]:
        """Submit the task of each schedule's latest slot, if not submitted yet. Returns the
        tasks this call submitted and when the next slot of any schedule comes (µs)."""
        now = self.clock()
        due: list[tuple[ScheduleRow, str]] = []
        coming: int | None = None
        with self.store.snapshot() as tx:  # a read: the common case writes nothing
            conn = connection_of(tx)
            for row in all_schedules(conn):
                after = next_slot(row.cron, row.timezone, now)
                slot = last_slot(row.cron, row.timezone, now)
                if after is None or slot is None:  # names no date: it never fires
                    continue
                coming = after if coming is None else min(coming, after)
                task_id = slot_task_id(row.name, slot)
                if slot >= row.added_at and QUEUE.load_by_id(conn, task_id) is None:
                    due.append((row, task_id))
        specs = [_spec(self._added(row), task_id) for row, task_id in due]
        new = set(self.submit_many(specs)) if specs else set()
        return [spec for spec in specs if spec.task_id in new], coming

    def _added(self, row: ScheduleRow) -> ev.ScheduleAdded:
        for recorded in self.store.read_stream(schedule_stream(row.name), row.version):
            event = ev.decode_event(recorded)
            if isinstance(event, ev.ScheduleAdded):
                return event
        raise NotFound(f"schedule {row.name!r} has no ScheduleAdded at version {row.version}")


def _spec(added: ev.ScheduleAdded, task_id: str) -> TaskSpec:
    return TaskSpec(
        task_id=task_id, title=added.title, priority=added.priority, body=added.body,
        shard=added.shard, model=added.model, type=added.type, max_retries=added.max_retries,
        max_budget_usd=added.max_budget_usd, command=added.command, agent=added.agent,
        source=f"schedule:{added.name}")
