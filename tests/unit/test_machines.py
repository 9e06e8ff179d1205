"""The task and worker machines: every (state, trigger) pair, event mapping, docs, properties."""

from __future__ import annotations

import itertools
import pickle
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from transitions import Machine, MachineError

from tri24es.errors import Tri24esError
from tri24es.events import (
    LeaseRenewed,
    SpendRecorded,
    TaskCancelled,
    TaskClaimed,
    TaskCompleted,
    TaskDeadLettered,
    TaskFailed,
    TaskRejected,
    TaskRequeued,
    TaskStarted,
    TaskSubmitted,
    WorkerHeartbeat,
    WorkerLost,
    WorkerPaused,
    WorkerPauseRequested,
    WorkerResumed,
    WorkerResumeRequested,
    WorkerSignalled,
    WorkerStarted,
    WorkerStopped,
    WorkerStopRequested,
)
from tri24es.machines import IllegalTransition, StateTable, TaskState, WorkerState
from tri24es.machines.__main__ import DOC_PATH
from tri24es.machines.__main__ import main as write_doc
from tri24es.machines.base import mermaid, render_doc
from tri24es.machines.task import TASK, trigger_for
from tri24es.machines.task import advance as advance_task
from tri24es.machines.worker import WORKER, worker_trigger_for
from tri24es.machines.worker import advance as advance_worker
from tri24es.names import RequeueReason

T = TaskState
W = WorkerState
LIVE = [W.STARTING, W.IDLE, W.BUSY, W.PAUSED]

# The specification, written out independently of the tables it checks (DESIGN.md §4).
TASK_SPEC: dict[tuple[T, str], T] = {
    (T.QUEUED, "claim"): T.RUNNING,
    (T.RUNNING, "complete"): T.COMPLETED,
    (T.RUNNING, "requeue"): T.QUEUED,
    (T.RUNNING, "dead_letter"): T.FAILED,
    (T.QUEUED, "cancel"): T.CANCELLED,
    (T.RUNNING, "cancel"): T.CANCELLED,
    (T.REVIEW, "cancel"): T.CANCELLED,
    (T.FAILED, "retry"): T.QUEUED,
    (T.RUNNING, "await_review"): T.REVIEW,
    (T.REVIEW, "approve"): T.COMPLETED,
    (T.REVIEW, "reject_review"): T.QUEUED,
}
WORKER_SPEC: dict[tuple[W, str], W] = {
    (W.STARTING, "ready"): W.IDLE,
    (W.IDLE, "take_task"): W.BUSY,
    (W.BUSY, "finish_task"): W.IDLE,
    (W.IDLE, "pause"): W.PAUSED,
    (W.BUSY, "pause"): W.PAUSED,
    (W.PAUSED, "resume"): W.IDLE,
    **{(s, "stop"): W.STOPPING for s in LIVE},
    **{(s, "stopped"): W.STOPPED for s in [*LIVE, W.STOPPING]},
    **{(s, "lose"): W.LOST for s in [*LIVE, W.STOPPING]},
    **{(s, "kill"): W.KILLED for s in [*LIVE, W.STOPPING]},
    **{(s, "restart"): W.STARTING for s in [W.STOPPED, W.LOST, W.KILLED]},
}
SPECS: list[tuple[StateTable[Any], dict[Any, Any]]] = [(TASK, TASK_SPEC), (WORKER, WORKER_SPEC)]
PAIRS = [
    pytest.param(table, spec, state, trigger, id=f"{table.name}-{state}-{trigger}")
    for table, spec in SPECS
    for state, trigger in itertools.product(table.states, table.triggers)
]


def transitions_model(table: StateTable[Any], state: Any) -> Any:
    """An independent oracle: ``transitions`` itself, run on the same table."""
    return Machine(states=table.states, transitions=table.moves, initial=state,
                   auto_transitions=False, name=table.name)


@pytest.mark.parametrize(("table", "spec"), SPECS, ids=["task", "worker"])
def test_tables_declare_exactly_the_specified_triggers(table: StateTable[Any], spec: dict) -> None:
    assert set(table.triggers) == {trigger for _, trigger in spec}
    assert table.lookup == spec


