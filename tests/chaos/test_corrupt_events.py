"""Corrupt and unknown events in the log, met by the processes that follow it.

The event log knows nothing of pydantic: any writer with the eventlog API (an old or newer
tri24es, a script, a disk fault under it) can leave an event that does not decode here. A
follower must skip such an event and report it — one line naming its position — and go on
with the next; never crash, never stop following.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from eventlog import ANY, NewEvent, open_store
from tests.e2e.conftest import CLI, clean_env
from tri24es import events as ev
from tri24es.cli.app import app
from tri24es.services import Services, TaskSpec

NOW = datetime(2026, 11, 24, 11, 0, tzinfo=UTC)
GOOD: list[ev.Event] = [
    ev.TaskSubmitted(task_id="t1", title="Fix it", body="# Fix it\n"),
    ev.TaskClaimed(task_id="t1", worker="w1", attempt=1, lease_expires_at=NOW),
    ev.WorkerHeartbeat(worker="w1"),
    ev.SpendRecorded(amount=Decimal("0.42"), model="m", occurred_at=NOW),
    ev.KillSwitchReset(by="alice", reason="caf\u00e9 \u2603"),
]

Raw = tuple[str, bytes, bytes]  # type, data, metadata: made into a NewEvent in the test
GOOD_RAW: list[Raw] = [
    (new.type, new.data, new.metadata)
    for new in (ev.encode(e, ev.Metadata(actor="fuzz")) for e in GOOD)
]

not_json = st.binary(max_size=60).filter(lambda b: _not_json(b))
unknown_types = st.text(min_size=1, max_size=30).filter(lambda t: t not in ev.CATALOG)


def _not_json(data: bytes) -> bool:
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError:
        return True
    return False


@st.composite
def bad_events(draw: st.DrawFn) -> Raw:
    """An event that cannot decode, in one of the ways a log can hold one."""
    type_, data, metadata = draw(st.sampled_from(GOOD_RAW))
    kind = draw(st.sampled_from(["bytes", "type", "metadata", "shape", "extra", "missing"]))
    if kind == "bytes":  # not JSON at all (random bytes, invalid UTF-8, truncated JSON ...)
        return type_, draw(not_json | st.just(data[:-1])), metadata
    if kind == "type":  # a type this version does not know (a newer writer, a typo)
        return draw(unknown_types), data, metadata
    if kind == "metadata":  # a good payload with metadata that is no JSON object
        return type_, data, draw(not_json | st.sampled_from([b"[]", b"1", b'"x"', b"null"]))
    fields = orjson.loads(data)
    if kind == "shape":  # JSON, but not an object
        ints = st.lists(st.integers(-(2**63), 2**63 - 1), max_size=3)
        data = orjson.dumps(draw(ints | st.text(max_size=5)))
    elif kind == "extra":  # an unexpected field
        data = orjson.dumps({**fields, "zz" + draw(st.text(max_size=8)): 1})
    else:  # a required field missing
        required = [name for name, f in ev.CATALOG[type_].model_fields.items()
                    if f.is_required()]
        fields.pop(draw(st.sampled_from(required)))
        data = orjson.dumps(fields)
    return type_, data, metadata


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.booleans(), st.sampled_from(GOOD_RAW), bad_events()), min_size=1,
                max_size=8), st.booleans())
def test_events_skips_and_reports_every_corrupt_event(
    rows: list[tuple[bool, Raw, Raw]], as_json: bool
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "events.db")
        good_positions: list[int] = []
        bad_positions: list[int] = []
        with open_store(db) as store:
            for is_good, good, bad in rows:
                (recorded,) = store.append("s", [NewEvent(*(good if is_good else bad))], ANY)
                (good_positions if is_good else bad_positions).append(recorded.position)
        result = CliRunner().invoke(app, ["--db", db, "events", *(["--json"] * as_json)])
    assert result.exception is None, result.exception
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    if as_json:
        assert [orjson.loads(line)["position"] for line in lines] == good_positions
    else:
        assert [int(line.split()[0]) for line in lines] == good_positions
    warnings = result.stderr.splitlines()
    assert len(warnings) == len(bad_positions)
    for line, position in zip(warnings, bad_positions, strict=True):
        assert line.startswith(f"tri24es: warning: skipped event at position {position} (")


def cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], cwd=root, env=clean_env(root), capture_output=True,
                          text=True, timeout=60, check=False)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "fleet"
    root.mkdir()
    assert cli(root, "init").returncode == 0
    return root


def db_of(root: Path) -> str:
    return str(root / "state" / "tri24es.db")


@pytest.mark.chaos
def test_events_follow_reports_a_corrupt_event_between_its_neighbours(root: Path) -> None:
    store = open_store(db_of(root))
    services = Services(store, actor="test")  # its appends carry the views past bad events
    follower = None
    try:
        services.submit(TaskSpec("a", "first"))
        store.append("task-a", [NewEvent("TaskClaimed", b"\xff\x00 not json")], ANY)
        services.submit(TaskSpec("b", "second"))
        follower = subprocess.Popen(
            [*CLI, "events", "--follow", "--json"], cwd=root, env=clean_env(root),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert follower.stdout is not None
        seen = [orjson.loads(follower.stdout.readline())["position"] for _ in range(2)]
        assert seen == [1, 3]
        # While it follows: an event of a type it does not know, then a good one.
        store.append("x", [NewEvent("FromANewerVersion", b'{"a": 1}')], ANY)
        services.submit(TaskSpec("c", "third"))
        assert orjson.loads(follower.stdout.readline())["position"] == 5
        follower.send_signal(signal.SIGINT)
        out, err = follower.communicate(timeout=10)
    finally:
        store.close()
        if follower is not None and follower.poll() is None:
            follower.kill()
            follower.wait()
    assert out == ""
    assert follower.returncode == 0
    assert err.splitlines() == [
        "tri24es: warning: skipped event at position 2 (TaskClaimed): corrupt payload: "
        "payload: Invalid JSON: expected value at line 1 column 1",
        "tri24es: warning: skipped event at position 4 (FromANewerVersion): unknown event type",
    ]
    # The same without --follow, as text; and a task's history skips it the same way.
    plain = cli(root, "events")
    assert [line.split()[0] for line in plain.stdout.splitlines()] == ["1", "3", "5"]
    assert plain.stderr == err
    history = cli(root, "tasks", "show", "a", "--json")
    assert history.returncode == 0, history.stderr
    assert [h["position"] for h in orjson.loads(history.stdout)["history"]] == [1]
    assert history.stderr == err.splitlines(keepends=True)[0]


@pytest.mark.chaos
def test_the_budget_watchdog_follows_past_corrupt_events(root: Path) -> None:
    """A running daemon meets undecodable events (garbage spend, an unknown type, corrupt
    metadata) and still acts on the good spend after them."""
    store = open_store(db_of(root))
    services = Services(store, actor="test")  # opened before the corrupt events land
    env = clean_env(root) | {"BUDGET_RATE_LIMIT": "1.00", "BUDGET_DAILY_LIMIT": "1000"}
    daemon = subprocess.Popen([*CLI, "budget-watchdog"], cwd=root, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        pid_file = root / "state" / "budget-watchdog.pid"
        deadline = time.monotonic() + 20
        while not pid_file.exists():
            assert daemon.poll() is None, daemon.communicate()
            assert time.monotonic() < deadline, "the watchdog never started"
            time.sleep(0.05)
        store.append("spend", [NewEvent("SpendRecorded", b'{"amount": "1e9", "occ')], ANY)
        store.append("spend", [NewEvent("SpendRecordedV9", b'{"amount": "1000"}')], ANY)
        store.append("spend", [NewEvent("SpendRecorded", ev.encode(GOOD[3]).data, b"\xff")],
                     ANY)
        # No pause needed here: the watchdog reads the log in order, so to see the good
        # spend below it must first have passed over these.
        assert services.record_spend(ev.SpendRecorded(
            amount=Decimal("400"), occurred_at=datetime.now(UTC), source="test"))
        deadline = time.monotonic() + 20
        while not any(e.type == "KillSwitchActivated" for e in store.read_all()):
            assert daemon.poll() is None, daemon.communicate()
            assert time.monotonic() < deadline, "the kill switch never came on"
            time.sleep(0.05)
    finally:
        daemon.send_signal(signal.SIGTERM)
        _, err = daemon.communicate(timeout=20)
        store.close()
    assert daemon.returncode == 0, err
    assert "Traceback" not in err


@pytest.mark.chaos
def test_a_new_process_starts_on_a_store_holding_an_unapplied_corrupt_event(root: Path) -> None:
    with open_store(db_of(root)) as store:
        store.append("x", [NewEvent("FromANewerVersion", b"{}")], ANY)
    status = cli(root, "status")
    assert status.returncode == 0, status.stderr
    assert "position 1" in status.stderr


def test_services_opened_before_a_corrupt_event_keep_working(root: Path) -> None:
    """What does work today: a process whose views are already installed passes over it."""
    with open_store(db_of(root)) as store:
        services = Services(store)
        store.append("x", [NewEvent("FromANewerVersion", b"{}")], ANY)
        services.submit(TaskSpec("after", "submitted after the corrupt event"))
    shown = cli(root, "tasks", "list", "--json")
    assert shown.returncode == 0, shown.stderr
    assert [t["task_id"] for t in orjson.loads(shown.stdout)] == ["after"]
    assert os.path.exists(db_of(root))
