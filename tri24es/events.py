"""The event catalog: every fact tri24es records, as frozen pydantic models.

Each event class has a stable ``topic`` (its stored type name) and a schema ``version``.
Payloads are JSON (orjson); money is ``Decimal``, written as a JSON string, never a float.
A payload written at an older version is upgraded on read by the registered upcasters.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Sequence
from decimal import Decimal
from operator import call as _call
from typing import Annotated, Any, ClassVar, NamedTuple

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from eventlog import EventRow, NewEvent, RecordedEvent
from tri24es import timeutil
from tri24es.names import (
    KILL_SWITCH_ACTIVATED,
    EventDecodeError,
    LimitKey,
    Priority,
    RequeueReason,
    RetryFrom,
)

timeutil.use_pydantic_utc()  # times decoded from events subtract fastest from its epoch

Money = Annotated[Decimal, Field(ge=0, allow_inf_nan=False, max_digits=20, decimal_places=10)]
"""A non-negative amount of US dollars."""


class Backoff(BaseModel):
    """How long a failed task waits before its next attempt: ``base_s`` after the first
    failure, doubling with each failure after it, at most ``cap_s``; the wait of each is
    drawn between half of that and all of it (jitter, so that tasks failing together do not
    come back together). ``base_s = 0``: retried at once."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base_s: float = Field(ge=0, allow_inf_nan=False)
    cap_s: float = Field(ge=0, allow_inf_nan=False)

    def step_us(self, failures: int) -> int:
        """The longest wait after the ``failures``-th failure in a row (1, 2, ...)."""
        step = self.base_s * 2.0 ** min(max(failures - 1, 0), 60)
        return int(min(step, max(self.cap_s, self.base_s)) * 1_000_000)


NO_BACKOFF = Backoff(base_s=0, cap_s=0)


class NoProgress(BaseModel):
    """Stop an attempt that spent ``usd`` or more while showing no progress (no new output
    line, no change in its workspace) for ``after_s`` seconds: an agent burning money in a
    loop. ``after_s = 0`` (:data:`NO_PROGRESS_OFF`): no such rule, not even the fleet's."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    usd: Decimal = Field(ge=0, allow_inf_nan=False, max_digits=20, decimal_places=10)
    after_s: float = Field(ge=0, allow_inf_nan=False)

    @property
    def off(self) -> bool:
        return self.after_s == 0


NO_PROGRESS_OFF = NoProgress(usd=Decimal(0), after_s=0)


class NoProgressEvidence(BaseModel):
    """Why an attempt failed with ``no_progress``: what it spent since its last sign of
    progress, how long ago that was, and the last line it printed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    spent_usd: Decimal = Field(ge=0, allow_inf_nan=False, max_digits=20, decimal_places=10)
    seconds: float = Field(ge=0, allow_inf_nan=False)
    last_line: str = ""


class UnknownEventType(EventDecodeError):
    """The stored type names no event in the catalog."""


