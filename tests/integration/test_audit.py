"""Audit export and verification on real SQLite files, tampered with behind the store's back."""

from __future__ import annotations

import csv
import io
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

import eventlog
from eventlog import EventStore, NewEvent
from eventlog.model import GENESIS_HASH, chain_hash
from tri24es import audit
from tri24es.audit import ChainBroken, Selection
from tri24es.errors import UsageError
from tri24es.timeutil import parse_point

T0 = 1_800_000_000_000_000
N = 12


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "log.db"


@pytest.fixture
def store(db: Path) -> Iterator[EventStore]:
    clock = iter(range(T0, T0 + 10**9, 1_000_000))  # one event a second
    s = eventlog.open_store(str(db), clock=lambda: next(clock))
    for i in range(1, N + 1):
        stream = f"task-{i % 3}"
        kind = "Even" if i % 2 == 0 else "Odd"
        s.append(stream, [NewEvent(kind, orjson.dumps({"n": i, "text": f"é {i}"}),
                                   b'{"actor":"test"}')])
    yield s
    s.close()


def tamper(db: Path, *statements: str) -> None:
    conn = sqlite3.connect(db)
    conn.execute("DROP TRIGGER events_are_append_only_update")
    conn.execute("DROP TRIGGER events_are_append_only_delete")
    for sql in statements:
        conn.execute(sql)
    conn.commit()
    conn.close()


def export(store: EventStore, selection: Selection | None = None) -> list[bytes]:
    selection = selection or Selection()
    out = io.BytesIO()
    audit.export_jsonl(audit.select(store, selection), out, selection)
    return out.getvalue().splitlines(keepends=True)


def problem(lines: list[bytes]) -> audit.Problem:
    with pytest.raises(ChainBroken) as info:
        audit.verify_export(lines)
    return info.value.problem


def test_an_intact_store_and_its_export_verify_with_the_same_head(store: EventStore) -> None:
    lines = export(store)
    assert len(lines) == N + 1
    summary = orjson.loads(lines[-1])["summary"]
    assert summary == {"count": N, "first_position": 1, "last_position": N,
                       "head_hash": store.read_page(N - 1, 1)[0].hash.hex(), "filtered": False}
    first = orjson.loads(lines[0])
    assert first["prev_hash"] == GENESIS_HASH.hex()
    assert first["data"] == {"n": 1, "text": "é 1"}
    assert first["recorded_at"] == "2027-01-15T08:00:00.000000Z"
    from_store = audit.verify_store(store)
    from_file = audit.verify_export(lines)
    assert from_store == from_file == audit.Verified(N, summary["head_hash"])


def test_a_row_edited_in_the_store_is_changed_at_its_position(
    store: EventStore, db: Path
) -> None:
    tamper(db, "UPDATE events SET data = CAST('{\"n\":99}' AS BLOB) WHERE position = 5")
    with pytest.raises(ChainBroken) as info:
        audit.verify_store(store)
    assert (info.value.problem.position, info.value.problem.kind) == (5, "changed")
    assert (problem(export(store)).position, problem(export(store)).kind) == (5, "changed")


def test_a_row_deleted_from_the_store_is_missing(store: EventStore, db: Path) -> None:
    tamper(db, "DELETE FROM events WHERE position = 7")
    with pytest.raises(ChainBroken) as info:
        audit.verify_store(store)
    assert (info.value.problem.position, info.value.problem.kind) == (7, "missing")
    found = problem(export(store))
    assert (found.position, found.kind) == (7, "missing")


def test_two_rows_with_swapped_data_are_changed_at_the_first(
    store: EventStore, db: Path
) -> None:
    tamper(
        db,
        "UPDATE events SET data = (SELECT data FROM events WHERE position = 4) WHERE position = 9",
        "UPDATE events SET data = CAST('{\"n\":9,\"text\":\"é 9\"}' AS BLOB) WHERE position = 4",
    )
    with pytest.raises(ChainBroken) as info:
        audit.verify_store(store)
    assert (info.value.problem.position, info.value.problem.kind) == (4, "changed")


def test_an_edited_export_row_is_changed(store: EventStore) -> None:
    lines = export(store)
    lines[2] = lines[2].replace(b'"n":3', b'"n":4')
    assert (problem(lines).position, problem(lines).kind) == (3, "changed")


