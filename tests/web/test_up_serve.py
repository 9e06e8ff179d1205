"""``tri24es up --serve``: the dashboard runs beside the fleet and stops with it."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from tests.conftest import PATIENCE, wait_until
from tests.e2e.conftest import CLI, clean_env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _status(port: int) -> dict[str, object] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=5) as r:
            found: dict[str, object] = json.loads(r.read())
            return found
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def test_up_serve_runs_the_dashboard_beside_the_fleet(tmp_path: Path) -> None:
    root = tmp_path / "fleet"
    root.mkdir()
    env = clean_env(root)
    subprocess.run([*CLI, "init"], cwd=root, env=env, check=True, capture_output=True)
    port = _free_port()
    with (root / "up.out").open("wb") as out:
        up = subprocess.Popen([*CLI, "up", "--demo", "--workers", "1", "--no-watcher",
                               "--serve", "--serve-port", str(port)], cwd=root, env=env,
                              stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: (_status(port) or {}).get("queue"), "the dashboard's status")
        status = _status(port)
        assert status is not None
        assert status["queue"]["total"] > 0  # type: ignore[index]
        assert f"up: the dashboard is on http://127.0.0.1:{port}/" in (
            root / "up.out").read_text()
        assert "serve: the dashboard is on" in (root / "logs" / "up" / "serve.log").read_text()
    finally:
        up.send_signal(signal.SIGTERM)
        assert up.wait(PATIENCE) == 0, (root / "up.out").read_text()
    assert _status(port) is None  # stopped with the fleet
