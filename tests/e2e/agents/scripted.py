"""A test agent that does what its task text says, one command per line:

    say TEXT          print TEXT
    say-on ATTEMPT TEXT  print TEXT if this is attempt ATTEMPT; ``{epoch+N}`` in it becomes
                      the Unix time N seconds from now (a usage limit's reset)
    spend USD         print a generic spend line {"cost_usd": USD}
    spend-on ATTEMPT USD  spend USD if this is attempt ATTEMPT
    record FILE       write what it was given (stdin, TRI24ES_* env, task file) to FILE as JSON
    spawn FILE        start a child (in the agent's process group); write its pid to FILE
    wait FILE         wait until FILE exists
    hang              wait for a signal, forever
    hang-on ATTEMPT   hang if this is attempt ATTEMPT (TRI24ES_ATTEMPT)
    exit CODE         exit with CODE
    tree FILE         start a child that ignores SIGTERM and a grandchild that ignores it too
                      and leaves the session (setsid); the agent, the child and the
                      grandchild each append "ATTEMPT PID TIME" to FILE every 20 ms while
                      alive (the agent too ignores SIGTERM from then on)
    flood N           print N spend lines {"cost_usd": 0.0001} as fast as it can
    long-line N       print one line of N characters (no newline until the end)
    append FILE TEXT  append TEXT and a newline to FILE (relative: in the working directory)
    fail-on ATTEMPT   exit 1 if this is attempt ATTEMPT
    commit MSG        git add -A and commit in the working directory

Runs with the interpreter of the tests: ``sys.executable scripted.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
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
        "ppid": os.getppid(),
        "sid": os.getsid(0),
    }
    target.write_text(json.dumps(given))


def pulse_forever(target: Path) -> None:
    """Append "ATTEMPT PID TIME" to ``target`` every 20 ms until killed."""
    attempt = os.environ.get("TRI24ES_ATTEMPT", "?")
    while True:
        with target.open("a") as f:
            f.write(f"{attempt} {os.getpid()} {time.time():.6f}\n")
        time.sleep(0.02)


def start_pulse(target: Path, *, leave_session: bool, spawn_more: bool) -> None:
    args = [sys.executable, __file__, "--pulse", str(target)]
    if leave_session:
        args.append("--setsid")
    if spawn_more:
        args.append("--spawn-more")
    subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)


def pulse_main(argv: list[str]) -> int:
    """``--pulse FILE [--setsid] [--spawn-more]``: a descendant of a ``tree`` agent."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if "--setsid" in argv:
        os.setsid()
    target = Path(argv[1])
    if "--spawn-more" in argv:
        start_pulse(target, leave_session=True, spawn_more=False)
    pulse_forever(target)
    return 0


def wait_for(path: Path) -> None:
    while not path.exists():
        time.sleep(0.05)  # a test double: polling a file is all it needs


def main() -> int:
    text = sys.stdin.read()
    for line in text.splitlines():
        command, _, arg = line.partition(" ")
        if command == "say":
            print(arg, flush=True)
        elif command == "say-on" and os.environ.get("TRI24ES_ATTEMPT") == arg.split()[0]:
            said = arg.split(" ", 1)[1]
            if "{epoch+" in said:
                head, _, rest = said.partition("{epoch+")
                seconds, _, tail = rest.partition("}")
                said = f"{head}{int(time.time()) + int(seconds)}{tail}"
            print(said, flush=True)
        elif command == "spend":
            print(json.dumps({"cost_usd": float(arg)}), flush=True)
        elif command == "spend-on" and os.environ.get("TRI24ES_ATTEMPT") == arg.split()[0]:
            print(json.dumps({"cost_usd": float(arg.split()[1])}), flush=True)
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
        elif command == "tree":
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            start_pulse(Path(arg), leave_session=False, spawn_more=True)
            threading.Thread(target=pulse_forever, args=(Path(arg),), daemon=True).start()
        elif command == "flood":
            line = json.dumps({"cost_usd": 0.0001}) + "\n"
            sys.stdout.write(line * int(arg))
            sys.stdout.flush()
        elif command == "long-line":
            sys.stdout.write("x" * int(arg) + "\n")
            sys.stdout.flush()
        elif command == "fail-on" and os.environ.get("TRI24ES_ATTEMPT") == arg:
            return 1
        elif command == "append":
            name, _, text_ = arg.partition(" ")
            with open(name, "a") as f:
                f.write(text_ + "\n")
        elif command == "commit":
            subprocess.run(["git", "add", "-A"], check=True)
            subprocess.run(["git", "-c", "user.name=agent", "-c", "user.email=agent@example",
                            "commit", "-q", "-m", arg], check=True)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--pulse"]:
        sys.exit(pulse_main(sys.argv[1:]))
    sys.exit(main())
