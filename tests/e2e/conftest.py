"""Run the CLI as a user does: a real process, a real project folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "tri24es"]

Run = Callable[..., subprocess.CompletedProcess[str]]


def clean_env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRI24ES_", "BUDGET_"))}
    env["TRI24ES_ROOT"] = str(root)
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
