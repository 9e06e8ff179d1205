"""Playing the attacker who can write the database (issue 15): every attack here must be
seen by ``audit verify`` or refused, with the real CLI on real SQLite files and PostgreSQL.

What the attacker does is plain SQL on the store, as anyone holding its file or a
database login could: drop the append-only triggers, delete the tail of the log, rewrite
events and re-hash the whole chain, turn the kill switch's view off."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest

from eventlog import open_store
from eventlog.model import GENESIS_HASH, chain_hash
from eventlog.sqlite import GUARDS
from tests.conftest import wait_until, with_schema
from tests.e2e.conftest import CLI, Run, clean_env
from tri24es import events as ev
from tri24es.services import Services

Sql = Callable[[str], list[tuple[Any, ...]]]


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, project: Path) -> str:
    if request.param == "postgresql":
        schema: Callable[[], str] = request.getfixturevalue("new_schema")
        return with_schema(request.getfixturevalue("pg_dsn"), schema())
    return str(project / "state" / "tri24es.db")


@pytest.fixture
def cli(run: Run, store_url: str) -> Run:
    """The CLI on this test's store."""

    def on_store(*args: str, env: dict[str, str] | None = None) -> Any:
        return run(*args, env={"TRI24ES_DB": store_url, **(env or {})})

    assert on_store("init").returncode == 0
    return on_store


@contextmanager
def attacker(url: str) -> Iterator[Sql]:
    """A plain connection to the store, outside tri24es, committing each statement."""
    if url.startswith("postgresql"):
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:

            def execute(sql: str) -> list[tuple[Any, ...]]:
                cursor = conn.execute(sql.encode())
                return cursor.fetchall() if cursor.description else []

            yield execute
        return
    with closing(sqlite3.connect(url, isolation_level=None)) as conn:
        yield lambda sql: conn.execute(sql).fetchall()


def drop_guards(sql: Sql, url: str) -> None:
    if url.startswith("postgresql"):
        sql("DROP TRIGGER events_are_append_only ON events")
    else:
        sql("DROP TRIGGER events_are_append_only_delete")


def ok(result: Any) -> Any:
    assert result.returncode == 0, result.stderr
    return result


def events_of(cli: Run) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in ok(cli("events", "--json")).stdout.splitlines()]


def test_drop_the_guard_and_delete_the_tail(cli: Run, store_url: str) -> None:
    for n in range(3):
        ok(cli("submit", f"task {n}", "--id", f"t{n}"))
    ok(cli("spend", "record", "--usd", "40"))
    ok(cli("spend", "record", "--usd", "40"))
    ok(cli("audit", "checkpoint"))  # the watchdog would have signed this by now
    with attacker(store_url) as sql:
        drop_guards(sql, store_url)
        sql("DELETE FROM events WHERE position >= 4")  # every SpendRecorded, gone

    first = cli("replay")  # the next command to open the store says so, once
    assert first.returncode == 0, first.stderr
    warning = [line for line in first.stderr.splitlines() if "append-only guard" in line]
    assert len(warning) == 1, first.stderr
    assert "recorded at position 4" in warning[0]
    assert "append-only guard" not in ok(cli("status")).stderr  # restored: said once
    restored = [e for e in events_of(cli) if e["type"] == "AppendOnlyGuardRestored"]
    assert [(e["position"], e["stream"]) for e in restored] == [(4, "eventlog")]
    with open_store(store_url) as store:  # the catalog knows what eventlog wrote
        restored_event = ev.decode_event(store.read_page(3, 1)[0])
    assert isinstance(restored_event, ev.AppendOnlyGuardRestored)
    assert restored_event.missing
    with attacker(store_url) as sql, pytest.raises(Exception, match="append-only"):
        sql("DELETE FROM events WHERE position = 4")  # the guard is back

    verify = cli("audit", "verify")
    assert verify.returncode == 1
    assert "found: position 4: the append-only guard was found missing" in verify.stdout
    assert "found: position 5: truncated (the witness saw it" in verify.stdout
    assert verify.stderr.startswith("tri24es: error: ")
    assert len(verify.stderr.splitlines()) == 1
    # The witness will not sign over the cut either.
    refused = cli("audit", "checkpoint")
    assert refused.returncode == 1
    assert "before position 5 which the witness saw: not signing" in refused.stderr