@pytest.mark.parametrize(("table", "spec", "state", "trigger"), PAIRS)
def test_every_state_and_trigger(
    table: StateTable[Any], spec: dict, state: Any, trigger: str
) -> None:
    expected = spec.get((state, trigger))
    assert table.can(state, trigger) is (expected is not None)
    if expected is not None:
        assert table.fire(state, trigger) is expected
        return
    with pytest.raises(IllegalTransition) as caught:
        table.fire(state, trigger)
    error = caught.value
    assert isinstance(error, Tri24esError)
    assert (error.machine, error.state, error.trigger) == (table.name, state, trigger)
    assert f"{table.name}: cannot {trigger!r} from state {state.value!r}" in str(error)
    assert error.allowed == table.allowed(state)


@pytest.mark.parametrize(("table", "spec", "state", "trigger"), PAIRS)
def test_transitions_machine_agrees_with_the_lookup(
    table: StateTable[Any], spec: dict, state: Any, trigger: str
) -> None:
    machine = transitions_model(table, state)
    assert getattr(machine, f"may_{trigger}")() is table.can(state, trigger)
    if table.can(state, trigger):
        assert getattr(machine, trigger)() is True
        assert machine.state is table.fire(state, trigger)
    else:
        with pytest.raises(MachineError):
            getattr(machine, trigger)()
        assert machine.state is state


@pytest.mark.parametrize(
    ("state", "trigger", "message"),
    [
        (T.QUEUED, "complete", "task: cannot 'complete' from state 'queued'; "
         "allowed there: claim, cancel"),
        (T.COMPLETED, "claim", "task: cannot 'claim' from state 'completed', a terminal state"),
        (W.STOPPED, "pause", "worker: cannot 'pause' from state 'stopped'; allowed there: restart"),
        (W.IDLE, "bogus", "worker: cannot 'bogus' from state 'idle'; "
         "allowed there: take_task, pause, stop, stopped, lose, kill"),
    ],
)  # fmt: skip
def test_illegal_transition_message(state: Any, trigger: str, message: str) -> None:
    table = TASK if isinstance(state, TaskState) else WORKER
    with pytest.raises(IllegalTransition) as caught:
        table.fire(state, trigger)
    assert str(caught.value) == message
    copy = pickle.loads(pickle.dumps(caught.value))
    assert (str(copy), copy.state, copy.trigger) == (message, state, trigger)


def test_a_move_declared_twice_is_refused() -> None:
    moves: Any = [
        {"trigger": "claim", "source": T.QUEUED, "dest": T.RUNNING},
        {"trigger": "claim", "source": [T.QUEUED], "dest": T.FAILED},
    ]
    with pytest.raises(ValueError, match="'claim' from queued is declared twice"):
        StateTable("twice", TaskState, moves, initial=T.QUEUED)


# --- events -> triggers -------------------------------------------------------------------

LEASE = datetime(2025, 1, 1, tzinfo=UTC)
SUBMITTED = TaskSubmitted(task_id="t", title="t")
CLAIMED = TaskClaimed(task_id="t", worker="w", attempt=1, lease_expires_at=LEASE)
STARTED = TaskStarted(task_id="t", worker="w", attempt=1, pid=10, pgid=10)
RENEWED = LeaseRenewed(task_id="t", worker="w", attempt=1, lease_expires_at=LEASE)
COMPLETED = TaskCompleted(task_id="t", worker="w", attempt=1)
FAILED = TaskFailed(task_id="t", worker="w", attempt=1, error="boom")
DEAD = TaskDeadLettered(task_id="t", attempts=3, error="boom")
CANCELLED = TaskCancelled(task_id="t")
REJECTED = TaskRejected(task_id="t", reason="bad front matter")


def requeued(reason: RequeueReason) -> TaskRequeued:
    return TaskRequeued(task_id="t", attempt=1, reason=reason)


def signalled(signal: str, target: str = "worker") -> WorkerSignalled:
    return WorkerSignalled(worker="w", signal=signal, pid=10, target=target)


W_STARTED = WorkerStarted(worker="w", pid=10, pid_start_time=1, host="h")
BEAT = WorkerHeartbeat(worker="w")
SPENT = SpendRecorded(amount="0.5", occurred_at=LEASE)


