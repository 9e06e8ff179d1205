"""Run the dashboard: bind the socket ourselves (a clear error, and ``--port 0`` names the
port it got), then hand it to uvicorn, which stops on SIGINT or SIGTERM."""

from __future__ import annotations

import signal
import socket
from collections.abc import Callable

import uvicorn

from eventlog import EventStore
from tri24es.config import Settings
from tri24es.errors import Tri24esError, UsageError
from tri24es.web.app import build
from tri24es.web.guard import Guard, is_loopback
from tri24es.web.token import ENV, load_token


def bind(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as e:
        raise UsageError(f"bad --host {host!r}: {e.strerror}") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as e:
        sock.close()
        raise Tri24esError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    sock.set_inheritable(False)
    return sock


def serve(store: EventStore, settings: Settings, host: str, port: int,
          report: Callable[[str], None]) -> None:
    token_file = settings.paths.web_token
    try:
        token = load_token(token_file)
    except (OSError, ValueError) as e:
        raise Tri24esError(f"cannot read the web token: {e}") from None
    guard = Guard(token, is_loopback(host), host)
    sock = bind(host, port)
    config = uvicorn.Config(build(store, settings, guard), log_level="warning",
                            access_log=False, proxy_headers=False, server_header=False,
                            timeout_graceful_shutdown=2, lifespan="on")
    server = uvicorn.Server(config)

    def stop(signum: int, frame: object) -> None:
        server.should_exit = True  # uvicorn looks before it starts serving, and while

    # Ours until uvicorn takes the signals over, and again once it gives them back (it then
    # raises the signal it stopped on once more): a stop is a flag, and the exit is 0.
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        if guard.loopback:
            report(f"serve: reading needs no token on loopback; actions need the token in "
                   f"{token_file} (or {ENV})")
        else:
            report(f"serve: bound beyond loopback ({host}): reading needs the token too, as "
                   f"actions do ({token_file} or {ENV}); put a TLS proxy in front of it")
        shown = sock.getsockname()
        where = f"[{shown[0]}]" if ":" in shown[0] else shown[0]
        report(f"serve: the dashboard is on http://{where}:{shown[1]}/")
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    report("serve: stopped")
