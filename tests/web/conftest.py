"""A real ``tri24es serve`` process on a real project, and an HTTP client for it.

One server per test module (starting it is the slow part); tests in a module share its
project, so each makes tasks and workers of its own names.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Any

import pytest

from eventlog import RecordedEvent, open_store
from tests.conftest import PATIENCE
from tests.e2e.conftest import CLI, clean_env


@dataclass
class Answer:
    status: int
    headers: Message
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()

    def json(self) -> Any:
        return json.loads(self.body)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the test looks at the 303 itself


_opener = urllib.request.build_opener(_NoRedirect)


@dataclass
class Server:
    root: Path
    url: str
    proc: subprocess.Popen[str]
    env: dict[str, str]
    output: list[str] = field(default_factory=list)

    @property
    def token(self) -> str:
        return (self.root / "state" / "web-token").read_text().strip()

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*CLI, *args], cwd=self.root, env=self.env, capture_output=True,
                              text=True, timeout=PATIENCE, check=False)

    def request(self, path: str, *, method: str = "GET", data: bytes | None = None,
                headers: dict[str, str] | None = None) -> Answer:
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers=headers or {})
        try:
            with _opener.open(req, timeout=PATIENCE) as response:
                return Answer(response.status, response.headers, response.read())
        except urllib.error.HTTPError as e:
            return Answer(e.code, e.headers, e.read())

    def get(self, path: str, **headers: str) -> Answer:
        return self.request(path, headers=headers)

    def post_form(self, path: str, fields: dict[str, str], **headers: str) -> Answer:
        return self.request(path, method="POST", data=urllib.parse.urlencode(fields).encode(),
                            headers={"content-type": "application/x-www-form-urlencoded",
                                     **headers})

    def post_json(self, path: str, fields: dict[str, Any], **headers: str) -> Answer:
        return self.request(path, method="POST", data=json.dumps(fields).encode(),
                            headers={"content-type": "application/json", **headers})

    def events(self, type_: str | None = None) -> list[RecordedEvent]:
        with open_store(str(self.root / "state" / "tri24es.db")) as store:
            return [e for e in store.read_all(0) if type_ is None or e.type == type_]


def start_server(root: Path, *options: str, env: dict[str, str] | None = None) -> Server:
    root.mkdir(parents=True, exist_ok=True)
    full_env = clean_env(root) | (env or {})
    subprocess.run([*CLI, "init"], cwd=root, env=full_env, check=True, capture_output=True,
                   timeout=PATIENCE)
    proc = subprocess.Popen([*CLI, "serve", "--port", "0", *options], cwd=root, env=full_env,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    lines: list[str] = []
    found = threading.Event()
    url: list[str] = []

    def read() -> None:  # keeps draining stderr, so the server never blocks on it
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            match = re.search(r"on (http://\S+?)/$", line.strip())
            if match:
                url.append(match.group(1).replace("0.0.0.0", "127.0.0.1"))
                found.set()
        found.set()

    threading.Thread(target=read, daemon=True).start()
    found.wait(PATIENCE)
    if not url:
        proc.kill()
        raise AssertionError(f"serve did not start: {''.join(lines)}")
    return Server(root, url[0], proc, full_env, lines)


def stop_server(server: Server) -> None:
    server.proc.send_signal(signal.SIGTERM)
    code = server.proc.wait(PATIENCE)
    assert server.proc.stderr is not None
    server.proc.stderr.close()
    assert code == 0, "".join(server.output)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start_server(tmp_path_factory.mktemp("web") / "fleet")
    try:
        yield running
    finally:
        stop_server(running)