@pytest.mark.parametrize(
    ("state", "event", "trigger"),
    [
        (T.QUEUED, CLAIMED, "claim"),
        (T.RUNNING, COMPLETED, "complete"),
        (T.RUNNING, DEAD, "dead_letter"),
        (T.QUEUED, CANCELLED, "cancel"),
        (T.RUNNING, CANCELLED, "cancel"),
        *[(T.RUNNING, requeued(reason), "requeue") for reason in RequeueReason],
        (T.FAILED, requeued(RequeueReason.MANUAL), "retry"),
        (T.FAILED, requeued(RequeueReason.LEASE_EXPIRED), "requeue"),  # illegal: see below
        (T.RUNNING, FAILED, None),
        (T.RUNNING, STARTED, None),
        (T.RUNNING, RENEWED, None),
        (T.QUEUED, SUBMITTED, None),
        (T.QUEUED, REJECTED, None),
        (T.QUEUED, SPENT, None),
    ],
)
def test_task_trigger_for(state: TaskState, event: Any, trigger: str | None) -> None:
    assert trigger_for(state, event) == trigger


@pytest.mark.parametrize(
    ("state", "event", "trigger"),
    [
        (W.STOPPED, W_STARTED, "restart"),
        (W.IDLE, W_STARTED, "restart"),  # illegal: the stale incarnation must be lost first
        (W.STARTING, BEAT, "ready"),
        (W.IDLE, BEAT, None),
        (W.BUSY, WorkerPauseRequested(worker="w"), None),
        (W.IDLE, WorkerPaused(worker="w"), "pause"),
        (W.PAUSED, WorkerResumeRequested(worker="w"), None),
        (W.PAUSED, WorkerResumed(worker="w"), "resume"),
        (W.BUSY, WorkerStopRequested(worker="w"), "stop"),
        (W.STOPPING, WorkerStopped(worker="w"), "stopped"),
        (W.IDLE, WorkerLost(worker="w"), "lose"),
        *[(W.BUSY, signalled(sig), "kill") for sig in ["SIGKILL", "KILL", "sigkill", "9"]],
        (W.BUSY, signalled("SIGKILL", target="agent"), None),
        *[(W.BUSY, signalled(sig), None) for sig in ["SIGTERM", "SIGUSR1", "SIGUSR2", "15"]],
        (W.IDLE, CLAIMED, "take_task"),
        *[(W.BUSY, end, "finish_task") for end in [COMPLETED, DEAD, CANCELLED]],
        (W.BUSY, requeued(RequeueReason.WORKER_STOPPED), "finish_task"),
        *[(s, COMPLETED, None) for s in [W.PAUSED, W.STOPPING, W.STOPPED, W.LOST, W.KILLED]],
        (W.BUSY, FAILED, None),
        (W.BUSY, STARTED, None),
        (W.BUSY, RENEWED, None),
        (W.BUSY, SPENT, None),
    ],
)
def test_worker_trigger_for(state: WorkerState, event: Any, trigger: str | None) -> None:
    assert worker_trigger_for(state, event) == trigger


@pytest.mark.parametrize(
    ("events", "final"),
    [
        ([], None),
        ([CLAIMED], None),  # no task before TaskSubmitted
        ([SUBMITTED], T.QUEUED),
        ([SUBMITTED, CLAIMED, STARTED, RENEWED, COMPLETED], T.COMPLETED),
        ([SUBMITTED, CLAIMED, FAILED, requeued(RequeueReason.RETRY), CLAIMED], T.RUNNING),
        ([SUBMITTED, CLAIMED, FAILED, DEAD], T.FAILED),
        ([SUBMITTED, CLAIMED, FAILED, DEAD, requeued(RequeueReason.MANUAL)], T.QUEUED),
        ([SUBMITTED, CLAIMED, requeued(RequeueReason.LEASE_EXPIRED), CANCELLED], T.CANCELLED),
    ],
)
def test_advance_task(events: list[Any], final: TaskState | None) -> None:
    state: TaskState | None = None
    for event in events:
        state = advance_task(state, event)
    assert state is final


