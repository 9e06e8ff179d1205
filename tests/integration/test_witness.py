"""The witness on its own: what it signs, what it refuses, and what it finds wrong with its
own file (tests/e2e/test_tamper.py plays the attacker against it through the CLI)."""

from __future__ import annotations

import threading
from pathlib import Path

import orjson
import pytest

from eventlog import NewEvent, open_store
from eventlog.sqlite import SQLiteStore
from tri24es.witness import Checkpoint, Witness, WitnessError, check_embedded


def grow(store: SQLiteStore, n: int) -> None:
    store.append("s", [NewEvent("Happened", b"{}") for _ in range(n)])


@pytest.fixture
def store(tmp_path: Path) -> SQLiteStore:
    opened = open_store(str(tmp_path / "state" / "log.db"))
    assert isinstance(opened, SQLiteStore)
    return opened


def witness_in(tmp_path: Path) -> Witness:
    return Witness(tmp_path / "state" / "witness" / "key.pem",
                   tmp_path / "state" / "witness" / "checkpoints.jsonl", tmp_path)


def test_it_signs_each_growth_once_and_the_signature_holds(store: SQLiteStore,
                                                           tmp_path: Path) -> None:
    witness = witness_in(tmp_path)
    assert witness.sign(store) is None  # an empty log: nothing to sign
    grow(store, 3)
    first = witness.sign(store)
    assert first is not None
    assert (first.position, first.head_hash) == (3, store.read_page(2, 1)[0].hash)
    assert witness.sign(store) is None  # not grown
    grow(store, 2)
    second = witness.sign(store)
    assert second is not None
    assert second.position == 5
    findings: list[str] = []
    assert witness.read(findings) == second == witness.last()
    assert findings == []
    assert check_embedded(second.as_dict(), witness.public_key()) == second
    forged = second.as_dict() | {"position": 6}
    with pytest.raises(WitnessError, match="not signed by your witness key"):
        check_embedded(forged, witness.public_key())


def test_what_is_wrong_with_the_witness_file_is_found(store: SQLiteStore,
                                                      tmp_path: Path) -> None:
    witness = witness_in(tmp_path)
    grow(store, 2)
    witness.sign(store)
    other = Witness(tmp_path / "other.pem", tmp_path / "other.jsonl")
    grow(store, 1)
    foreign = other.sign(store)
    assert foreign is not None
    lines = witness.file_path.read_bytes()
    edited = orjson.loads(lines) | {"position": 1}  # moved back, signature kept
    witness.file_path.write_bytes(lines + orjson.dumps(foreign.as_dict()) + b"\n"
                                  + orjson.dumps(edited) + b"\nnot json\n")
    findings: list[str] = []
    latest = witness.read(findings)
    assert latest is not None
    assert latest.position == 2  # the forgery and the other key's line are passed over
    assert [f.split(", ", 1)[1] for f in findings] == [
        "line 1 from the end: not a checkpoint", "line 2 from the end: not signed by the key",
        "line 3 from the end: not signed by the key"]
    assert witness.last() == latest  # and the next checkpoint builds on the real one

    witness.file_path.unlink()
    findings = []
    assert witness.read(findings) is None
    assert findings == [f"the witness file {witness.file_path} holds no checkpoint signed by "
                        f"the key {witness.key_path}"]


def test_the_latest_checkpoint_is_found_from_the_end(store: SQLiteStore, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tri24es.witness.TAIL_BLOCK", 100)  # lines cut across blocks
    witness = witness_in(tmp_path)
    signed = []
    for _ in range(5):
        grow(store, 1)
        signed.append(witness.sign(store))
    assert witness.last() == signed[-1]
    assert witness.read([]) == signed[-1]


def test_racing_processes_share_one_key(store: SQLiteStore, tmp_path: Path) -> None:
    grow(store, 1)
    keys: list[bytes | None] = []

    def make() -> None:
        witness = witness_in(tmp_path)
        witness._private_key(create=True)
        keys.append(witness.public_key())

    threads = [threading.Thread(target=make) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(keys)) == 1
    assert None not in keys
    assert [p.name for p in (tmp_path / "state" / "witness").iterdir()] == ["key.pem"]


def test_a_checkpoint_round_trips() -> None:
    checkpoint = Checkpoint(7, b"\x01" * 32, 1_700_000_000_000_000, b"\x02" * 32, b"\x03" * 64)
    assert Checkpoint.from_dict(orjson.loads(orjson.dumps(checkpoint.as_dict()))) == checkpoint
