"""Start-up time: the command line imports the domain and anything heavy only in the commands
that use them (every `tri24es` invocation pays for what its module level imports)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import clean_env
from tri24es.cli.queue_watcher import DEFAULT_MAX_BYTES
from tri24es.cli.worker import DEFAULT_LEASE_SECONDS
from tri24es.inputs.taskfile import DEFAULT_MAX_BYTES as TASKFILE_MAX_BYTES
from tri24es.services import DEFAULT_LEASE_SECONDS as SERVICES_LEASE_SECONDS


def loaded_after(code: str) -> set[str]:
    """The modules a fresh interpreter has loaded after running ``code``."""
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys; print(' '.join(sys.modules))"],
        check=True, capture_output=True, text=True,
    ).stdout
    return set(out.split())


def roots(modules: set[str], names: tuple[str, ...]) -> set[str]:
    return {m for m in modules if m in names or m.startswith(tuple(f"{n}." for n in names))}


def test_building_the_command_line_loads_no_domain_and_nothing_heavy() -> None:
    # `tri24es --version` and `tri24es --help` need only the table of commands.
    loaded = loaded_after("import tri24es.cli.app")
    assert not roots(loaded, (
        "pydantic", "pydantic_settings", "rich", "prometheus_client", "watchdog", "psycopg",
        "transitions", "asyncio", "genai_prices", "eventlog", "tri24es.events",
        "tri24es.config", "tri24es.services", "tri24es.projections", "tri24es.runtime",
        "tri24es.cli.tasks", "tri24es.cli.status",
    ))


def imported_by(*args: str, root: Path) -> set[str]:
    """The modules a real run of ``tri24es ARGS`` imports (as -X importtime reports them)."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "tri24es", *args], cwd=root,
        env=clean_env(root), capture_output=True, text=True, check=True, timeout=120)
    return {line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines()
            if line.startswith("import time:") and "|" in line}


NEVER_AT_START = ("pydantic_settings", "genai_prices", "asyncio", "markdown_it", "watchdog",
                  "psycopg", "prometheus_client", "transitions", "tri24es.runtime.worker",
                  "tri24es.services", "tri24es.audit")


def test_help_imports_no_pydantic_rich_or_store(tmp_path: Path) -> None:
    assert not roots(imported_by("--help", root=tmp_path), (
        *NEVER_AT_START, "pydantic", "rich", "eventlog", "tri24es.events", "tri24es.config",
        "tri24es.cli.status", "tri24es.cli.tasks"))


@pytest.mark.parametrize("args", [("status",), ("spend",), ("tasks", "list")])
def test_read_commands_import_only_what_they_use(tmp_path: Path, args: tuple[str, ...]) -> None:
    subprocess.run([sys.executable, "-m", "tri24es", "init"], cwd=tmp_path,
                   env=clean_env(tmp_path), check=True, capture_output=True)
    loaded = imported_by(*args, root=tmp_path)
    assert "tri24es.projections.reads" in loaded  # the command did run
    # On views that are up to date: no fold, no event catalog, no pydantic (typer's option
    # parsing included: cli/plain_params.py), no rich console (a table needs rich.cells).
    assert not roots(loaded, (
        *NEVER_AT_START, "tri24es.cli.top", "tri24es.cli.up", "tri24es.cli.worker",
        "pydantic", "pydantic_core", "typer._adapters", "tri24es.events",
        "tri24es.projections.fold", "tri24es.projections.upkeep", "tri24es.projections.queue",
        "tri24es.scheduling", "rich.console", "rich.table"))


def test_a_read_command_on_views_behind_the_log_catches_them_up(tmp_path: Path) -> None:
    """The fast path trusts the views only when they are current: behind the log, the read
    folds what they miss first (and so loads the fold), then shows it."""
    env = clean_env(tmp_path)
    subprocess.run([sys.executable, "-m", "tri24es", "init"], cwd=tmp_path, env=env,
                   check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "tri24es", "submit", "behind"], cwd=tmp_path,
                   env=env, check=True, capture_output=True)
    db = tmp_path / "state" / "tri24es.db"
    with sqlite3.connect(db) as conn:  # the views as a version that lagged would leave them
        conn.execute("UPDATE checkpoints SET position = 0")
        conn.execute("DELETE FROM queue")
    assert "tri24es.projections.upkeep" in imported_by("status", root=tmp_path)
    out = subprocess.run([sys.executable, "-m", "tri24es", "tasks", "list"], cwd=tmp_path,
                         env=env, check=True, capture_output=True, text=True).stdout
    assert "behind" in out


def test_defaults_written_in_the_cli_match_their_sources() -> None:
    assert DEFAULT_LEASE_SECONDS == SERVICES_LEASE_SECONDS
    assert DEFAULT_MAX_BYTES == TASKFILE_MAX_BYTES