def test_a_rehashed_chain_is_caught_by_the_witness(run: Run, project: Path) -> None:
    ok(run("init"))
    for n in range(4):
        ok(run("submit", f"task {n}", "--id", f"t{n}"))
    ok(run("audit", "checkpoint"))
    ok(run("audit", "export", "-o", "before.jsonl"))
    db = project / "state" / "tri24es.db"
    with closing(sqlite3.connect(db, isolation_level=None)) as conn:
        # Rewrite a task, cut the last one, re-hash the whole chain with the chain function,
        # and put the guards back exactly as they were: the chain alone cannot tell.
        for name in GUARDS:
            conn.execute(f"DROP TRIGGER {name}")
        conn.execute("DELETE FROM events WHERE position = 4")
        conn.execute("UPDATE events SET data = CAST(replace(CAST(data AS TEXT), 'task 1', "
                     "'task one') AS BLOB) WHERE position = 2")
        prev = GENESIS_HASH
        for row in conn.execute("SELECT position, stream, version, event_id, type, data, "
                                "metadata, recorded_at FROM events ORDER BY position").fetchall():
            prev = chain_hash(prev, *row)
            conn.execute("UPDATE events SET hash = ? WHERE position = ?", (prev, row[0]))
        for sql in GUARDS.values():
            conn.execute(sql)
    assert "append-only guard" not in ok(run("replay")).stderr  # nothing missing on open

    verify = run("audit", "verify")
    assert verify.returncode == 1, verify.stdout
    assert verify.stdout.startswith("verified 3 events")  # the chain itself verifies
    assert "found: position 4: truncated (the witness saw it" in verify.stdout
    # An export made now carries no checkpoint of the rewritten log; the one made before
    # still verifies, and its checkpoint names the head the witness saw.
    later = run("audit", "export", "-o", "after.jsonl")
    assert "exporting without a checkpoint" in later.stderr
    assert "checkpoint: none" in ok(run("audit", "verify", "after.jsonl")).stdout
    before = ok(run("audit", "verify", "before.jsonl")).stdout
    assert "checkpoint: position 4 signed by your witness key: in the file, matching" in before


def test_a_rewrite_below_the_checkpoint_is_named(run: Run, project: Path) -> None:
    ok(run("init"))
    for n in range(3):
        ok(run("submit", f"task {n}", "--id", f"t{n}"))
    ok(run("audit", "checkpoint"))
    db = project / "state" / "tri24es.db"
    with closing(sqlite3.connect(db, isolation_level=None)) as conn:
        conn.execute("DROP TRIGGER events_are_append_only_update")
        conn.execute("UPDATE events SET metadata = CAST('{\"actor\":\"nobody\"}' AS BLOB)")
        prev = GENESIS_HASH
        for row in conn.execute("SELECT position, stream, version, event_id, type, data, "
                                "metadata, recorded_at FROM events ORDER BY position").fetchall():
            prev = chain_hash(prev, *row)
            conn.execute("UPDATE events SET hash = ? WHERE position = ?", (prev, row[0]))
        conn.execute(GUARDS["events_are_append_only_update"])
    verify = run("audit", "verify")
    assert verify.returncode == 1
    assert "found: position 3: rewritten (its hash is not the one the witness signed" in (
        verify.stdout)


def test_a_kill_switch_view_turned_off_with_sql_stays_on(cli: Run, store_url: str) -> None:
    limits = {"BUDGET_DAILY_LIMIT": "10"}
    ok(cli("submit", "work", "--id", "work"))
    ok(cli("spend", "record", "--usd", "12"))
    tripped = cli("budget-watchdog", "--once", env=limits)
    assert tripped.returncode == 1
    assert "kill switch activated" in tripped.stdout
    with attacker(store_url) as sql:
        sql("UPDATE killswitch SET active = 0")
        sql("DELETE FROM spend")
        sql("DELETE FROM spend_buckets")

    # The watchdog and the claim path read the log's last kill-switch event, not the view.
    again = cli("budget-watchdog", "--once", env=limits)
    assert again.returncode == 1
    assert "Kill switch is ACTIVE: the log says the kill switch is on" in again.stdout
    with open_store(store_url) as store:
        services = Services(store, actor="test")
        services.start_worker("w1", pid=os.getpid(), pid_start_time=1, host="h")
        assert services.claim("w1") is None
        assert services.task("work").state == "queued"

    verify = cli("audit", "verify")
    assert verify.returncode == 1
    assert "found: the kill switch and spend views differ from the log" in verify.stdout
    # What replay --verify says now no longer invites a silent rebuild over evidence...
    differ = cli("replay", "--verify")
    assert "changed outside tri24es (the log's hash chain verifies)" in differ.stderr
    # ...and the way back is the reset, recorded like any other.
    ok(cli("budget-watchdog", "--reset", "--reason", "investigated"))
    ok(cli("replay"))
    assert "Kill Switch: INACTIVE" in ok(cli("budget-watchdog", "--status")).stdout


