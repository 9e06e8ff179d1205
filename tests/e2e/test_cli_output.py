"""How the commands read: tables with headers that fit 80 columns, one money format for
people, exact plain decimals in JSON, a task's body on lines of its own."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from tests.e2e.conftest import Run
from tests.e2e.test_worker import Fleet

LONG_ID = "a-very-long-task-identifier-that-goes-on-and-on-for-ever-and-ever-1234"


def ok(result: object) -> str:
    assert getattr(result, "returncode", None) == 0, getattr(result, "stderr", "")
    return str(getattr(result, "stdout", ""))


def test_tables_have_headers_and_fit_80_columns(run: Run, project: Path) -> None:
    run("init")
    ok(run("submit", "Short one", "--id", "short"))
    ok(run("submit", "A title long enough to need cutting at eighty columns, surely",
           "--id", LONG_ID, "--priority", "high"))
    ok(run("spend", "record", "--usd", "1234.5", "--task", LONG_ID,
           env={"BUDGET_MAX_SPEND_RECORD": "5000"}))
    ok(run("spend", "record", "--usd", "0.0042", "--task", "short"))
    listed = ok(run("tasks", "list", env={"COLUMNS": "80"})).splitlines()
    assert listed[0].split() == ["TASK", "STATE", "PRIORITY", "TRIES", "RETRIES", "SPENT",
                                 "WORKER", "TITLE"]
    assert all(len(line) <= 80 for line in listed), listed
    assert listed[1].startswith(LONG_ID[:12])
    assert "…" in listed[1]
    assert "$1,234.50" in listed[1]
    assert " HIGH " in listed[1]
    assert listed[2].split()[:3] == ["short", "queued", "MEDIUM"]
    assert "$0.0042" in listed[2]
    by_task = ok(run("spend", "--by", "task", "--window", "30d")).splitlines()
    assert by_task[0] == "Window:       30d: $1,234.50"
    table = by_task[by_task.index("") + 1:]
    assert table[0].split() == ["TASK", "SPEND"]
    assert all(len(line) <= 80 for line in table)
    workers = ok(run("workers", "list")).splitlines()
    assert workers[0].split() == ["WORKER", "STATE", "PID", "HOST", "TASK", "REQUESTED"]


def test_json_money_is_exact_and_plain(run: Run) -> None:
    run("init")
    ok(run("spend", "record", "--usd", "100", "--model", "m"))
    ok(run("spend", "record", "--usd", "0.0000000001", "--model", "m"))
    text = ok(run("spend", "--json", "--by", "model")) + ok(run("status", "--json"))
    assert not re.search(r"\d[eE][+-]?\d", text), text
    reading = json.loads(ok(run("spend", "--json", "--by", "model")))
    assert reading["model"] == {"m": "100.0000000001"}
    assert reading["daily_limit_usd"] == "75"
    assert reading["window"] == "5m"
    assert "spend:        $100.00 (2 records)" in ok(run("status")).splitlines()


def test_task_show_prints_the_body_on_its_own_lines(run: Run, tmp_path: Path) -> None:
    run("init")
    body = tmp_path / "fix-login.md"
    body.write_text("# Fix login\n\nThe form drops the password.\nSee issue 12.\n")
    ok(run("submit", "--file", str(body), "--max-budget", "5"))
    shown = ok(run("tasks", "show", "fix-login")).splitlines()
    start = shown.index("body:")
    assert shown[start + 1:start + 5] == ["    # Fix login", "",
                                          "    The form drops the password.", "    See issue 12."]
    submitted = next(line for line in shown if "TaskSubmitted" in line)
    assert "password" not in submitted
    assert "max_budget_usd:     $5.00" in shown


def test_a_table_read_in_part_is_no_error(run: Run, project: Path) -> None:
    """`tri24es tasks list | head -c 10` exits 0, as before print_table joined columns itself:
    written line by line, the reader gone made the second line a broken pipe (exit 1)."""
    import subprocess

    from tests.e2e.conftest import CLI, clean_env

    run("init")
    for n in range(5):
        ok(run("submit", f"Task {n}", "--id", f"task-{n}"))
    codes = []
    for _ in range(3):
        lister = subprocess.Popen([*CLI, "tasks", "list"], cwd=project, env=clean_env(project),
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert lister.stdout is not None
        assert lister.stdout.read(10).startswith(b"TASK ")
        lister.stdout.close()  # the reader goes, as head does
        codes.append(lister.wait(timeout=60))
    assert codes == [0, 0, 0]


def test_a_table_with_its_output_closed_is_no_traceback(run: Run, project: Path) -> None:
    """Started with stdout closed (`tri24es tasks list >&-`), Python's sys.stdout is None:
    asking it whether it is a terminal was an AttributeError traceback (rich printed
    nothing, exit 0)."""
    import os
    import subprocess

    from tests.e2e.conftest import CLI, clean_env

    run("init")
    ok(run("submit", "A task", "--id", "a-task"))
    for args in (["tasks", "list"], ["workers", "list"]):
        result = subprocess.run([*CLI, *args], cwd=project, env=clean_env(project),
                                stderr=subprocess.PIPE, text=True, timeout=60, check=False,
                                preexec_fn=lambda: os.close(1))
        assert "Traceback" not in result.stderr, result.stderr
        assert result.returncode == 0, result.stderr


def _a_long_log(project: Path) -> None:
    """Enough of everything that each listing is larger than a pipe's buffer (64 KiB): a
    reader that goes early meets the command mid-write, not after it."""
    from decimal import Decimal

    import eventlog
    from tri24es import events as ev
    from tri24es.names import Priority
    from tri24es.projections.upkeep import install
    from tri24es.services import Services, TaskSpec
    from tri24es.timeutil import from_us, now_us

    with eventlog.open_store(str(project / "state" / "tri24es.db")) as store:
        install(store)
        services = Services(store, actor="test")
        ids = [f"task-number-{n:04d}-with-a-title-long-enough" for n in range(700)]
        services.submit_many([TaskSpec(task_id, f"The title of {task_id}", Priority.LOW)
                              for task_id in ids])
        now = from_us(now_us())
        services.record_spends([ev.SpendRecorded(amount=Decimal("0.01"), task=task_id,
                                                 occurred_at=now) for task_id in ids])
        for n in range(150):
            services.start_worker(f"worker-{n:03d}-on-a-host-with-a-long-name", pid=100,
                                  pid_start_time=1, host="h")


#: The commands that print a lot; each must end quietly (exit 0) when its output is closed or
#: its reader goes (`| head`), as `tasks list` does.
PRINTERS = (["events"], ["events", "--json"], ["audit", "export"], ["tasks", "list", "--limit",
            "0"], ["tasks", "list", "--json", "--limit", "0"], ["spend", "--by", "task",
            "--window", "30d"], ["spend", "--by", "task", "--json"], ["workers", "list"],
            ["workers", "list", "--json"], ["status"], ["status", "--json"], ["top", "--once"],
            ["config", "show"])


def test_printers_end_quietly_when_their_output_closes_or_their_reader_goes(
        run: Run, project: Path) -> None:
    """`tri24es events >&-` was an AttributeError traceback (Python's sys.stdout is None), and
    `events | head -1` exited 1 (click exits 1 for a broken pipe before tri24es' handler sees
    it); so did `audit export`, `spend --by task`, `status` and `doctor` with a reader gone."""
    import os
    import subprocess

    from tests.e2e.conftest import CLI, clean_env

    run("init")
    _a_long_log(project)
    for args in PRINTERS:
        closed = subprocess.run([*CLI, *args], cwd=project, env=clean_env(project),
                                stderr=subprocess.PIPE, text=True, timeout=60, check=False,
                                preexec_fn=lambda: os.close(1))
        assert "Traceback" not in closed.stderr, (args, closed.stderr)
        assert closed.returncode == 0, (args, closed.stderr)
        printer = subprocess.Popen([*CLI, *args], cwd=project, env=clean_env(project),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert printer.stdout is not None
        assert printer.stderr is not None
        assert printer.stdout.read(10)
        printer.stdout.close()  # the reader goes, as head does
        code, said = printer.wait(timeout=60), printer.stderr.read()
        printer.stderr.close()
        assert code == 0, (args, said)
        assert b"Traceback" not in said, (args, said)


def reader_goes(follower: subprocess.Popen[bytes]) -> bytes:
    """Close the follower's output as head does; it must end quietly, exit 0. Its stderr."""
    from tests.conftest import PATIENCE

    assert follower.stdout is not None
    assert follower.stderr is not None
    follower.stdout.close()
    try:
        code = follower.wait(timeout=PATIENCE)
    finally:
        follower.kill()
    said = follower.stderr.read()
    follower.stderr.close()
    assert code == 0, said
    return said


def test_a_follower_ends_when_its_reader_goes_without_a_new_event(run: Run, project: Path) -> (
        None):
    """`tri24es events -f | head -1` ends once head has gone, not at the next event (in a
    quiet fleet, hours later): the follower looks at its output between waits."""
    import subprocess
    import time

    from tests.e2e.conftest import CLI, clean_env

    run("init")
    ok(run("submit", "A task", "--id", "a-task"))
    follower = subprocess.Popen([*CLI, "events", "--follow"], cwd=project,
                                env=clean_env(project), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
    assert follower.stdout is not None
    assert follower.stderr is not None
    assert b"TaskSubmitted" in follower.stdout.readline()
    # An observation window, not a wait for a condition: the follower is in its wait for a
    # new event (nothing else can show that) when its reader goes.
    time.sleep(1)
    said = reader_goes(follower)
    assert b"Traceback" not in said


def test_tasks_logs_follow_ends_when_its_reader_goes(fleet: Fleet) -> None:
    """`tasks logs ID -f | head -1` on an attempt that runs on: the follower went on for as
    long as the attempt ran (here, for ever), its reader long gone."""
    import subprocess

    from tests.e2e.conftest import CLI, clean_env
    from tests.e2e.test_worker import wait_until

    fleet.submit("talks", "say hello from the agent\nhang-on 1")
    fleet.worker("--id", "w1")
    fleet.started("talks")
    log = fleet.root / "logs" / "tasks" / "talks" / "1.log"
    wait_until(lambda: log.exists() and b"hello from the agent" in log.read_bytes(),
               "the agent's line")
    follower = subprocess.Popen([*CLI, "tasks", "logs", "talks", "-f"], cwd=fleet.root,
                                env=clean_env(fleet.root), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
    assert follower.stdout is not None
    assert follower.stderr is not None
    assert b"hello from the agent" in follower.stdout.readline()
    reader_goes(follower)
    assert fleet.state("talks") == "running"  # it ended on its reader, not on the attempt


def test_what_a_terminal_would_obey_is_shown_escaped_and_json_stays_exact(run: Run) -> None:
    # A right-to-left override makes "evil\u202etxt.exe" read as "evilexe.txt"; ESC and the
    # one-character CSI (U+009B) start escape sequences; U+2028 breaks a line in some views.
    title = "evil \u202etxt.exe \x1b[2J \x9b31m \u2028 end"
    assert run("init").returncode == 0
    assert run("submit", title, "--id", "rtl").returncode == 0
    outputs = {args: run(*args) for args in (
        ("events",), ("events", "--json"), ("tasks", "show", "rtl"),
        ("tasks", "show", "rtl", "--json"), ("tasks", "list"), ("tasks", "list", "--json"))}
    for args, result in outputs.items():
        assert result.returncode == 0, (args, result.stderr)
        obeyed = [c for c in result.stdout if c in "\u202e\x1b\x9b\u2028"]
        assert obeyed == [], args
    assert "\\u202e" in outputs["events",].stdout
    assert "\\u202e" in outputs["tasks", "show", "rtl"].stdout
    # The JSON is still exact: parsed back, the title is what was submitted.
    last = outputs["events", "--json"].stdout.splitlines()[-1]
    assert json.loads(last)["data"]["title"] == title
    assert json.loads(outputs["tasks", "show", "rtl", "--json"].stdout)["task"]["title"] == title
    assert json.loads(outputs["tasks", "list", "--json"].stdout)[0]["title"] == title