class Event(BaseModel):
    """Base of every event. Subclasses are registered under their topic (the class name)."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_enum_values=False)

    topic: ClassVar[str]
    version: ClassVar[int] = 1

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        cls.topic = cls.__dict__.get("topic", cls.__name__)
        if cls.topic in CATALOG and CATALOG[cls.topic] is not cls:
            raise TypeError(f"two events share the topic {cls.topic!r}")
        CATALOG[cls.topic] = cls
        if cls.version == 1 and cls.model_config.get("extra") == "forbid":
            _CURRENT_VALIDATORS[cls.topic] = cls.__pydantic_validator__.validate_json
        else:
            _CURRENT_VALIDATORS.pop(cls.topic, None)


CATALOG: dict[str, type[Event]] = {}
# For topics still at schema version 1: bytes -> model without a Python-level detour. Only
# for models that forbid extra keys: a payload carrying a schema version ("_v") then fails
# validation and takes the upcasting path, so the hot path need not look for it.
_CURRENT_VALIDATORS: dict[str, Callable[[bytes], Event]] = {}


# --- task stream: task-<id> ------------------------------------------------------------


class TaskSubmitted(Event):
    task_id: str
    title: str
    priority: Priority = Priority.MEDIUM
    body: str = ""
    body_sha256: str | None = None
    shard: str | None = None
    model: str | None = None
    type: str | None = None
    max_retries: int = Field(default=3, ge=0)
    max_budget_usd: Money | None = None
    command: list[str] | None = None
    source: str | None = None  # the queue file it came from, if any
    # Agent workspaces and review (used by workers given a repository):
    agent: str | None = None  # a preset (claude, codex, gemini) when it has no command
    base: str | None = None  # the ref its branch starts from (default: the repository's HEAD)
    review: bool = False  # a finished attempt waits for review instead of completing
    require_changes: bool = False  # an attempt that changed nothing fails
    resume: bool = False  # a retry resumes the agent's session, where its agent can
    retry_from: RetryFrom = RetryFrom.BRANCH  # a retry's workspace: the last attempt's branch
    # Scheduling:
    not_before: AwareDatetime | None = None  # not claimed before this time (submit --at/--in)
    retry_backoff: Backoff | None = None  # this task's retry backoff (default: the fleet's)
    after: tuple[str, ...] = ()  # tasks that must complete before this one is claimed
    no_progress: NoProgress | None = None  # spend-without-progress rule (default: the fleet's)


class TaskRejected(Event):
    task_id: str
    reason: str
    source: str | None = None


class TaskClaimed(Event):
    task_id: str
    worker: str
    attempt: int = Field(ge=1)
    lease_expires_at: AwareDatetime
    # The share of today's daily limit the attempt holds while it runs (its budget, or the
    # default reservation), settled by its spend: recorded, so that replay counts it too.
    reserved_usd: Money | None = None


class TaskStarted(Event):
    task_id: str
    worker: str
    attempt: int = Field(ge=1)
    pid: int  # the attempt's keeper: it leads the session and process group of the attempt
    pgid: int
    pid_start_time: int | None = None  # the keeper's start time (clock ticks since boot)
    host: str | None = None  # where it runs: only there can what is left of it be ended
    key: str | None = None  # TRI24ES_ATTEMPT_KEY in the environment of the attempt's processes


class LeaseRenewed(Event):
    task_id: str
    worker: str
    attempt: int = Field(ge=1)
    lease_expires_at: AwareDatetime


class TaskCompleted(Event):
    task_id: str
    worker: str
    attempt: int = Field(ge=1)
    exit_code: int | None = 0


class AgentSessionStarted(Event):
    """The agent's own session id (Claude's session, Codex's thread), for a later resume."""

    task_id: str
    worker: str
    attempt: int = Field(ge=1)
    agent: str
    session_id: str


class TaskResultRecorded(Event):
    """What an attempt left in its workspace: its branch, commits and diffstat."""

    task_id: str
    worker: str
    attempt: int = Field(ge=1)
    repo: str  # the repository's path on the worker's host
    branch: str
    base: str | None = None  # the branch it started from (what an approval merges into)
    base_commit: str
    head_commit: str
    files_changed: int = 0
    insertions: int = 0
    deletions: int = 0
    committed_leftovers: bool = False  # the agent left changes uncommitted: tri24es did
    outcome: str = "completed"  # or why the attempt ended (its changes are kept all the same)


class TaskAwaitingReview(Event):
    task_id: str
    worker: str
    attempt: int = Field(ge=1)


class TaskApproved(Event):
    task_id: str
    by: str | None = None
    merged_into: str | None = None  # the base the branch was merged into, if it was
    merge_commit: str | None = None


class TaskMergeFailed(Event):
    """An approval's merge did not go through (a conflict): the task stays in review."""

    task_id: str
    by: str | None = None
    reason: str


class TaskReviewRejected(Event):
    """Sent back to the queue by its reviewer; the reason is given to the next attempt."""

    task_id: str
    attempt: int = Field(ge=0)
    by: str | None = None
    reason: str


class TaskFailed(Event):
    task_id: str
    worker: str
    attempt: int = Field(ge=1)
    error: str
    retryable: bool = True
    exit_code: int | None = None
    no_progress: NoProgressEvidence | None = None  # with error "no_progress": the evidence


class TaskRequeued(Event):
    task_id: str
    attempt: int = Field(ge=0)  # the attempt that ended; the next claim is attempt + 1
    reason: RequeueReason
    worker: str | None = None  # the worker whose attempt ended, if one held the task
    by: str | None = None
    budget_usd: Money | None = None  # a manual retry's new max_budget_usd for the whole task
    not_before: AwareDatetime | None = None  # a failed attempt's backoff: no claim before it


