"""Start-up time: the command line imports the domain and anything heavy only in the commands
that use them (every `tri24es` invocation pays for what its module level imports)."""

from __future__ import annotations

import subprocess
import sys

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
    # `tri24es --version` and `tri24es --help` need only the commands' signatures.
    loaded = loaded_after("import tri24es.cli.app")
    assert not roots(loaded, (
        "pydantic", "pydantic_settings", "rich", "prometheus_client", "watchdog", "psycopg",
        "transitions", "asyncio", "genai_prices", "tri24es.events", "tri24es.config",
        "tri24es.services", "tri24es.projections", "tri24es.runtime",
    ))


def test_the_reading_and_writing_commands_load_no_runtime_or_drawing() -> None:
    # What `status`, `submit`, `events` and `tasks` import: not the daemons, rich, prometheus,
    # watchdog (only followers wait on the file), psycopg (only for PostgreSQL URLs).
    loaded = loaded_after(
        "import tri24es.cli.app, tri24es.config, tri24es.services, tri24es.cli.render\n"
        "import tri24es.projections.reads\n"
        "import eventlog.sqlite"
    )
    assert not roots(loaded, (
        "rich", "prometheus_client", "watchdog", "psycopg", "genai_prices",
        "transitions.extensions", "tri24es.runtime", "tri24es.audit", "tri24es.metrics",
    ))


def test_defaults_written_in_the_cli_match_their_sources() -> None:
    assert DEFAULT_LEASE_SECONDS == SERVICES_LEASE_SECONDS
    assert DEFAULT_MAX_BYTES == TASKFILE_MAX_BYTES
