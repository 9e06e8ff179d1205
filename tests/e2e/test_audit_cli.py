"""``tri24es audit export|verify`` as a user runs them, and the export's memory on 1M events."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import threading
from pathlib import Path

import orjson
import pytest

from tests.e2e.conftest import CLI, Run, clean_env


def submit(run: Run, n: int) -> None:
    assert run("init").returncode == 0
    for i in range(n):
        assert run("submit", f"task {i}", "--id", f"t{i}").returncode == 0


def test_export_to_a_file_verifies_and_tampering_exits_1(run: Run, project: Path) -> None:
    submit(run, 4)
    done = run("audit", "export", "-o", "audit.jsonl")
    assert done.returncode == 0, done.stderr
    assert "exported 4 events" in done.stderr
    ok = run("audit", "verify", "audit.jsonl")
    assert ok.returncode == 0
    head = orjson.loads((project / "audit.jsonl").read_bytes().splitlines()[-1])["summary"]
    verified, anchored = ok.stdout.splitlines()
    assert verified == f"verified 4 events, head {head['head_hash']}"
    assert anchored == "checkpoint: position 4 signed by your witness key: in the file, matching"
    store = run("audit", "verify")
    assert store.stdout.splitlines()[0] == verified  # the store agrees with its export

    lines = (project / "audit.jsonl").read_bytes().splitlines(keepends=True)
    (project / "cut.jsonl").write_bytes(b"".join(lines[:3]))  # the checkpoint, 2 rows
    bad = run("audit", "verify", "cut.jsonl")
    assert bad.returncode == 1
    assert bad.stderr.strip() == (
        "tri24es: error: position 3: truncated (no summary line after position 2)"
    )

    db = project / "state" / "tri24es.db"
    conn = sqlite3.connect(db)
    conn.execute("DROP TRIGGER events_are_append_only_update")
    conn.execute("UPDATE events SET type = 'TaskCancelled' WHERE position = 2")
    conn.commit()
    conn.close()
    broken = run("audit", "verify")
    assert broken.returncode == 1
    assert "position 2: changed" in broken.stderr


def test_filters_and_csv_on_stdout(run: Run) -> None:
    submit(run, 3)
    out = run("audit", "export", "--stream", "task-t1", "--type", "TaskSubmitted")
    checkpoint, *rows = [orjson.loads(line) for line in out.stdout.splitlines()]
    assert checkpoint["checkpoint"]["position"] == 3  # the witness signed the head first
    assert [r.get("stream") for r in rows[:-1]] == ["task-t1"]
    assert rows[-1]["summary"]["filtered"] is True
    csv_out = run("audit", "export", "--format", "csv", "--until", "2")
    assert csv_out.stdout.splitlines()[0].startswith("position,stream,version,type,event_id")
    assert len(csv_out.stdout.splitlines()) == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["audit", "export", "--format", "xml"], "bad --format 'xml'"),
        (["audit", "export", "--since", "soon"], "bad --since 'soon'"),
        (["audit", "verify", "missing.jsonl"], "cannot read missing.jsonl"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(run: Run, args: list[str], message: str) -> None:
    submit(run, 1)
    result = run(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def _vm_hwm_kb(pid: int) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return None


@pytest.mark.xdist_group("million")  # one test process reads the million-event store
@pytest.mark.slow
@pytest.mark.timeout(900)  # the first run builds the store: minutes on a loaded machine
def test_exporting_a_million_events_stays_under_150_mb(
    tmp_path: Path, million_event_store: Path
) -> None:
    db = million_event_store
    out = tmp_path / "big.jsonl"
    child = subprocess.Popen(
        [*CLI, "--db", str(db), "audit", "export", "-o", str(out)],
        env=clean_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    peak_seen = [0]
    stop = threading.Event()

    def watch() -> None:  # VmHWM is the peak so far; read it until the child exits
        while not stop.wait(0.1):
            kb = _vm_hwm_kb(child.pid)
            if kb is not None:
                peak_seen[0] = max(peak_seen[0], kb)

    watcher = threading.Thread(target=watch)
    watcher.start()
    _, status, _ = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    stop.set()
    watcher.join()
    assert child.stderr is not None
    stderr = child.stderr.read().decode()
    child.stderr.close()
    assert child.returncode == 0, stderr
    assert "exported 1000000 events" in stderr
    # VmHWM, not wait4's ru_maxrss: at exec Linux records the high-water mark of the memory
    # the child was forked with, i.e. of this test process, which holds the million-event
    # fixture. VmHWM is the peak of the exported process's own memory, read until it exits.
    assert 0 < peak_seen[0] < 150 * 1024, f"VmHWM {peak_seen[0]} kB"
    with out.open("rb") as lines:
        summary = orjson.loads(lines.readlines()[-1])["summary"]
    assert summary["count"] == 1_000_000