class TaskUpdated(Event):
    """A queued task changed by a person (``tasks update``) or by an edit of its queue file:
    each field given replaces the task's (None leaves it; an empty shard, model, type, agent
    or base, or an empty command, clears it)."""

    task_id: str
    by: str | None = None
    priority: Priority | None = None
    title: str | None = None
    shard: str | None = None
    model: str | None = None
    type: str | None = None
    max_retries: int | None = Field(default=None, ge=0)
    max_budget_usd: Money | None = None
    not_before: AwareDatetime | None = None
    # From an edited queue file: its whole new text (the agent's prompt), the sha256 of its
    # bytes (what the watcher compares a file with, after a restart too), and where it is.
    body: str | None = None
    body_sha256: str | None = None
    source: str | None = None
    # Given together or not at all: whether the task carries its own command (a worker
    # without --exec may take it) depends on both.
    command: list[str] | None = None
    agent: str | None = None
    base: str | None = None
    review: bool | None = None
    require_changes: bool | None = None
    resume: bool | None = None
    retry_from: RetryFrom | None = None
    # The task's own spend-without-progress rule (or off) and retry backoff (or none): they
    # can be changed, not removed (back to the fleet's), as a budget.
    no_progress: NoProgress | None = None
    retry_backoff: Backoff | None = None


class TaskBlocked(Event):
    """A dependency failed, was cancelled or is blocked itself: the task waits for a person
    (a ``tasks retry`` of the dependency unblocks it)."""

    task_id: str
    dependency: str
    reason: str


class TaskUnblocked(Event):
    """No dependency of the task is failed, cancelled or blocked any more."""

    task_id: str
    dependency: str  # the one whose retry unblocked it


class TaskDeadLettered(Event):
    task_id: str
    attempts: int
    error: str
    worker: str | None = None


class TaskCancelled(Event):
    task_id: str
    worker: str | None = None  # the worker that held the task, if it was running
    by: str | None = None
    reason: str | None = None


# --- worker stream: worker-<id> --------------------------------------------------------


class WorkerStarted(Event):
    worker: str
    pid: int
    # Clock ticks since boot (/proc/<pid>/stat field 22): tells a reused pid apart.
    pid_start_time: int
    host: str
    shard: str | None = None
    model: str | None = None
    type: str | None = None
    has_exec: bool = True  # False: it runs only tasks that carry their own command


class WorkerHeartbeat(Event):
    worker: str


class WorkerPauseRequested(Event):
    worker: str
    by: str | None = None
    reason: str | None = None


class WorkerPaused(Event):
    worker: str


class WorkerResumeRequested(Event):
    worker: str
    by: str | None = None
    reason: str | None = None


class WorkerResumed(Event):
    worker: str


class WorkerStopRequested(Event):
    worker: str
    by: str | None = None
    reason: str | None = None


class WorkerStopped(Event):
    worker: str
    reason: str | None = None


class WorkerSignalled(Event):
    worker: str
    signal: str  # "SIGUSR1", "SIGTERM", "SIGKILL", ...
    pid: int
    by: str | None = None
    target: str = "worker"  # "worker" or "agent" (the task's process group)


class WorkerLost(Event):
    worker: str
    last_seen: AwareDatetime | None = None
    by: str | None = None


# --- budget: the spend and killswitch streams ------------------------------------------


class SpendRecorded(Event):
    amount: Money
    model: str | None = None
    input_tokens: int | None = Field(default=None, ge=0)
    output_tokens: int | None = Field(default=None, ge=0)
    task: str | None = None
    worker: str | None = None
    source: str = "cli"  # "worker", "cli", "spend.jsonl"
    occurred_at: AwareDatetime
    flagged: str | None = None  # why the amount is an estimate (e.g. an unpriced model)


class SpendLinesSkipped(Event):
    """Lines that looked like spend reports but could not be read: counted, never dropped
    in silence (``spend`` and ``status`` show how many)."""

    source: str  # "worker" (an agent's output) or "spend.jsonl"
    count: int = Field(ge=1)
    reason: str  # why the first of them was refused
    sample: str  # the first of them, cut to 200 characters
    task: str | None = None
    worker: str | None = None


class BudgetWarningRaised(Event):
    rate: Money
    rate_warning: Money
    window_seconds: int
    daily: Money | None = None


class BudgetWatchdogStarted(Event):
    """A budget watchdog daemon started with these limits. A reset of the kill switch is
    checked against the last ones recorded: those of the watchdog that would trip it again,
    not those of the shell the reset runs in."""

    rate_limit: Money
    daily_limit: Money
    window_seconds: int
    timezone: str | None = None  # the zone of "today"; None: the watchdog machine's zone
    host: str
    pid: int


class KillSwitchActivated(Event):
    topic = KILL_SWITCH_ACTIVATED  # its class name, kept in names.py for the catalog-free read
    reason: str
    rate: Money
    daily: Money
    rate_limit: Money
    daily_limit: Money
    trace_id: str | None = None


