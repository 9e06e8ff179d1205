"""Agent presets: the command line of each coding agent's non-interactive JSON mode, so a
fleet can say ``--agent claude`` instead of knowing the flags; and the agent's session id,
read from its output, so a retry can resume the session instead of starting over.

Every preset reads the task's text on stdin and writes one JSON object per line, which
``inputs/usage.py`` reads spend from:

- ``claude``: ``claude -p --output-format stream-json --verbose --permission-mode
  bypassPermissions``; the task's remaining budget goes to ``--max-budget-usd``; its
  ``system``/``init`` line carries ``session_id``; a retry resumes it with ``--resume``.
- ``codex``: ``codex exec --json --full-auto -`` (``-``: the prompt on stdin); its
  ``thread.started`` line carries ``thread_id``; a retry resumes with ``codex exec --json
  --full-auto resume THREAD -``.
- ``gemini``: ``gemini --output-format stream-json --yolo``; its ``init`` line carries
  ``session_id``; a retry resumes with ``--resume SESSION``.

The agents act without asking (each runs in its own worktree with ``--repo``): use
``--exec`` for other flags.
"""

from __future__ import annotations

from decimal import Decimal

import orjson

from tri24es.errors import UsageError

AGENTS = ("claude", "codex", "gemini")


def check_agent(name: str | None) -> str | None:
    """``name`` if it is a preset (any case), None for None; UsageError naming the choices."""
    if name is None:
        return None
    agent = name.strip().lower()
    if agent not in AGENTS:
        raise UsageError(f"unknown agent {name!r}: expected {'|'.join(AGENTS)}")
    return agent


def command(agent: str, *, budget_usd: Decimal | None = None,
            session: str | None = None) -> list[str]:
    """The command line of ``agent`` (a preset), resuming ``session`` if given."""
    if agent == "claude":
        argv = ["claude", "-p", "--output-format", "stream-json", "--verbose",
                "--permission-mode", "bypassPermissions"]
        if budget_usd is not None:
            argv += ["--max-budget-usd", f"{budget_usd.normalize():f}"]
        return argv + (["--resume", session] if session else [])
    if agent == "codex":
        head = ["codex", "exec", "--json", "--full-auto"]
        return [*head, "resume", session, "-"] if session else [*head, "-"]
    if agent == "gemini":
        argv = ["gemini", "--output-format", "stream-json", "--yolo"]
        return argv + (["--resume", session] if session else [])
    raise UsageError(f"unknown agent {agent!r}: expected {'|'.join(AGENTS)}")


#: (agent, the line's type, the key holding the session id)
_SESSION_LINES = (("claude", "system", "session_id"), ("codex", "thread.started", "thread_id"),
                  ("gemini", "init", "session_id"))


def session_of(agent: str, line: bytes) -> str | None:
    """The session id an output line of ``agent`` announces, if it announces one."""
    if not line.lstrip().startswith(b'{"type"'):
        return None  # cheap: most lines are not the one
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict):
        return None
    for name, kind, key in _SESSION_LINES:
        if name == agent and obj.get("type") == kind and isinstance(obj.get(key), str):
            session: str = obj[key]
            return session
    return None