def test_replay_refuses_a_broken_chain_unless_told(run: Run, project: Path) -> None:
    ok(run("init"))
    for n in range(3):
        ok(run("submit", f"task {n}", "--id", f"t{n}"))
    db = project / "state" / "tri24es.db"
    with closing(sqlite3.connect(db, isolation_level=None)) as conn:
        conn.execute("DROP TRIGGER events_are_append_only_update")
        conn.execute("UPDATE events SET data = CAST(replace(CAST(data AS TEXT), 'task 2', "
                     "'task two') AS BLOB) WHERE position = 3")
        conn.execute("UPDATE queue SET title = 'views changed too' WHERE task_id = 't0'")

    for args in (["replay"], ["replay", "--verify"]):
        refused = run(*args)
        assert refused.returncode == 1
        error = refused.stderr.splitlines()[-1]
        assert error.startswith("tri24es: error: the log's hash chain is broken at "
                                "position 3: changed"), refused.stderr
        assert "--accept-broken-chain" in error
    with closing(sqlite3.connect(db)) as conn:  # nothing was rebuilt
        assert conn.execute("SELECT title FROM queue WHERE task_id = 't0'").fetchone() == (
            "views changed too",)

    accepted = run("replay", "--accept-broken-chain")
    assert accepted.returncode == 0, accepted.stderr
    assert "rebuilding from a broken chain (position 3: changed" in accepted.stderr
    recorded = [orjson.loads(line) for line in run("events", "--json").stdout.splitlines()]
    assert recorded[-1]["type"] == "BrokenChainAccepted"
    assert recorded[-1]["data"]["position"] == 3
    assert recorded[-1]["data"]["by"].startswith("cli:")
    verify = run("audit", "verify")
    assert verify.returncode == 1
    assert "found: position 3: changed" in verify.stdout
    assert "the views were rebuilt from a broken chain" in verify.stdout
    usage = run("replay", "--verify", "--accept-broken-chain")
    assert usage.returncode == 2


def test_the_watchdog_keeps_the_witness(run: Run, project: Path) -> None:
    ok(run("init"))
    ok(run("submit", "first", "--id", "first"))
    witness = project / "state" / "witness" / "checkpoints.jsonl"

    def signed() -> list[int]:
        text = witness.read_text() if witness.exists() else ""
        return [orjson.loads(line)["position"] for line in text.splitlines()]

    env = clean_env(project) | {"TRI24ES_WITNESS_INTERVAL": "0.2"}
    log = project / "watchdog.log"
    with log.open("w") as out:
        daemon = subprocess.Popen([*CLI, "budget-watchdog"], cwd=project, env=env,
                                  stdout=out, stderr=out)
    def head() -> int:
        with closing(sqlite3.connect(project / "state" / "tri24es.db")) as conn:
            return int(conn.execute("SELECT max(position) FROM events").fetchone()[0])

    try:
        # The watchdog records its start (BudgetWatchdogStarted), then signs the head.
        wait_until(lambda: signed()[-1:] == [head()] and head() > 1, "the first checkpoint",
                   timeout=60)
        ok(run("submit", "second", "--id", "second"))
        second = head()
        wait_until(lambda: signed()[-1:] == [second], "a checkpoint of the new head",
                   timeout=60)
        with closing(sqlite3.connect(project / "state" / "tri24es.db")) as conn:
            conn.execute("DROP TRIGGER events_are_append_only_delete")
            conn.execute("DELETE FROM events WHERE position = ?", (second,))
            conn.commit()
        # The running watchdog looks at the guards with each checkpoint, not only at start.
        wait_until(lambda: "append-only guard" in log.read_text(), "the guard noticed",
                   timeout=60)
        ok(run("submit", "third", "--id", "third"))  # another event at position 3
        ok(run("submit", "fourth", "--id", "fourth"))
        wait_until(lambda: "witness:" in log.read_text(), "the refusal", timeout=60)
        status = ok(run("status", "--json")).stdout
        # what was there before the cut, the restoration, third, fourth
        assert orjson.loads(status)["head"] == second + 2
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
    assert daemon.returncode == 0, log.read_text()
    refusals = [line for line in log.read_text().splitlines() if "witness:" in line]
    restored = [line for line in log.read_text().splitlines() if "append-only guard" in line]
    assert len(restored) == 1
    assert f"recorded at position {second}" in restored[0]
    # Cut short, or rewritten at the cut, as the daemon happened to look: said once each, however
    # many times it looked, and never signed.
    assert refusals
    assert all("not signing" in line for line in refusals)
    assert len(refusals) == len(set(refusals)) <= 2
    assert os.stat(witness).st_mode & 0o777 == 0o600
    assert os.stat(witness.parent).st_mode & 0o777 == 0o700
    assert os.stat(project / "state" / "witness" / "key.pem").st_mode & 0o777 == 0o600
    assert signed()[-1] == second  # nothing signed after the cut