class KillSwitchReset(Event):
    by: str | None = None
    reason: str
    #: ``--force``: the rate window starts afresh here, at the reset: spend that occurred
    #: before it no longer counts toward the rate (today's total still counts all of it).
    rate_window_start: AwareDatetime | None = None
    #: ``--allow-today``: dollars allowed over the daily limit for the rest of the day
    #: [day_start, day_end) (the budget's calendar day at the reset), added to any allowance
    #: given earlier for that day.
    allow_today: Money | None = None
    day_start: AwareDatetime | None = None
    day_end: AwareDatetime | None = None


# --- the store's own integrity: evidence of tampering and what was done about it --------


class AppendOnlyGuardRestored(Event):
    """The append-only triggers of the events table were found missing when a process opened
    the store (someone with write access dropped them) and were created again. Written by
    ``eventlog`` itself, in the transaction that restores them (see ``eventlog.guards``)."""

    missing: list[str]


class BrokenChainAccepted(Event):
    """``replay --accept-broken-chain`` rebuilt the views from a log whose hash chain does
    not verify: the first bad position and what was wrong, as ``audit verify`` said."""

    position: int
    kind: str
    detail: str
    by: str | None = None


# --- fleet-wide caps: the limits stream ---------------------------------------------------


class LimitSet(Event):
    """At most ``cap`` tasks with ``key=value`` run at once, across the fleet."""

    key: LimitKey
    value: str
    cap: int = Field(ge=0)
    by: str | None = None


class LimitRemoved(Event):
    key: LimitKey
    value: str
    by: str | None = None


class ModelPaused(Event):
    """No task for ``model`` is claimed until ``until`` (None: until resumed)."""

    model: str
    until: AwareDatetime | None = None
    by: str | None = None
    reason: str | None = None


class ModelResumed(Event):
    model: str
    by: str | None = None


# --- recurring tasks: schedule-<name> ------------------------------------------------------


class ScheduleAdded(Event):
    """A recurring task: at each time ``cron`` names (in ``timezone``), a task made from the
    fields below, whose id is ``<name>-<the slot's UTC time>``."""

    name: str
    cron: str
    timezone: str = "UTC"
    by: str | None = None
    title: str
    body: str = ""
    priority: Priority = Priority.MEDIUM
    shard: str | None = None
    model: str | None = None
    type: str | None = None
    max_retries: int = Field(default=3, ge=0)
    max_budget_usd: Money | None = None
    command: list[str] | None = None
    agent: str | None = None


class ScheduleRemoved(Event):
    name: str
    by: str | None = None


# --- metadata ---------------------------------------------------------------------------


class Metadata(BaseModel):
    """Who did it and why: stored beside every event."""

    model_config = ConfigDict(frozen=True, extra="allow")

    actor: str | None = None
    trace_id: str | None = None
    causation_id: str | None = None
    correlation_id: str | None = None
    host: str | None = None
    pid: int | None = None


# --- schema versions and upcasters -----------------------------------------------------

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
UPCASTERS: dict[tuple[str, int], Upcaster] = {}

VERSION_KEY = "_v"  # present in a payload only when its schema version is above 1
_VERSIONED_PREFIX = b'{"' + VERSION_KEY.encode() + b'":'