def test_a_rewritten_hash_breaks_the_link_to_the_next_row(store: EventStore) -> None:
    lines = export(store)
    row = orjson.loads(lines[2])
    row["data"]["n"] = 33
    row["hash"] = chain_hash(
        bytes.fromhex(row["prev_hash"]), 3, row["stream"], row["version"], row["event_id"],
        row["type"], orjson.dumps(row["data"]), orjson.dumps(row["metadata"]), T0 + 2_000_000,
    ).hex()
    lines[2] = orjson.dumps(row) + b"\n"
    found = problem(lines)
    assert (found.position, found.kind) == (3, "changed")
    assert "prev_hash of position 4" in found.detail


def test_a_line_deleted_from_an_export_is_missing(store: EventStore) -> None:
    lines = export(store)
    del lines[5]
    found = problem(lines)
    assert (found.position, found.kind) == (6, "missing")


def test_two_swapped_export_lines_are_reordered(store: EventStore) -> None:
    lines = export(store)
    lines[4], lines[5] = lines[5], lines[4]
    found = problem(lines)
    assert (found.position, found.kind) == (5, "reordered")
    assert "after position 6" in found.detail


@pytest.mark.parametrize(("cut", "first_missing"), [("summary", 13), ("rows", 9), ("mid-line", 9)])
def test_a_truncated_export_is_truncated(store: EventStore, cut: str, first_missing: int) -> None:
    lines = export(store)
    if cut == "summary":
        lines = lines[:-1]
    elif cut == "rows":
        lines = lines[:8] + lines[-1:]
    else:
        lines = [*lines[:8], lines[8][:40]]
    found = problem(lines)
    assert (found.position, found.kind) == (first_missing, "truncated")


def test_slices_and_filtered_exports_verify(store: EventStore) -> None:
    sliced = export(store, audit.selection_for(store, 4, 9, None, None))
    assert [orjson.loads(x)["position"] for x in sliced[:-1]] == [4, 5, 6, 7, 8, 9]
    assert audit.verify_export(sliced).count == 6
    odd = export(store, Selection(types=frozenset({"Odd"}), stream="task-1"))
    positions = [orjson.loads(x)["position"] for x in odd[:-1]]
    assert positions == [1, 7]
    assert audit.verify_export(odd).count == 2
    # a gap is fine in a filtered export, an edit is not
    odd[1] = odd[1].replace(b'"n":7', b'"n":8')
    assert (problem(odd).position, problem(odd).kind) == (7, "changed")


def test_since_and_until_take_iso_times_inclusively(store: EventStore) -> None:
    # position p was recorded at T0 + (p - 1) s, i.e. 2027-01-15T08:00:0(p-1)Z
    selection = audit.selection_for(
        store, parse_point("2027-01-15T08:00:02Z"), parse_point("2027-01-15T08:00:04.5Z"),
        None, None
    )
    assert (selection.after, selection.until) == (2, 5)
    assert audit.selection_for(store, parse_point("2026-01-01"), None, None, None).after == 0
    assert audit.selection_for(
        store, None, parse_point("2026-01-01T00:00:00"), None, None).until == 0


def test_until_before_since_is_a_usage_error(store: EventStore) -> None:
    with pytest.raises(UsageError, match="before --since"):
        audit.selection_for(store, 9, 3, None, None)
    with pytest.raises(ValueError, match="'yesterday': expected a log position"):
        parse_point("yesterday")


def test_csv_has_a_header_and_one_quoted_row_per_event(store: EventStore) -> None:
    out = io.StringIO(newline="")
    summary = audit.export_csv(audit.select(store, Selection(after=10)), out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue(), newline="")))
    assert summary.count == len(rows) == 2
    assert rows[0]["position"] == "11"
    assert orjson.loads(rows[0]["data"]) == {"n": 11, "text": "é 11"}
    assert rows[1]["prev_hash"] == rows[0]["hash"]


def test_payloads_that_are_not_canonical_json_travel_as_base64(tmp_path: Path) -> None:
    with eventlog.open_store(str(tmp_path / "raw.db")) as s:
        s.append("raw", [NewEvent("Raw", b'{"spaced": 1}', b"\xff not json")])
        lines = export(s)
    row = orjson.loads(lines[0])
    assert row["base64"] == ["data", "metadata"]
    assert audit.verify_export(lines).count == 1
