"""Dependencies between tasks: who may wait for whom, and what follows when one ends badly.

A task submitted ``after`` others is claimable once they all completed (the queue view
counts them: ``deps_open``; the completion rings the work bell). When a dependency fails for
good, is cancelled or is blocked itself, every queued task waiting for it is blocked with
the reason (``TaskBlocked``, in the same transaction); a ``tasks retry`` of it unblocks them
(``TaskUnblocked``) once none of their dependencies is failed, cancelled or blocked. Both
spread along the chain, because each appended event is looked at again here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from eventlog import Transaction
from tri24es import events as ev
from tri24es.errors import UsageError
from tri24es.events import Event
from tri24es.machines import TaskState
from tri24es.names import RequeueReason
from tri24es.projections.queue import QUEUE
from tri24es.projections.sql import Db, ViewsConnection
from tri24es.projections.tables.queue import TaskRow
from tri24es.services.base import WORK, ServiceBase, ServiceError, TaskSpec

_ENDED_BADLY = {TaskState.FAILED.value: "failed", TaskState.CANCELLED.value: "was cancelled"}
_SPREADS: frozenset[type[Event]] = frozenset({
    ev.TaskSubmitted, ev.TaskDeadLettered, ev.TaskCancelled, ev.TaskBlocked, ev.TaskRequeued,
    ev.TaskUnblocked})


class DependencyError(ServiceError, UsageError):
    """A task's dependencies cannot be: unknown, itself, or a cycle."""


def order_by_dependencies(
    specs: Sequence[TaskSpec], known: Callable[[str], bool]
) -> tuple[list[TaskSpec], dict[str, str]]:
    """``specs`` in an order where each comes after the ones of them it waits for, and the
    problems of those that cannot be submitted (id -> why): a dependency neither ``known``
    nor among ``specs`` (or itself refused), the task itself, or a cycle among them."""
    by_id = {spec.task_id: spec for spec in specs}
    ordered: list[TaskSpec] = []
    problems: dict[str, str] = {}
    state: dict[str, str] = {}  # "visiting" / "done"

    def visit(spec: TaskSpec, path: tuple[str, ...]) -> bool:
        if state.get(spec.task_id) == "done":
            return spec.task_id not in problems
        state[spec.task_id] = "visiting"
        for dependency in spec.after:
            problem = None
            if dependency == spec.task_id:
                problem = "a task cannot wait for itself"
            elif dependency in by_id:
                if state.get(dependency) == "visiting":
                    cycle = " -> ".join((*path[path.index(dependency):], spec.task_id,
                                         dependency))
                    problem = f"dependency cycle {cycle}"
                elif not visit(by_id[dependency], (*path, spec.task_id)):
                    problem = f"dependency {dependency!r} is refused"
            elif not known(dependency):
                problem = f"unknown dependency {dependency!r}"
            if problem is not None:
                problems.setdefault(spec.task_id, problem)
        state[spec.task_id] = "done"
        if spec.task_id in problems:
            return False
        ordered.append(spec)
        return True

    for spec in specs:
        visit(spec, ())
    return ordered, problems


class DependencyRules(ServiceBase):
    """Blocks and unblocks the tasks waiting for a task as its events are appended."""

    @staticmethod
    def _completed(tx: Transaction, row: TaskRow) -> None:
        """A task completed: wake the idle workers if tasks waited for it (they may be
        claimable now; a completion rings no bell otherwise)."""
        if row.dependants:
            tx.ring([WORK])

    def _check_after(self, conn: Db, specs: Sequence[TaskSpec]) -> list[TaskSpec]:
        """``specs`` ordered so that dependencies come first; DependencyError if one cannot
        be submitted."""
        ordered, problems = order_by_dependencies(
            specs, lambda task_id: QUEUE.load_by_id(conn, task_id) is not None)
        if problems:
            task_id, problem = next(iter(problems.items()))
            raise DependencyError(f"task {task_id!r}: {problem}")
        return ordered

    _reacts_to = _SPREADS  # not claims, leases, completions: the hot path

    def _react(self, conn: ViewsConnection, tx: Transaction, event: Event) -> None:
        """Block or unblock the tasks waiting for the task of ``event``, as it says."""
        self._spread(conn, tx, event)

    def _spread(self, conn: ViewsConnection, tx: Transaction, event: Event) -> None:
        row = QUEUE.load_by_id(conn, event.task_id)  # type: ignore[attr-defined]
        if row is None:
            return
        if isinstance(event, ev.TaskSubmitted):
            bad = self._bad_dependency(conn, row)
            if bad is not None:
                self._block(conn, tx, row, *bad)
            return
        if not row.dependants or (isinstance(event, ev.TaskRequeued) and (
                event.reason is not RequeueReason.MANUAL)):
            return
        if isinstance(event, ev.TaskRequeued | ev.TaskUnblocked):
            for waiting in self._queued(conn, row.waiting_tasks):
                if waiting.blocked is not None and self._bad_dependency(conn, waiting) is None:
                    self._append_task(conn, tx, waiting, [ev.TaskUnblocked(
                        task_id=waiting.task_id, dependency=row.task_id)])
            return
        why = "is blocked" if isinstance(event, ev.TaskBlocked) else _ENDED_BADLY[row.state]
        for waiting in self._queued(conn, row.waiting_tasks):
            if waiting.blocked is None:
                self._block(conn, tx, waiting, row.task_id, why)

    def _block(self, conn: ViewsConnection, tx: Transaction, row: TaskRow, dependency: str,
               why: str) -> None:
        self._append_task(conn, tx, row, [ev.TaskBlocked(
            task_id=row.task_id, dependency=dependency,
            reason=f"dependency {dependency} {why}")])

    @staticmethod
    def _queued(conn: Db, task_ids: Iterable[str]) -> list[TaskRow]:
        rows = (QUEUE.load_by_id(conn, task_id) for task_id in task_ids)
        return [row for row in rows if row is not None and row.state == TaskState.QUEUED]

    @staticmethod
    def _bad_dependency(conn: Db, row: TaskRow) -> tuple[str, str] | None:
        """A dependency that keeps the task from ever running as things stand, and why."""
        for dependency_id in row.after:
            dependency = QUEUE.load_by_id(conn, dependency_id)
            if dependency is None:
                continue
            if dependency.state in _ENDED_BADLY:
                return dependency_id, _ENDED_BADLY[dependency.state]
            if dependency.blocked is not None and dependency.state == TaskState.QUEUED:
                return dependency_id, "is blocked"
        return None