def upcaster(topic: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
    """Register a function that turns a ``topic`` payload of ``from_version`` into the next."""

    def register(fn: Upcaster) -> Upcaster:
        UPCASTERS[(topic, from_version)] = fn
        return fn

    return register


# --- the codec --------------------------------------------------------------------------


def _payload(event: Event) -> bytes:
    if event.version == 1:  # pydantic-core writes the JSON itself: the same bytes, 2x sooner
        return event.__pydantic_serializer__.to_json(event)
    return orjson.dumps({VERSION_KEY: event.version, **event.model_dump(mode="json")})


def encode_metadata(metadata: Metadata | None) -> bytes:
    return b"{}" if metadata is None else orjson.dumps(metadata.model_dump(exclude_none=True))


def encode(
    event: Event, metadata: Metadata | bytes | None = None, event_id: str | None = None
) -> NewEvent:
    """The event as a row to append; ``metadata`` may come pre-encoded (``encode_metadata``)."""
    meta = metadata if isinstance(metadata, bytes) else encode_metadata(metadata)
    if event_id is None:
        return NewEvent(event.topic, _payload(event), meta)
    return NewEvent(event.topic, _payload(event), meta, event_id)


class Envelope(NamedTuple):
    """A decoded event with its place in the log."""

    position: int
    stream: str
    version: int
    event_id: str
    event: Event
    recorded_at: int  # microseconds since the Unix epoch, UTC
    raw_metadata: bytes

    @property
    def metadata(self) -> Metadata:
        return Metadata.model_validate_json(self.raw_metadata)


def decode_event(recorded: RecordedEvent) -> Event:
    """The event model of a stored row, upcast to the current schema version."""
    if not isinstance(recorded.data, bytes):  # a row rewritten behind the store's back
        raise EventDecodeError(recorded.position, recorded.type, "corrupt payload: not bytes")
    return _decode_payload(recorded.position, recorded.type, recorded.data)


def _decode_payload(position: int, type_: str, data: bytes) -> Event:
    validate = _CURRENT_VALIDATORS.get(type_)
    try:
        if validate is not None and not data.startswith(_VERSIONED_PREFIX):
            return validate(data)  # the hot path: a payload at schema version 1
        cls = CATALOG.get(type_)
        if cls is None:
            raise UnknownEventType(position, type_, "unknown event type")
        return cls.model_validate(_upcast(cls, orjson.loads(data)))
    except ValidationError as e:
        raise EventDecodeError(position, type_, _describe(e)) from e
    except ValueError as e:  # orjson.JSONDecodeError is a ValueError
        raise EventDecodeError(position, type_, str(e)) from e


def _describe(e: ValidationError) -> str:
    err = e.errors()[0]
    where = ".".join(str(part) for part in err["loc"]) or "payload"
    more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
    return f"corrupt payload: {where}: {err['msg']}{more}"


def _upcast(cls: type[Event], fields: Any) -> dict[str, Any]:
    if not isinstance(fields, dict):
        raise ValueError("corrupt payload: not a JSON object")
    stored = fields.pop(VERSION_KEY, 1)
    if not isinstance(stored, int) or stored < 1:
        raise ValueError(f"corrupt payload: bad schema version {stored!r}")
    if stored > cls.version:
        raise ValueError(
            f"written at schema version {stored}, newer than this program's {cls.version}"
        )
    upgraded: dict[str, Any] = fields
    for version in range(stored, cls.version):
        step = UPCASTERS.get((cls.topic, version))
        if step is None:
            raise ValueError(f"no upcaster from version {version} to {version + 1}")
        upgraded = step(upgraded)
    return upgraded


def decode(
    recorded: RecordedEvent,
    _validator: Callable[[str], Callable[[bytes], Event] | None] = _CURRENT_VALIDATORS.get,
    _new: Callable[[type[Envelope], tuple[Any, ...]], Envelope] = tuple.__new__,
) -> Envelope:
    """The stored row as an :class:`Envelope` holding its event model.

    The hot path of every reader (replay folds a million of these): one pydantic-core call
    for a payload at schema version 1, the rest bound to locals. Anything unusual (an unknown
    type, a payload with a schema version, a corrupt one) goes through ``decode_event``,
    which upcasts or raises the typed error naming the position.
    """
    position, stream, version, event_id, type_, data, metadata, recorded_at, _ = recorded
    validate = _validator(type_)
    if validate is None:
        event = decode_event(recorded)
    else:
        try:
            event = validate(data)
        except (ValidationError, ValueError):
            event = decode_event(recorded)  # upcasts a versioned payload, or raises
    return _new(Envelope, (position, stream, version, event_id, event, recorded_at, metadata))


def decode_all(records: Iterable[RecordedEvent]) -> Iterator[Envelope]:
    """``decode`` each record, lazily: for followers and any iterable. (``decode_page`` is
    quicker for a page at hand.)"""
    return map(decode, records)


_new_envelope = functools.partial(tuple.__new__, Envelope)


def decode_page(records: Sequence[EventRow]) -> list[Envelope]:
    """``decode`` for a whole page at once, as replay reads it: the per-event steps run in C
    loops (zip, map) around pydantic-core instead of a Python function per event.

    A page holding anything that path cannot take (an unknown type, a payload with a schema
    version, a corrupt one) is decoded again event by event, which upcasts, or raises the
    typed error naming the position. Rows are RecordedEvents, or any tuples of their first
    eight fields (``EventStore.read_payload_pages``).
    """
    if not records:
        return []
    columns = list(zip(*records, strict=True))
    positions, streams, versions, event_ids, types, datas, metadatas, times = columns[:8]
    try:
        events = map(_call, map(_CURRENT_VALIDATORS.__getitem__, types), datas)
        return list(map(_new_envelope, zip(
            positions, streams, versions, event_ids, events, times, metadatas, strict=True
        )))
    except (KeyError, ValidationError, ValueError):
        return [
            _new_envelope((r[0], r[1], r[2], r[3], _decode_payload(r[0], r[4], r[5]), r[7], r[6]))
            for r in records
        ]
