"""``tri24es serve``'s bad input: one line on stderr, no traceback, the right exit code."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from tests.conftest import PATIENCE
from tests.e2e.conftest import CLI, Run, clean_env
from tests.web.conftest import start_server, stop_server


@pytest.fixture
def run(tmp_path: Path) -> Run:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*CLI, *args], cwd=tmp_path, env=clean_env(tmp_path),
                              capture_output=True, text=True, timeout=PATIENCE, check=False)

    return run


def test_bad_input_is_one_line(run: Run) -> None:
    assert run("init").returncode == 0
    for args, code, said in (
            (("--host", "no-such-host.invalid"), 2, "bad --host 'no-such-host.invalid'"),
            (("--port", "70000"), 2, "--port"),
    ):
        done = run("serve", *args)
        assert done.returncode == code, done.stderr
        assert said in done.stderr
        assert "Traceback" not in done.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run("serve", "--port", str(port))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"tri24es: error: cannot listen on 127.0.0.1:{port}: Address already in use"]


def test_serve_needs_a_store(run: Run) -> None:
    done = run("serve")
    assert done.returncode == 1
    assert "run `tri24es init` first" in done.stderr


def test_a_replaced_store_is_one_line_not_a_crash(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    server = start_server(tmp_path_factory.mktemp("gone") / "fleet")
    try:
        assert server.get("/api/status").status == 200
        (server.root / "state" / "tri24es.db").unlink()
        gone = server.get("/api/status")
        assert gone.status == 503
        assert "deleted or replaced" in gone.json()["error"]
        assert server.get("/tasks").status == 503
    finally:
        stop_server(server)
    assert "Traceback" not in "".join(server.output)


def test_a_token_file_that_is_a_fifo_or_someone_elses_is_refused(run: Run, tmp_path: Path) -> (
        None):
    """A FIFO for state/web-token hung `serve` (its open waited for a writer); a token file
    another user made was taken, and that user knows the token. One line each, exit 1."""
    import os

    assert run("init").returncode == 0
    token = tmp_path / "state" / "web-token"
    token.unlink()
    os.mkfifo(token)
    done = run("serve", "--port", "0")
    assert (done.returncode, done.stderr) == (
        1, f"tri24es: error: refusing to open {token}: not a regular file (a FIFO)\n")
    token.unlink()
    token.write_text("known-to-someone-else\n")
    if os.geteuid() != 0:
        pytest.skip("giving a file to another user needs root")
    os.chown(token, 65534, 65534)
    done = run("serve", "--port", "0")
    assert done.returncode == 1
    assert done.stderr.startswith(f"tri24es: error: refusing to use {token}: the file belongs "
                                  "to user id 65534")
