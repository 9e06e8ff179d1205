"""Where a project keeps its files: every path under the project root, named once.

The layout is TRI-24's (``tasks/queue/``, ``state/budget/spend.jsonl``,
``state/budget/kill_switch.active``) plus tri24es's own store, logs and lock files. Processes
get a :class:`ProjectPaths` (from ``Settings.paths``) rather than rebuilding paths by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: The folders under ``tasks/``: queue files, and where ``--legacy-files`` moves them.
TASK_FOLDERS = ("queue", "running", "completed", "failed", "rejected")


def safe_name(task_id: str) -> str:
    """A task id usable as one file name, and a different one for each id: ``%``, ``/`` and
    NUL are %-escaped, and so is a leading ``.`` (ids made by ``submit`` or the queue folder
    never hold these; ids appended through the API may)."""
    name = task_id.replace("%", "%25").replace("/", "%2F").replace("\0", "%00")
    return "%2E" + name[1:] if name.startswith(".") else name or "%"


def unsafe_name(name: str) -> str:
    """The id that ``safe_name`` turned into ``name``."""
    from urllib.parse import unquote

    return unquote(name)


@dataclass(frozen=True)
class ProjectPaths:
    root: Path

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def default_db(self) -> Path:
        return self.state / "tri24es.db"

    @property
    def tasks(self) -> Path:
        return self.root / "tasks"

    @property
    def queue(self) -> Path:
        return self.tasks / "queue"

    @property
    def rejected(self) -> Path:
        return self.tasks / "rejected"

    @property
    def budget(self) -> Path:
        return self.state / "budget"

    @property
    def spend_file(self) -> Path:
        """The legacy spend file agents and scripts append to (bridged into the log)."""
        return self.budget / "spend.jsonl"

    @property
    def kill_switch_file(self) -> Path:
        """Written while the kill switch is on, as TRI-24 wrote it."""
        return self.budget / "kill_switch.active"

    @property
    def watchdog_lock(self) -> Path:
        return self.state / "budget-watchdog.lock"

    @property
    def watchdog_pid(self) -> Path:
        return self.state / "budget-watchdog.pid"

    @property
    def witness_key(self) -> Path:
        """The witness's signing key (see tri24es.witness); TRI24ES_WITNESS_KEY moves it."""
        return self.state / "witness" / "key.pem"

    @property
    def witness_file(self) -> Path:
        """The signed checkpoints of the log; TRI24ES_WITNESS_FILE moves it."""
        return self.state / "witness" / "checkpoints.jsonl"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def up_logs(self) -> Path:
        """One log per process ``tri24es up`` runs."""
        return self.logs / "up"

    @property
    def workspaces(self) -> Path:
        """Where attempts get their git worktrees (with ``--repo``)."""
        return self.root / "workspaces"

    def workspace(self, task_id: str, attempt: int) -> Path:
        return self.workspaces / f"{safe_name(task_id)}-{attempt}"

    @property
    def task_inputs(self) -> Path:
        """The folder of the tasks' texts (``task_input``)."""
        return self.state / "tasks"

    def task_input(self, task_id: str) -> Path:
        """The task's text, handed to its agent (``TRI24ES_TASK_FILE``)."""
        return self.task_inputs / f"{safe_name(task_id)}.md"

    def attempt_log(self, task_id: str, attempt: int) -> Path:
        """The output of one attempt's agent."""
        return self.logs / "tasks" / safe_name(task_id) / f"{attempt}.log"

    @property
    def web_token(self) -> Path:
        """The secret the web dashboard asks for before an action (0600, made by ``init``)."""
        return self.state / "web-token"
