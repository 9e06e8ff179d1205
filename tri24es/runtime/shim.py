"""The keeper of one attempt: a small process between a worker and its agent, so that nothing
an attempt starts outlives it, and an attempt whose worker stalled does not run on.

    python -I -S shim.py --beats FD --outcome FD --guard SECONDS --grace SECONDS -- ARGV...
    python -I -S shim.py --beats FD --outcome FD --guard SECONDS --grace SECONDS --order FD

With ``--order``, it is started ahead of its attempt (a *spare*, so that an agent starts
without waiting for an interpreter): it waits for one JSON line on that descriptor,
``{"argv": [...], "env": {...}, "cwd": ...}``, and exits quietly if the descriptor closes
first (the worker died, or let the spare go).

The worker starts it in a session of its own; it starts the agent (in that session and
process group) with the same stdin, stdout and stderr, and becomes the *subreaper* of
everything below it: a process that leaves its parent (double forks, ``setsid``) is
re-parented here, not to init, and stays within reach. It ends the whole tree, every
descendant found under it (TERM, ``--grace`` seconds, then KILL until none is left):

- when the agent exits (anything it left running in the background goes with it);
- on SIGTERM, SIGINT or SIGHUP (the worker stopping the attempt);
- when the worker dies, even by SIGKILL: the write end of the beat pipe closes with it (and
  ``PR_SET_PDEATHSIG`` sends SIGTERM as well);
- when no beat has come for ``--guard`` seconds: the worker writes one after each lease
  renewal, so a worker that is stopped (SIGSTOP), or cannot reach the store, loses its agent
  before its lease runs out and another worker may start the task again.

Once the agent's process has started it writes ``spawned`` and a newline to the outcome pipe
(the worker gives way until then). At the end it writes one line to it, ``<why> <wait
status>`` (``exited``, ``terminated``, ``orphaned``, ``lost``; ``failed <message>`` when the
agent could not be started) and exits 0. Standard library only, no imports of tri24es: it
starts in a few milliseconds under ``-I -S``.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import select
import signal
import sys
import time
from typing import Any

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
#: Between two sweeps of SIGKILL over the tree (processes forked between them are caught).
SWEEP_PAUSE = 0.01
#: How often the tree is looked at while it has its grace period to end.
GRACE_POLL = 0.05


def descendants(root: int) -> list[int]:
    """Every process below ``root`` (children, theirs, ...), from /proc."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue  # gone meanwhile
        fields = stat[stat.rfind(b")") + 2:].split()
        children.setdefault(int(fields[1]), []).append(int(name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            found.append(child)
            todo.append(child)
    return found


def become_keeper() -> None:
    """Subreaper of what is started below; SIGTERM when the worker dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)


def prepare(beats: int, outcome: int) -> tuple[int, int]:
    """The descriptors set up, and the signals' wake-up pipe made (its two ends): done by a
    spare before its order comes, there is less between the order and the agent's start.
    The signals stay as they are until then: a spare still ends on SIGTERM."""
    for fd in (beats, outcome):
        os.set_inheritable(fd, False)  # the agent gets stdin, stdout and stderr only
    os.set_blocking(beats, False)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    return wake_r, wake_w


def read_order(fd: int) -> dict[str, Any] | None:
    """The attempt to keep, as the worker sends it; None if it closes the pipe first."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = os.read(fd, 65536)
        if not chunk:
            return None
        data += chunk
    order: dict[str, Any] = json.loads(data)
    return order


class Keeper:
    def __init__(self, argv: list[str], beats: int, outcome: int, guard: float,
                 grace: float, env: dict[str, str] | None = None, cwd: str | None = None,
                 ) -> None:
        self.argv, self.beats, self.outcome = argv, beats, outcome
        self.guard, self.grace = guard, grace
        self.env = dict(os.environ) if env is None else env
        self.cwd = cwd
        self.me = os.getpid()
        self.agent = 0
        self.status: int | None = None  # the agent's wait status, once reaped

    def run(self, wake: tuple[int, int]) -> str:
        """Start the agent and keep it; ``wake``: the pipe ``prepare`` made."""
        wake_r, wake_w = wake
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, lambda *_: None)  # noted through the wake-up pipe
        try:
            if self.cwd is not None:
                os.chdir(self.cwd)
            self.agent = os.posix_spawnp(self.argv[0], self.argv, self.env)
        except OSError as e:
            return f"failed {e.strerror or e}: {self.argv[0]}"
        with contextlib.suppress(OSError):  # the worker waits for it before going on
            os.write(self.outcome, b"spawned\n")
        agent_fd = os.pidfd_open(self.agent)
        if os.getppid() == 1:  # the worker died before prctl took hold
            return self.end("orphaned")
        deadline = time.monotonic() + self.guard
        while True:
            ready, _, _ = select.select([agent_fd, wake_r, self.beats], [], [],
                                        max(deadline - time.monotonic(), 0))
            if agent_fd in ready:
                self.reap_all()
                return self.end("exited")  # and whatever it left running
            if wake_r in ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_r, 64)
                return self.end("terminated")
            if self.beats in ready:
                try:
                    data = os.read(self.beats, 4096)
                except BlockingIOError:
                    data = b"."
                if not data:
                    return self.end("orphaned")
                deadline = time.monotonic() + self.guard
            elif time.monotonic() >= deadline:
                return self.end("lost")

    def end(self, why: str) -> str:
        """End the whole tree: TERM, up to ``grace`` seconds for it to go, then KILL until no
        descendant is left. ``why`` and the agent's wait status."""
        if self.signal_all(signal.SIGTERM):
            deadline = time.monotonic() + self.grace
            while time.monotonic() < deadline:
                self.reap_all()
                if not descendants(self.me):
                    break
                time.sleep(GRACE_POLL)
        while True:
            self.reap_all()
            if not self.signal_all(signal.SIGKILL):
                break
            time.sleep(SWEEP_PAUSE)
        self.reap_all()
        if self.status is None:  # not reaped by the sweep: wait for the kill to land
            with contextlib.suppress(ChildProcessError):
                self.status = os.waitpid(self.agent, 0)[1]
        return f"{why} {self.status if self.status is not None else -1}"

    def signal_all(self, signum: signal.Signals) -> bool:
        """Signal every descendant; whether there was any."""
        found = descendants(self.me)
        for pid in found:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
        return bool(found)

    def reap_all(self) -> None:
        """Collect every child that has ended (the agent's status among them)."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.agent:
                self.status = status


def main(argv: list[str]) -> int:
    options: dict[str, str] = {}
    while argv and argv[0] != "--":
        options[argv[0]] = argv[1]
        argv = argv[2:]
    become_keeper()
    wake = prepare(int(options["--beats"]), int(options["--outcome"]))
    command, env, cwd = argv[1:], None, None
    if "--order" in options:
        order = read_order(int(options["--order"]))
        if order is None:
            return 0  # let go unused
        command, env, cwd = order["argv"], order["env"], order.get("cwd")
    keeper = Keeper(command, int(options["--beats"]), int(options["--outcome"]),
                    float(options["--guard"]), float(options["--grace"]), env, cwd)
    outcome = keeper.run(wake)
    with contextlib.suppress(OSError):
        os.write(keeper.outcome, (outcome + "\n").encode())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