@pytest.mark.parametrize(
    ("events", "final"),
    [
        ([BEAT], None),  # not registered before WorkerStarted
        ([W_STARTED], W.STARTING),
        ([W_STARTED, BEAT, CLAIMED, WorkerPaused(worker="w"), COMPLETED], W.PAUSED),
        ([W_STARTED, BEAT, CLAIMED, requeued(RequeueReason.LEASE_EXPIRED)], W.IDLE),
        ([W_STARTED, BEAT, CLAIMED, WorkerStopRequested(worker="w"), WorkerStopped(worker="w")],
         W.STOPPED),
        ([W_STARTED, WorkerStopped(worker="w"), W_STARTED, BEAT], W.IDLE),
        ([W_STARTED, BEAT, WorkerStopRequested(worker="w"), signalled("SIGKILL")], W.KILLED),
    ],
)  # fmt: skip
def test_advance_worker(events: list[Any], final: WorkerState | None) -> None:
    state: WorkerState | None = None
    for event in events:
        state = advance_worker(state, event)
    assert state is final


@pytest.mark.parametrize(
    ("advance", "state", "event", "message"),
    [
        (advance_task, T.COMPLETED, CLAIMED, "task: cannot 'claim' from state 'completed'"),
        (advance_task, T.FAILED, requeued(RequeueReason.LEASE_EXPIRED), "'requeue' from state"),
        (advance_worker, W.IDLE, W_STARTED, "worker: cannot 'restart' from state 'idle'"),
        (advance_worker, W.STARTING, CLAIMED, "worker: cannot 'take_task' from state 'starting'"),
    ],
)
def test_advance_refuses_illegal_events(advance: Any, state: Any, event: Any, message: str) -> None:
    with pytest.raises(IllegalTransition, match=message):
        advance(state, event)


# --- the diagrams in docs/machines.md ------------------------------------------------------


def test_docs_match_the_tables() -> None:
    doc = DOC_PATH.read_text(encoding="utf-8")
    assert doc == render_doc(), "docs/machines.md is stale: run `python -m tri24es.machines`"


@pytest.mark.parametrize("table", [TASK, WORKER], ids=["task", "worker"])
def test_diagram_has_every_move_of_its_table(table: StateTable[Any]) -> None:
    diagram = mermaid(table.name)
    assert diagram.startswith(f"---\ntitle: {table.name}\n---\nstateDiagram-v2\n")
    edges = {line.strip() for line in diagram.splitlines() if "-->" in line}
    expected = {
        f"{src.name} --> {dest.name}: {trigger}" for (src, trigger), dest in table.lookup.items()
    }
    assert edges == expected | {f"[*] --> {table.initial.name}"}
    assert f"```mermaid\n{diagram}\n```" in render_doc()


def test_mermaid_of_an_unknown_machine() -> None:
    with pytest.raises(ValueError, match=r"no machine named 'queue' \(known: task, worker\)"):
        mermaid("queue")


def test_main_writes_the_doc(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "docs" / "machines.md"
    assert write_doc([str(target)]) == 0
    assert target.read_text(encoding="utf-8") == render_doc()
    assert str(target) in capsys.readouterr().out


# --- properties ----------------------------------------------------------------------------


@st.composite
def walks(draw: st.DrawFn) -> tuple[StateTable[Any], Any, list[str]]:
    table, _ = draw(st.sampled_from(SPECS))
    start = draw(st.sampled_from(list(table.states)))
    triggers = draw(st.lists(st.sampled_from(table.triggers), max_size=40))
    return table, start, triggers


@given(walks())
def test_random_walks_agree_with_a_transitions_model(walk: Any) -> None:
    table, state, triggers = walk
    model = transitions_model(table, state)
    for trigger in triggers:
        try:
            state = table.fire(state, trigger)
            legal = True
        except IllegalTransition:
            legal = False
        try:
            getattr(model, trigger)()
            assert legal, f"transitions allowed {trigger!r}, the lookup did not"
        except MachineError:
            assert not legal, f"the lookup allowed {trigger!r}, transitions did not"
        assert state in table.states
        assert model.state is state
