"""What people expect of a CLI: a config file with `config show` saying where each value
came from, `doctor`, and shell completion."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import tomllib
from pathlib import Path

import pytest

from tests.e2e.conftest import CLI, Run, clean_env


def test_settings_come_from_options_env_file_then_defaults(run: Run, project: Path) -> None:
    run("init")
    (project / "tri24es.toml").write_text('budget_daily_limit = 12.5\nbudget_rate_limit = "2"\n'
                                          "poll_interval = 7\n")
    shown = run("config", "show", env={"BUDGET_RATE_LIMIT": "3"})
    assert shown.returncode == 0, shown.stderr
    lines = {line.split(" = ")[0].lstrip("# "): line for line in shown.stdout.splitlines()}
    assert lines["budget_daily_limit"].startswith("budget_daily_limit = 12.5 ")
    assert lines["budget_daily_limit"].endswith("# tri24es.toml; env BUDGET_DAILY_LIMIT")
    value, source = lines["budget_rate_limit"].split("#")
    assert (value.split(), source) == (["budget_rate_limit", "=", "3"], " env BUDGET_RATE_LIMIT")
    assert lines["budget_window_size"].endswith("# default; env BUDGET_WINDOW_SIZE")
    assert lines["root"].startswith("# root = ")  # never in the file: it is the file's folder
    assert tomllib.loads(shown.stdout)["poll_interval"] == 7  # what it prints is TOML
    spend = run("spend", "--json")  # the same settings reach every command
    assert spend.stdout.count('"daily_limit_usd": "12.5"') == 1
    db = run("--db", str(project / "other.db"), "config", "show", "--json")
    assert '"from": "--db"' in db.stdout


def test_a_bad_config_file_is_one_line_naming_it(run: Run, project: Path) -> None:
    run("init")
    for text, message in (
        ("budget_daly_limit = 1\n", "budget_daly_limit in tri24es.toml: unknown setting "
                                    "(did you mean budget_daily_limit?)"),
        ("budget_daily_limit = -1\n", "budget_daily_limit in tri24es.toml: -1: must be a "
                                      "finite amount greater than 0"),
        ("x = [\n", "not valid TOML"),
    ):
        (project / "tri24es.toml").write_text(text)
        result = run("status")
        assert result.returncode == 2
        assert result.stderr.count("\n") == 1
        assert message in result.stderr


def test_doctor_is_one_line_per_check_and_exit_1_on_a_problem(run: Run, project: Path) -> None:
    missing = run("doctor")
    assert missing.returncode == 1
    assert missing.stdout.startswith("PROBLEM  store: no store at")
    run("init")
    healthy = run("doctor")
    assert healthy.returncode == 0, healthy.stdout
    checks = [line.split()[1] for line in healthy.stdout.splitlines()]
    assert checks == ["store:", "permissions:", "processes:", "budget", "postgresql:", "clock:"]
    (project / "state" / "tri24es.db").chmod(0o644)
    loose = run("doctor")
    assert loose.returncode == 1
    assert "PROBLEM  permissions: the store is 0644" in loose.stdout
    (project / "state" / "tri24es.db").chmod(0o600)


def test_doctor_finds_a_worker_without_its_process_and_no_watchdog(run: Run,
                                                                   project: Path) -> None:
    run("init")
    worker = subprocess.Popen([*CLI, "worker", "--id", "w1"], cwd=project,
                              env=clean_env(project), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while '"w1"' not in run("workers", "list", "--json").stdout:
            assert time.monotonic() < deadline, "the worker never registered"
            time.sleep(0.2)
        running = run("doctor")
        assert "PROBLEM  budget watchdog: not running on this host while 1 workers" \
            in running.stdout
        assert "ok       processes: 1 live workers on this host, all running" in running.stdout
        os.kill(worker.pid, signal.SIGKILL)  # no chance to record its stop
        worker.wait(timeout=60)
        dead = run("doctor")
        assert dead.returncode == 1
        assert "PROBLEM  processes: 1 workers recorded live have no process: w1" in dead.stdout
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


def test_shell_completion_is_offered_and_completes_commands(run: Run) -> None:
    # typer finds the shell among the test's ancestors (shellingham), and a run started
    # from `sh -c` finds sh, which it does not support: name the shell instead (typer's own
    # switch for that), as a user whose shell is not detected would.
    script = run("--show-completion", "bash",
                 env={"SHELL": "/bin/bash", "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"})
    assert script.returncode == 0, script.stderr
    assert "_TRI24ES_COMPLETE" in script.stdout
    asked = run(env={"_TRI24ES_COMPLETE": "complete_bash", "COMP_WORDS": "tri24es sta",
                     "COMP_CWORD": "1"})
    assert asked.stdout.split() == ["status"]


@pytest.mark.skipif(os.geteuid() != 0, reason="only root may use a store another user owns")
def test_doctor_flags_root_in_another_users_project(run: Run, project: Path) -> None:
    run("init")
    state = project / "state"
    for path in (state, *state.iterdir()):
        os.chown(path, 4321, 4321)  # the project is this (made-up) user's
    flagged = run("doctor")
    assert flagged.returncode == 1
    [line] = [line for line in flagged.stdout.splitlines() if "permissions:" in line]
    assert line.startswith("PROBLEM  permissions: the store is uid 4321's and you are root"), line
