"""A stand-in for a coding agent's CLI (claude, codex, gemini): put on PATH under that name
(a wrapper running ``standin.py NAME ARGS...``). It writes its argv and stdin to
``$STANDIN_RECORD/<attempt>.json``, prints the first line of its real JSON format (with a
session id) and a usage line of that format, then does what the task text says, like
``scripted.py``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import scripted

FIRST_LINES = {
    "claude": {"type": "system", "subtype": "init", "session_id": "claude-session-{attempt}",
               "model": "claude-sonnet-4-5"},
    "codex": {"type": "thread.started", "thread_id": "codex-thread-{attempt}"},
    "gemini": {"type": "init", "session_id": "gemini-session-{attempt}",
               "model": "gemini-2.5-pro"},
}


def main() -> int:
    name, argv = sys.argv[1], sys.argv[2:]
    text = sys.stdin.read()
    attempt = os.environ.get("TRI24ES_ATTEMPT", "?")
    record = Path(os.environ["STANDIN_RECORD"])
    record.mkdir(parents=True, exist_ok=True)
    (record / f"{attempt}.json").write_text(json.dumps(
        {"agent": name, "argv": argv, "stdin": text, "cwd": os.getcwd()}))
    first = {k: v.format(attempt=attempt) if isinstance(v, str) else v
             for k, v in FIRST_LINES[name].items()}
    print(json.dumps(first), flush=True)
    print(json.dumps({"cost_usd": 0.01}), flush=True)
    sys.stdin = __import__("io").StringIO(text)
    return scripted.main()


if __name__ == "__main__":
    sys.exit(main())
