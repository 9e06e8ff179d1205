"""A test agent that does what its task text says, one command per line:

    say TEXT          print TEXT
    spend USD         print a generic spend line {"cost_usd": USD}
    record FILE       write what it was given (stdin, TRI24ES_* env, task file) to FILE as JSON
    spawn FILE        start a child (in the agent's process group); write its pid to FILE
    wait FILE         wait until FILE exists
    hang              wait for a signal, forever
    hang-on ATTEMPT   hang if this is attempt ATTEMPT (TRI24ES_ATTEMPT)
    exit CODE         exit with CODE

Runs with the interpreter of the tests: ``sys.executable scripted.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def record(target: Path, text: str) -> None:
    task_file = Path(os.environ["TRI24ES_TASK_FILE"])
    given = {
        "stdin": text,
        "env": {k: v for k, v in os.environ.items() if k.startswith("TRI24ES_")},
        "task_file": task_file.read_text(),
        "task_file_mode": task_file.stat().st_mode & 0o777,
        "pid": os.getpid(),
        "pgid": os.getpgid(0),
    }
    target.write_text(json.dumps(given))


def wait_for(path: Path) -> None:
    while not path.exists():
        time.sleep(0.05)  # a test double: polling a file is all it needs


def main() -> int:
    text = sys.stdin.read()
    for line in text.splitlines():
        command, _, arg = line.partition(" ")
        if command == "say":
            print(arg, flush=True)
        elif command == "spend":
            print(json.dumps({"cost_usd": float(arg)}), flush=True)
        elif command == "record":
            record(Path(arg), text)
        elif command == "spawn":
            child = subprocess.Popen([sys.executable, "-c", "import signal; signal.pause()"],
                                     stdout=subprocess.DEVNULL)
            Path(arg).write_text(str(child.pid))
        elif command == "wait":
            wait_for(Path(arg))
        elif command == "hang" or (command == "hang-on" and
                                   os.environ.get("TRI24ES_ATTEMPT") == arg):
            while True:
                signal.pause()
        elif command == "exit":
            return int(arg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
