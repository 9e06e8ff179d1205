"""Run the CLI as a user does: a real process, a real project folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.e2e.test_worker import Fleet

CLI = [sys.executable, "-m", "tri24es"]

Run = Callable[..., subprocess.CompletedProcess[str]]


def clean_env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRI24ES_", "BUDGET_"))}
    env["TRI24ES_ROOT"] = str(root)
    # Tests of other things retry failed tasks at once; the backoff's own tests set it.
    env["TRI24ES_RETRY_BACKOFF"] = "0"
    return env


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return tmp_path / "fleet"


@pytest.fixture
def run(project: Path) -> Run:
    project.mkdir(exist_ok=True)

    def run(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> (
        subprocess.CompletedProcess[str]
    ):
        full_env = clean_env(project) | (env or {})
        return subprocess.run(
            [*CLI, *args], cwd=project, env=full_env, capture_output=True, text=True,
            timeout=timeout, check=False,
        )

    return run


@pytest.fixture
def fleet(project: Path, run: Run) -> Iterator[Fleet]:
    """An initialised project with its store open and the processes it starts, ended after
    (``test_worker.Fleet``)."""
    from tests.e2e.test_worker import Fleet

    assert run("init").returncode == 0
    fleet = Fleet(project, run)
    yield fleet
    fleet.close()


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A folder other users may enter (pytest's own is the owner's only): for commands run
    as another user, to meet the permissions a real user meets."""
    folder = Path(tempfile.mkdtemp(prefix="tri24es-shared-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        for path in (folder, *folder.rglob("*")):
            if not path.is_symlink():
                path.chmod(0o700 if path.is_dir() else 0o600)
        shutil.rmtree(folder)
