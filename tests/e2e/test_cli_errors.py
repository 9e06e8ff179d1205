"""What a new user hits first: usage errors are one line and exit 2, `-h` works, help reads
as whole sentences, and neither Ctrl-C at start-up nor a folder they cannot write prints a
traceback."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import CLI, Run, clean_env


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("tri24es: error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize("args", [
    ["status", "--nope"],
    ["events", "--after", "x"],
    ["tasks", "show"],
    ["no-such-command"],
    ["submit", "t", "--priority", "urgent"],
    ["audit", "verify", "--public-key", "00" * 32],  # without an export: it was ignored
    ["up", "--workers", "100000"],  # a fork storm, not a fleet
])
def test_usage_errors_are_one_line_and_exit_2(run: Run, args: list[str]) -> None:
    run("init")
    result = run(*args)
    assert result.returncode == 2
    assert "╭" not in result.stderr
    one_line_error(result)


HUGE = "99999999999999999999"


@pytest.mark.parametrize(("args", "env", "said"), [
    # NaN passes any range check: it was a worker with no task timeout, or a traceback
    (["top", "--interval", "nan"], {}, "'nan' is not a finite number"),
    (["worker", "--task-timeout", "nan"], {}, "'nan' is not a finite number"),
    (["worker", "--lease-seconds", "nan"], {}, "'nan' is not a finite number"),
    (["worker"], {"TRI24ES_LEASE_SECONDS": "inf"}, "'inf' is not a finite number"),
    (["up", "--lease-seconds", "1e400"], {}, "'1e400' is not a finite number"),
    # more than SQLite or the log's JSON holds: a traceback where it was stored, or kept
    (["events", "--after", HUGE], {}, "out of range"),
    (["tasks", "list", "--limit", HUGE], {}, "out of range"),
    (["submit", "t", "--max-retries", HUGE], {}, "out of range"),
    (["limits", "set", "model=m", HUGE], {}, "out of range"),
    (["events", "--after", "9" * 5000], {}, "out of range"),
    (["events", "--after", "\u0663"], {}, "is not a whole number"),  # an Arabic-Indic 3
    # a window or delay of more microseconds than SQLite holds: a traceback reading or saving
    (["spend", "--window", "99999999999d"], {}, "at most 36500d"),
    (["submit", "t", "--retry-backoff", "99999999999d"], {}, "bad retry backoff"),
    (["submit", "t", "--no-progress", "$1 99999999999d"], {}, "bad no-progress rule"),
    (["spend"], {"BUDGET_WINDOW_SIZE": "99999999999999"}, "at most 3153600000 seconds"),
    (["status"], {"TRI24ES_SQLITE_SYNCHRONOUS": "bogus"}, "expected OFF, NORMAL, FULL"),
    # the test clock's offset: a traceback where a time was stored; a malformed one ignored
    (["submit", "t"], {"TRI24ES_CLOCK_OFFSET_US": HUGE}, "must be at most 100 years"),
    (["status"], {"TRI24ES_CLOCK_OFFSET_US": "-" + HUGE}, "must be at most 100 years"),
    (["status"], {"TRI24ES_CLOCK_OFFSET_US": "9" * 5000}, "expected a whole number"),
    (["status"], {"TRI24ES_CLOCK_OFFSET_US": "ten"}, "expected a whole number"),
    # a log position: past 64 bits a traceback in the store's query; "²" one from int()
    (["audit", "export", "--since", HUGE], {}, "a log position is at most"),
    (["status", "--at", "9" * 5000], {}, "a log position is at most"),
    (["status", "--at", "\u00b2"], {}, "expected a log position or an ISO-8601 time"),
    # an empty --exec: a worker that claimed tasks and failed each for want of a command;
    # bad quoting failed them one by one (up: workers exiting and restarted for ever)
    (["worker", "--exec", ""], {}, "--exec must not be empty"),
    (["up", "--exec", " "], {}, "--exec must not be empty"),
    (["worker", "--exec", "'claude -p"], {}, "bad --exec: bad command"),
    (["up", "--exec", "'claude -p"], {}, "bad --exec: bad command"),
    # an argument's bytes that are not UTF-8 (a lone surrogate in Python): a traceback where
    # the log's JSON or SQLite met them
    (["submit", "bad\udcff"], {}, "is not UTF-8 text"),
    (["tasks", "show", "\udcff"], {}, "is not UTF-8 text"),
    (["spend", "record", "--usd", "1", "--model", "m\udcff"], {}, "is not UTF-8 text"),
])
def test_bad_numbers_are_one_line_and_exit_2(run: Run, args: list[str], env: dict[str, str],
                                             said: str) -> None:
    run("init")
    result = run(*args, env=env, timeout=30)
    assert result.returncode == 2, result.stderr
    line = one_line_error(result)
    assert said in line
    assert len(line) < 200  # the value is cut short in the message


def test_a_whole_number_with_a_zero_fraction_is_taken_as_before(run: Run) -> None:
    run("init")
    assert run("submit", "t", "--id", "t").returncode == 0
    result = run("tasks", "list", "--limit", "1.0")
    assert result.returncode == 0, result.stderr
    assert "t  " in result.stdout


def test_global_options_are_taken_after_the_command_too(run: Run, project: Path) -> None:
    run("init")
    other = project / "other"
    other.mkdir()
    assert run("--root", str(other), "init").returncode == 0
    assert run("--root", str(other), "submit", "only here", "--id", "elsewhere").returncode == 0
    for args in (["tasks", "list", "--root", str(other)], ["tasks", "list", f"--root={other}"],
                 ["--root", str(project), "tasks", "list", "--root", str(other)],  # the last wins
                 ["tasks", "list", "--db", str(other / "state" / "tri24es.db")]):
        result = run(*args)
        assert result.returncode == 0, (args, result.stderr)
        assert "elsewhere" in result.stdout, args
    assert "elsewhere" not in run("tasks", "list").stdout
    assert run("status", "--version").stdout.startswith("tri24es ")
    # A value after `--` is the command's, and a missing value is a usage error.
    line = one_line_error(result := run("tasks", "list", "--db"))
    assert result.returncode == 2
    assert "requires an argument" in line
    result = run("submit", "t", "--", "--db")
    assert result.returncode == 2, result.stderr


def test_dash_h_is_help_and_help_has_no_type_placeholders(run: Run) -> None:
    for args in (["-h"], ["events", "-h"], ["tasks", "list", "-h"], ["up", "-h"],
                 ["spend", "-h"], ["submit", "-h"]):
        result = run(*args)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("Usage: tri24es"), result.stdout
        assert "<bool>" not in result.stdout
        assert not re.search(r"--[a-z-]+ <", result.stdout), result.stdout  # --after AFTER
        assert "..." not in result.stdout.split("Commands:")[-1].replace("[ARGS]...", "")
    assert "budget watchdog" in run("up", "-h").stdout


def test_init_where_the_user_cannot_write_is_one_line(shared_tmp: Path) -> None:
    locked = shared_tmp / "locked"
    locked.mkdir(mode=0o555)
    # root writes anywhere: run as nobody then, so that the kernel really says no
    prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] \
        if os.geteuid() == 0 else []
    result = subprocess.run([*prefix, *CLI, "init"], cwd=locked, env=clean_env(locked),
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    line = one_line_error(result)
    assert line == ("tri24es: error: cannot create the project in "
                    f"{locked}: Permission denied: {locked}/state")
    assert not (locked / "state").exists()


def test_ctrl_c_while_starting_prints_no_traceback(run: Run, project: Path) -> None:
    run("init")
    # -X importtime reports each import as it ends: from the line of our entry module on, the
    # command line is ours (before it the interpreter's own start-up, out of our reach).
    codes = set()
    for delay in (0.0, 0.01, 0.03, 0.06, 0.1, 0.15, 0.2, 0.3, 0.45):
        proc = subprocess.Popen(
            [sys.executable, "-X", "importtime", *CLI[1:], "status"], cwd=project,
            env=clean_env(project), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stderr is not None
        for line in proc.stderr:
            if re.search(r"\|\s*tri24es\.cli$", line.rstrip()):
                break
        else:
            pytest.fail("the entry module was never imported")
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        _, rest = proc.communicate(timeout=60)
        assert "Traceback" not in rest, rest
        assert "KeyboardInterrupt" not in rest, rest
        # 130 from us; -SIGINT where CPython re-raises it on its way out (a shell shows 130);
        # 0 when the command finished first
        assert proc.returncode in (0, 130, -signal.SIGINT), (delay, proc.returncode, rest)
        codes.add(proc.returncode)
    assert codes - {0}, "every run finished before the signal: nothing was tried"


@pytest.mark.parametrize(("args", "suggestion"), [
    (["events", "--type", "TaskClaim"], "did you mean TaskClaimed?"),
    (["audit", "export", "--type", "TaskCompleet"], "did you mean TaskCompleted?"),
    (["tasks", "list", "--state", "queud"], "did you mean queued?"),
    (["submit", "t", "--priority", "hihg"], "did you mean HIGH?"),
    (["spend", "--by", "modle"], "did you mean model?"),
])
def test_unknown_values_suggest_the_closest(run: Run, args: list[str], suggestion: str) -> None:
    run("init")
    result = run(*args)
    assert result.returncode == 2
    assert one_line_error(result).endswith(f"({suggestion})")
    assert result.stdout == ""
    assert run("events").stdout == ""  # nothing was written


def test_positions_past_the_end_are_said(run: Run, project: Path) -> None:
    run("init")
    run("submit", "one")
    at = run("status", "--at", "99")
    assert at.returncode == 2
    assert one_line_error(at) == "tri24es: error: --at 99 is past the end of the log (head 1)"
    after = run("events", "--after", "99")
    assert after.returncode == 0
    assert after.stderr == "tri24es: note: --after 99 is past the end of the log (head 1)\n"
    with subprocess.Popen([*CLI, "events", "--follow", "--after", "99"], cwd=project,
                          env=clean_env(project), stderr=subprocess.PIPE, text=True) as follower:
        assert follower.stderr is not None
        try:
            line = follower.stderr.readline()
        finally:
            follower.send_signal(signal.SIGINT)
            follower.wait(timeout=60)
    assert line == ("tri24es: note: --after 99 is past the end of the log (head 1): waiting "
                    "for position 100\n")


def test_a_fifo_or_a_device_named_as_input_is_refused_not_read(
        run: Run, tmp_path: Path, project: Path) -> None:
    """`submit --file FIFO`, `schedule add --file FIFO` and `audit verify FIFO` waited for a
    writer for ever, and `/dev/zero` was read until memory ran out: one line, exit 2. So did
    every command with a FIFO for tri24es.toml."""
    run("init")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for path, kind in ((fifo, "a FIFO"), (Path("/dev/zero"), "a device")):
        for args, said in (
                (["submit", "x", "--file", str(path)], f"cannot read --file '{path}': "),
                (["schedule", "add", "s", "--cron", "@daily", "--title", "x", "--file",
                  str(path)], f"cannot read --file '{path}': "),
                (["audit", "verify", str(path)], f"cannot read {path}: ")):
            result = run(*args, timeout=30)
            assert result.returncode == 2, result.stderr
            assert one_line_error(result) == f"tri24es: error: {said}not a regular file ({kind})"
    exported = run("audit", "export", "-o", str(fifo), timeout=30)  # its open waited for a reader
    assert exported.returncode == 1
    assert one_line_error(exported) == (f"tri24es: error: refusing to open {fifo}: not a "
                                        "regular file")
    os.mkfifo(project / "tri24es.toml")  # read by every command: it hung every one
    status = run("status", timeout=30)
    assert status.returncode == 2
    assert one_line_error(status) == (f"tri24es: error: cannot read {project / 'tri24es.toml'}: "
                                      "not a regular file (a FIFO)")
