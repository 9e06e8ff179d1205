"""The raw follower floor of the latency figure: a process that waits on inotify for the
SQLite file's WAL to change, reads the newest row with plain sqlite3, and starts the agent
with a plain ``subprocess.Popen`` (no ``preexec_fn``, no events, no services). It runs until
its stdin closes."""

from __future__ import annotations

import ctypes
import os
import select
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.scale.protocol import args

IN_MODIFY = 0x2
RECHECK_FOR = 0.25  # a commit is visible a moment after its WAL write (as in eventlog.watch)


def follow(p: dict[str, Any]) -> None:
    path, out = Path(p["path"]), Path(p["out"])
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    if fd < 0 or libc.inotify_add_watch(fd, str(path.parent).encode(), IN_MODIFY) < 0:
        raise OSError(ctypes.get_errno(), "inotify")
    conn = sqlite3.connect(path, isolation_level=None)
    seen = conn.execute("SELECT coalesce(max(id), 0) FROM q").fetchone()[0]
    stop = threading.Event()

    def until_stdin_closes() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=until_stdin_closes, daemon=True).start()
    print("ready", flush=True)
    while not stop.is_set():
        if not select.select([fd], [], [], 0.2)[0]:
            continue
        os.read(fd, 65536)
        until = time.monotonic() + RECHECK_FOR
        while time.monotonic() < until:
            head = conn.execute("SELECT coalesce(max(id), 0) FROM q").fetchone()[0]
            if head > seen:
                for job in range(seen + 1, head + 1):
                    with open(out / f"{job}.out", "wb") as f:
                        subprocess.Popen(p["agent"], stdout=f).wait()
                seen = head
                break
            time.sleep(0.0005)


if __name__ == "__main__":
    follow(args())
