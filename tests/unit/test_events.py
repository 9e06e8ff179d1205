"""The event catalog: round trips, money, upcasting and typed decode errors."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, ClassVar

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from eventlog import RecordedEvent
from tri24es import events as ev
from tri24es.names import EventDecodeError, LimitKey, Priority, RequeueReason

NOW = datetime(2026, 11, 24, 11, 0, tzinfo=UTC)

SAMPLES: list[ev.Event] = [
    ev.TaskSubmitted(task_id="t1", title="Fix it", priority=Priority.HIGH, body="# Fix it\n",
                     shard="a", model="claude", type="bug", max_budget_usd=Decimal("2.50")),
    ev.TaskRejected(task_id="t2", reason="empty file", source="tasks/queue/t2.md"),
    ev.TaskClaimed(task_id="t1", worker="w1", attempt=1, lease_expires_at=NOW),
    ev.TaskStarted(task_id="t1", worker="w1", attempt=1, pid=10, pgid=10),
    ev.LeaseRenewed(task_id="t1", worker="w1", attempt=1, lease_expires_at=NOW),
    ev.TaskCompleted(task_id="t1", worker="w1", attempt=1),
    ev.TaskFailed(task_id="t1", worker="w1", attempt=1, error="exit 3", exit_code=3),
    ev.TaskRequeued(task_id="t1", attempt=1, reason=RequeueReason.LEASE_EXPIRED),
    ev.TaskDeadLettered(task_id="t1", attempts=3, error="exit 3"),
    ev.TaskBlocked(task_id="t2", dependency="t1", reason="dependency t1 failed"),
    ev.TaskUnblocked(task_id="t2", dependency="t1"),
    ev.TaskUpdated(task_id="t2", by="alice", priority=Priority.HIGH, shard=""),
    ev.LimitSet(key=LimitKey.MODEL, value="claude", cap=3, by="alice"),
    ev.LimitRemoved(key=LimitKey.SHARD, value="gpu"),
    ev.ScheduleAdded(name="nightly", cron="0 3 * * *", title="Bump", model="claude"),
    ev.ScheduleRemoved(name="nightly", by="alice"),
    ev.ModelPaused(model="claude", until=datetime(2026, 12, 1, 15, tzinfo=UTC), reason="limit"),
    ev.ModelResumed(model="claude", by="alice"),
    ev.TaskCancelled(task_id="t1", by="alice"),
    ev.WorkerStarted(worker="w1", pid=10, pid_start_time=1234, host="h1"),
    ev.WorkerHeartbeat(worker="w1"),
    ev.WorkerPauseRequested(worker="w1", by="budget-watchdog"),
    ev.WorkerPaused(worker="w1"),
    ev.WorkerResumeRequested(worker="w1"),
    ev.WorkerResumed(worker="w1"),
    ev.WorkerStopRequested(worker="w1"),
    ev.WorkerStopped(worker="w1"),
    ev.WorkerSignalled(worker="w1", signal="SIGTERM", pid=10),
    ev.WorkerLost(worker="w1", last_seen=NOW),
    ev.SpendRecorded(amount=Decimal("0.42"), model="gpt-5", occurred_at=NOW),
    ev.BudgetWarningRaised(rate=Decimal("0.6"), rate_warning=Decimal("0.5"), window_seconds=300),
    ev.SpendLinesSkipped(source="worker", count=2, reason="not a number", sample="{}"),
    ev.BudgetWatchdogStarted(rate_limit=Decimal("1"), daily_limit=Decimal("75"),
                             window_seconds=300, timezone="UTC", host="h", pid=7),
    ev.KillSwitchActivated(reason="Rate limit exceeded: $1.20/min >= $1.00/min",
                           rate=Decimal("1.2"), daily=Decimal("3"), rate_limit=Decimal("1"),
                           daily_limit=Decimal("75")),
    ev.KillSwitchReset(by="alice", reason="false alarm"),
    ev.AgentSessionStarted(task_id="t1", worker="w1", attempt=1, agent="claude",
                           session_id="9d2b7c41"),
    ev.TaskResultRecorded(task_id="t1", worker="w1", attempt=1, repo="/srv/app",
                          branch="tri24es/t1", base="main", base_commit="a" * 40,
                          head_commit="b" * 40, files_changed=2, insertions=10, deletions=3,
                          committed_leftovers=True),
    ev.TaskAwaitingReview(task_id="t1", worker="w1", attempt=1),
    ev.TaskApproved(task_id="t1", by="alice", merged_into="main", merge_commit="c" * 40),
    ev.TaskMergeFailed(task_id="t1", by="alice", reason="merging conflicts in a.py"),
    ev.TaskReviewRejected(task_id="t1", attempt=1, by="alice", reason="keep the old API"),
    ev.AppendOnlyGuardRestored(missing=["events_are_append_only_delete"]),
    ev.BrokenChainAccepted(position=3, kind="changed", detail="hash does not match",
                           by="cli:alice"),
]


def stored(new: Any, position: int = 7) -> RecordedEvent:
    return RecordedEvent(position, "s", 1, new.event_id, new.type, new.data, new.metadata, 0, b"")


def test_every_catalog_event_has_a_sample() -> None:
    assert {type(e).topic for e in SAMPLES} == set(ev.CATALOG) - {"ExampleRenamed"}


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: type(e).topic)
def test_round_trip(event: ev.Event) -> None:
    meta = ev.Metadata(actor="alice", trace_id="tr", host="h", pid=1, causation_id="c")
    new = ev.encode(event, meta)
    envelope = ev.decode(stored(new))
    assert envelope.event == event
    assert envelope.metadata == meta
    assert envelope.position == 7


def test_events_are_frozen() -> None:
    event = SAMPLES[0]
    with pytest.raises(ValidationError):
        event.title = "changed"  # type: ignore[misc]


def test_money_is_a_json_string_never_a_float() -> None:
    new = ev.encode(ev.SpendRecorded(amount=Decimal("0.1"), occurred_at=NOW))
    assert orjson.loads(new.data)["amount"] == "0.1"
    decoded = ev.decode_event(stored(new))
    assert isinstance(decoded, ev.SpendRecorded)
    assert decoded.amount == Decimal("0.1")


@pytest.mark.parametrize("amount", ["-1", "NaN", "Infinity", "abc"])
def test_bad_amounts_are_refused(amount: str) -> None:
    with pytest.raises(ValidationError):
        ev.SpendRecorded(amount=amount, occurred_at=NOW)  # type: ignore[arg-type]


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValidationError):
        ev.TaskClaimed(task_id="t", worker="w", attempt=1, lease_expires_at=datetime(2026, 1, 1))


def test_priority_is_stored_by_name_and_ranked() -> None:
    new = ev.encode(ev.TaskSubmitted(task_id="t", title="x", priority=Priority.CRITICAL))
    assert orjson.loads(new.data)["priority"] == "CRITICAL"
    assert [p.rank for p in Priority] == [0, 1, 2, 3]


def test_unknown_topic_is_a_typed_error_naming_the_position() -> None:
    new = ev.encode(SAMPLES[0])
    with pytest.raises(ev.UnknownEventType, match="position 42"):
        ev.decode(stored(new, 42)._replace(type="NoSuchEvent"))


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (b'{"task_id": "t"', "position 9"),
        (b"[1, 2]", "position 9"),
        (b'{"task_id": "t", "worker": "w", "attempt": 0, "lease_expires_at": "x"}', "attempt"),
        (b'{"_v": "two"}', "bad schema version"),
        (b'{"_v": 5, "task_id": "t"}', "newer than this program"),
    ],
)
def test_corrupt_payload_is_a_typed_error(payload: bytes, problem: str) -> None:
    new = ev.encode(SAMPLES[2])
    with pytest.raises(EventDecodeError, match=problem) as caught:
        ev.decode(stored(new, 9)._replace(data=payload))
    assert caught.value.position == 9
    assert caught.value.type == "TaskClaimed"


@given(st.binary(max_size=200))
def test_decoding_random_bytes_never_crashes(payload: bytes) -> None:
    new = ev.encode(SAMPLES[20])
    try:
        ev.decode(stored(new)._replace(data=payload))
    except EventDecodeError as e:
        assert e.position == 7  # noqa: PT017 - most random bytes fail; those that fail must say where


FIELD_NAMES = sorted({name for cls in ev.CATALOG.values() for name in cls.model_fields}
                     | {ev.VERSION_KEY})
json_leaves = (st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
               | st.floats(allow_nan=False) | st.text(max_size=12)
               | st.sampled_from(["2026-11-24T11:00:00Z", "0.42", "-1", "NaN", "1e999",
                                  "CRITICAL", "lease_expired", "", "2026-13-01"]))
json_values = st.recursive(
    json_leaves, lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)
payloads = st.one_of(
    st.dictionaries(st.sampled_from(FIELD_NAMES), json_values, max_size=10),
    st.builds(lambda good, extra: {**good, **extra},
              st.sampled_from([e.model_dump(mode="json") for e in SAMPLES]),
              st.dictionaries(st.sampled_from(FIELD_NAMES), json_values, max_size=3)),
    json_values,
)


@settings(max_examples=300)
@given(st.sampled_from([*sorted(ev.CATALOG), "NoSuchEvent", ""]), payloads,
       st.integers(1, 2**40))
def test_decoding_random_payloads_gives_the_event_or_a_typed_error(
    topic: str, payload: object, position: int
) -> None:
    """Payloads shaped like the catalog's (its field names, plausible and absurd values, a
    schema version key): decode gives that topic's event, or EventDecodeError naming the
    position and the type; never another exception."""
    recorded = RecordedEvent(position, "s", 1, "id", topic, orjson.dumps(payload), b"{}", 0,
                             b"")
    for decoder in (ev.decode_event, lambda r: ev.decode(r).event,
                    lambda r: ev.decode_page([r])[0].event):
        try:
            event = decoder(recorded)
        except EventDecodeError as e:
            assert (e.position, e.type) == (position, topic)  # noqa: PT017
            assert str(e).startswith(f"event at position {position} ({topic}): ")  # noqa: PT017
        else:
            assert type(event) is ev.CATALOG[topic]


class ExampleRenamed(ev.Event):
    """A test-only event at schema version 2: v1 called the field ``name``."""

    version: ClassVar[int] = 2
    title: str
    words: int


@ev.upcaster("ExampleRenamed", from_version=1)
def _rename(fields: dict[str, Any]) -> dict[str, Any]:
    name = fields.pop("name")
    return {**fields, "title": name, "words": len(name.split())}


def test_old_payloads_are_upcast_on_read() -> None:
    v1 = RecordedEvent(3, "s", 1, "id", "ExampleRenamed", b'{"name": "two words"}', b"{}", 0, b"")
    assert ev.decode_event(v1) == ExampleRenamed(title="two words", words=2)


def test_current_payloads_carry_their_version_and_round_trip() -> None:
    new = ev.encode(ExampleRenamed(title="t", words=1))
    assert new.data.startswith(b'{"_v":2,')
    assert ev.decode_event(stored(new)) == ExampleRenamed(title="t", words=1)


def test_a_missing_upcaster_is_reported() -> None:
    ev.UPCASTERS.pop(("ExampleRenamed", 1))
    try:
        v1 = RecordedEvent(3, "s", 1, "id", "ExampleRenamed", b'{"name": "x"}', b"{}", 0, b"")
        with pytest.raises(EventDecodeError, match="no upcaster from version 1 to 2"):
            ev.decode_event(v1)
    finally:
        ev.UPCASTERS[("ExampleRenamed", 1)] = _rename


def test_two_events_cannot_share_a_topic() -> None:
    with pytest.raises(TypeError, match="share the topic"):

        class TaskClaimed(ev.Event):
            pass


def test_decode_page_equals_decode_one_by_one() -> None:
    meta = ev.Metadata(actor="alice")
    page = [stored(ev.encode(e, meta), position) for position, e in enumerate(SAMPLES, 1)]
    assert ev.decode_page(page) == [ev.decode(r) for r in page]
    # Rows without the hash (EventStore.read_payload_pages) decode the same.
    assert ev.decode_page([tuple(r[:8]) for r in page]) == [ev.decode(r) for r in page]
    assert ev.decode_page([]) == []


def test_decode_page_upcasts_a_versioned_payload_among_current_ones() -> None:
    current = stored(ev.encode(SAMPLES[2]), 1)
    v1 = RecordedEvent(2, "s", 1, "id", "ExampleRenamed", b'{"name": "two words"}', b"{}", 0,
                       b"")
    decoded = ev.decode_page([current, v1])
    assert [e.event for e in decoded] == [SAMPLES[2], ExampleRenamed(title="two words", words=2)]


@pytest.mark.parametrize(
    ("data", "kind", "problem"),
    [
        (b'{"task_id": "t"', EventDecodeError, "position 5"),
        (b'{"task_id": "t", "worker": "w", "attempt": 0, "lease_expires_at": "x"}',
         EventDecodeError, "attempt"),
        (b'{"task_id": "t", "worker": "w", "attempt": 1, "lease_expires_at": "2026-11-24"}',
         EventDecodeError, "lease_expires_at"),
    ],
)
def test_a_corrupt_payload_in_a_page_is_the_typed_error_naming_its_position(
    data: bytes, kind: type[Exception], problem: str
) -> None:
    page = [stored(ev.encode(SAMPLES[2]), position) for position in range(1, 9)]
    page[4] = page[4]._replace(data=data)
    with pytest.raises(kind, match=problem) as caught:
        ev.decode_page(page)
    assert isinstance(caught.value, EventDecodeError)
    assert (caught.value.position, caught.value.type) == (5, "TaskClaimed")


def test_an_unknown_type_in_a_page_is_the_typed_error_naming_its_position() -> None:
    page = [stored(ev.encode(SAMPLES[0]), position) for position in range(1, 4)]
    page[1] = page[1]._replace(type="FromANewerVersion")
    with pytest.raises(ev.UnknownEventType, match="position 2"):
        ev.decode_page(page)


def test_decoded_times_money_and_enums_have_their_python_types() -> None:
    page = [stored(ev.encode(e), n) for n, e in enumerate(SAMPLES, 1)]
    for envelope in ev.decode_page(page):
        event = envelope.event
        for name, value in event:
            assert value == getattr(type(event).model_validate(event.model_dump()), name)
        if isinstance(event, ev.TaskClaimed):
            assert isinstance(event.lease_expires_at, datetime)
            assert event.lease_expires_at.utcoffset() is not None
        if isinstance(event, ev.SpendRecorded):
            assert isinstance(event.amount, Decimal)
        if isinstance(event, ev.TaskSubmitted):
            assert event.priority is Priority.HIGH



def test_payloads_are_the_json_of_the_model_dump_byte_for_byte() -> None:
    """pydantic-core writes the payload; it must be what orjson made of the dump before (the
    bytes are hashed into the chain and exported)."""
    from datetime import UTC, datetime, timedelta, timezone
    from decimal import Decimal

    import orjson

    from tri24es import events as ev

    when = datetime(2026, 11, 30, 12, 0, 0, 123456, tzinfo=UTC)
    samples: list[ev.Event] = [
        ev.TaskSubmitted(task_id="t-1", title="héllo ✓ \"quoted\" \\ \n\t\u2028", body="x" * 300,
                         priority=Priority.CRITICAL, max_budget_usd=Decimal("1.5000"),
                         command=["claude", "-p", "ü"]),
        ev.TaskClaimed(task_id="t", worker="w", attempt=2,
                       lease_expires_at=when.astimezone(timezone(timedelta(hours=5)))),
        ev.SpendRecorded(amount=Decimal("0.0000000001"), occurred_at=when, input_tokens=0),
        ev.SpendRecorded(amount=Decimal("12345.6789"), occurred_at=when, model=None),
        ev.KillSwitchActivated(reason="r", rate=Decimal("1E+1"), daily=Decimal("0"),
                               rate_limit=Decimal("1.00"), daily_limit=Decimal("75.00")),
    ]
    for event in samples:
        assert ev.encode(event).data == orjson.dumps(event.model_dump(mode="json")), event
