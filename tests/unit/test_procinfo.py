"""Process identity: /proc/<pid>/stat parsing, and real processes (Linux)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tri24es.procinfo import host_id, is_same_process, parse_stat, start_time

# Field 22 (start time) is 8800 in every line below; comm is field 2.
TAIL = "S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 8800 20 21 22"


@pytest.mark.parametrize(
    ("line", "comm"),
    [
        (f"42 (bash) {TAIL}\n", "bash"),
        (f"42 (my agent) {TAIL}", "my agent"),
        (f"42 (a) (b) {TAIL}", "a) (b"),
        (f"42 ()) S 9) {TAIL}", ")) S 9"),
        (f"42 () {TAIL}", ""),
    ],
)
def test_parse_stat_cuts_comm_at_the_last_paren(line: str, comm: str) -> None:
    fields = parse_stat(line)
    assert (fields[0], fields[1], fields[2], fields[21]) == ("42", comm, "S", "8800")


@pytest.mark.parametrize("line", ["", "42 bash S 1", "42 (bash) S 1 2 3", "garbage)"])
def test_parse_stat_refuses_what_is_not_a_stat_line(line: str) -> None:
    with pytest.raises(ValueError, match="not a /proc/<pid>/stat line"):
        parse_stat(line)


def test_start_time_of_this_process_is_stable_and_matches() -> None:
    mine = start_time(os.getpid())
    assert mine > 0
    assert start_time(os.getpid()) == mine
    assert is_same_process(os.getpid(), mine)
    assert not is_same_process(os.getpid(), mine + 1)  # same pid, another incarnation


def test_a_process_named_with_spaces_and_parens(tmp_path: Path) -> None:
    odd = tmp_path / "x) (y z"
    odd.symlink_to(sys.executable)
    child = subprocess.Popen([str(odd), "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)
    try:
        fields = parse_stat(Path(f"/proc/{child.pid}/stat").read_text())
        assert fields[1] == "x) (y z"
        assert fields[21] == str(start_time(child.pid))
        assert is_same_process(child.pid, start_time(child.pid))
    finally:
        child.communicate(b"")


def test_a_finished_process_is_not_the_same_process() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)
    started = start_time(child.pid)
    assert is_same_process(child.pid, started)
    assert child.stdin is not None
    child.stdin.close()
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped: a zombie
    assert not is_same_process(child.pid, started)
    child.wait()
    assert not is_same_process(child.pid, started)
    with pytest.raises(ProcessLookupError):
        start_time(child.pid)


@pytest.mark.parametrize("pid", [0, -1])
def test_no_such_pid(pid: int) -> None:
    with pytest.raises(ProcessLookupError):
        start_time(pid)
    assert not is_same_process(pid, 1)


def test_host_id_is_the_host_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRI24ES_HOST_ID", raising=False)
    assert host_id() == socket.gethostname()


@pytest.mark.parametrize(("value", "expected"), [
    ("host-a", "host-a"), ("  rack1.host-b \n", "rack1.host-b"), ("", None), ("  ", None),
])
def test_host_id_override(monkeypatch: pytest.MonkeyPatch, value: str,
                          expected: str | None) -> None:
    monkeypatch.setenv("TRI24ES_HOST_ID", value)
    assert host_id() == (expected or socket.gethostname())
