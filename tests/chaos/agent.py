"""A simulated agent for the chaos tests: one spend line naming its attempt, a short nap, exit 0.

It appends ``<pid> <start time>`` to ``$CHAOS_DIR/agents`` when it starts (so the test can
check none is left running) and, after its spend line is flushed to stdout, the line's model
to ``$CHAOS_DIR/markers`` (O_APPEND + fsync), so the test knows which lines were emitted.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path


def append(path: Path, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)


def main() -> int:
    sys.stdin.read()
    out = Path(os.environ["CHAOS_DIR"])
    started = Path(f"/proc/{os.getpid()}/stat").read_text().rpartition(")")[2].split()[19]
    append(out / "agents", f"{os.getpid()} {started}")
    marker = f"chaos-{os.environ['TRI24ES_TASK_ID']}-{os.environ['TRI24ES_ATTEMPT']}"
    print(json.dumps({"cost_usd": 0.001, "model": marker}), flush=True)
    append(out / "markers", marker)
    time.sleep(random.uniform(0, 0.3))
    return 0


if __name__ == "__main__":
    sys.exit(main())
