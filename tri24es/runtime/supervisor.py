"""``tri24es up``: one process that keeps the fleet's processes running.

The supervisor starts its children (the queue watcher, the workers) as ``python -m tri24es
...`` processes in its own process group, restarts one that exits with an exponential
backoff, and on SIGTERM or SIGINT stops them all: SIGTERM, a grace period, SIGKILL for the
stragglers. Every child asks the kernel for SIGTERM should the supervisor die first
(``PR_SET_PDEATHSIG``), so none outlives it, even a SIGKILLed supervisor.

It never sleeps blindly: it waits in ``select`` on one pidfd per child (readable when the
child exits) and on the signal wake-up pipe, until the next restart or summary is due.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tri24es.files import private_fd
from tri24es.procinfo import host_id
from tri24es.runtime.signals import SignalInbox, Wakeup, die_with_parent

#: Restart backoff: the first wait, its ceiling, and the uptime after which it starts over.
INITIAL_BACKOFF = 0.5
MAX_BACKOFF = 30.0
RESET_AFTER = 60.0
#: Between SIGTERM and SIGKILL when the fleet stops (a worker needs up to 5 s for its agent).
GRACE_SECONDS = 10.0

_UNSAFE_ID_CHARS = re.compile(r"[^A-Za-z0-9_-]+")


def next_backoff(
    previous: float | None, uptime: float, *, initial: float = INITIAL_BACKOFF,
    maximum: float = MAX_BACKOFF, reset_after: float = RESET_AFTER,
) -> float:
    """Seconds to wait before restarting a child that exited after ``uptime`` seconds.

    ``previous`` is the wait before its last start (None: it never crashed). The wait doubles
    with every quick crash up to ``maximum``; a child that stayed up ``reset_after`` seconds
    counts as healthy again and waits ``initial``.
    """
    if initial <= 0 or maximum < initial:
        raise ValueError(f"need 0 < initial <= maximum, not {initial} and {maximum}")
    if previous is None or uptime >= reset_after:
        return initial
    return min(max(previous, initial) * 2, maximum)


@dataclass(frozen=True)
class ChildSpec:
    """One process the supervisor keeps running: ``tri24es <args>``."""

    name: str
    args: tuple[str, ...]
    worker_id: str | None = None  # a worker's id in the log, to show its row

    @property
    def argv(self) -> list[str]:
        return [sys.executable, "-m", "tri24es", *self.args]


def worker_prefix() -> str:
    """The short host id (:func:`host_id`), usable in a worker id; ``worker`` if there is
    none."""
    host = _UNSAFE_ID_CHARS.sub("-", host_id().split(".")[0]).strip("-")
    return host or "worker"


def fleet_specs(
    workers: int, *, exec_command: str | None, watcher: bool, prefix: str | None = None,
    watchdog: bool = True, worker_options: Sequence[str] = (),
) -> list[ChildSpec]:
    """The children of ``tri24es up``: the queue watcher, workers ``<prefix>-1..N`` (each
    with ``worker_options``, e.g. ``--model claude``), then the budget watchdog."""
    specs: list[ChildSpec] = []
    if watcher:
        specs.append(ChildSpec("queue-watcher", ("queue-watcher",)))
    head = prefix or worker_prefix()
    for n in range(1, workers + 1):
        worker_id = f"{head}-{n}"
        extra = ("--exec", exec_command) if exec_command else ()
        specs.append(ChildSpec(worker_id, ("worker", "--id", worker_id, *extra,
                                           *worker_options), worker_id))
    if watchdog:  # DESIGN.md §7: supervised like the rest
        specs.append(ChildSpec("budget-watchdog", ("budget-watchdog",)))
    return specs


class Child:
    """A supervised process: running, waiting to be restarted, or stopped."""

    def __init__(self, spec: ChildSpec, log_path: Path, root: Path | None = None) -> None:
        self.spec = spec
        self.log_path = log_path
        self.root = root  # the project root: the log's folders are checked from there
        self.proc: subprocess.Popen[bytes] | None = None
        self.pidfd: int | None = None
        self.started_at = 0.0
        self.backoff: float | None = None
        self.restart_at: float | None = None
        self.restarts = 0
        self.last_exit: int | None = None
        self.held: str | None = None  # why it is not restarted, while it is not

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None

    def start(self, env: Mapping[str, str]) -> None:
        fd = private_fd(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, self.root)
        try:
            self.proc = subprocess.Popen(
                self.spec.argv, stdin=subprocess.DEVNULL, stdout=fd, stderr=subprocess.STDOUT,
                # SIGTERM, not SIGKILL, when up dies: a worker still requeues its task.
                env=dict(env), preexec_fn=die_with_parent(signal.SIGTERM),
            )
        finally:
            os.close(fd)
        self.pidfd = os.pidfd_open(self.proc.pid)
        self.started_at = time.monotonic()
        self.restart_at = None

    def reap(self) -> int | None:
        """The exit code if the process has exited (it is reaped then), else None."""
        if self.proc is None or self.proc.poll() is None:
            return None
        code = self.proc.returncode
        assert self.pidfd is not None
        os.close(self.pidfd)
        self.proc, self.pidfd, self.last_exit = None, None, code
        return code

    def signal(self, signum: signal.Signals) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signum)


def describe_exit(code: int) -> str:
    return f"exit {code}" if code >= 0 else f"killed by {signal.Signals(-code).name}"


class Supervisor:
    """Runs the children until ``should_stop`` says so or SIGTERM/SIGINT arrives."""

    def __init__(
        self, specs: Sequence[ChildSpec], *, env: Mapping[str, str], log_dir: Path,
        report: Callable[[str], None], grace: float = GRACE_SECONDS,
        hold: Callable[[Child], str | None] = lambda child: None, root: Path | None = None,
    ) -> None:
        self.children = [Child(spec, log_dir / f"{spec.name}.log", root) for spec in specs]
        self.env = env
        self.report = report
        self.grace = grace
        #: Why a child that exited must not be started again now (None: it may be): a
        #: worker stopped by request stays down; workers stay down while the kill switch is
        #: on and come back once it is reset.
        self.hold = hold

    def run(
        self, inbox: SignalInbox, wake: Wakeup, tick: Callable[[], bool], tick_every: float,
    ) -> str:
        """Start every child, keep them running, and call ``tick`` every ``tick_every``
        seconds (True: stop). Stops the children before returning why it stopped."""
        try:
            for child in self.children:
                self._start(child)
            reason = self._loop(inbox, wake, tick, tick_every)
        finally:
            self.stop()
        return reason

    def _loop(
        self, inbox: SignalInbox, wake: Wakeup, tick: Callable[[], bool], tick_every: float,
    ) -> str:
        next_tick = time.monotonic()
        while True:
            signals = inbox.take()
            if signals:
                return f"received {signals[0].name}"
            now = time.monotonic()
            for child in self.children:
                code = child.reap()
                if code is not None:
                    self._schedule_restart(child, code, now)
                elif child.restart_at is not None and now >= child.restart_at:
                    held = self.hold(child)
                    if held is None:
                        self._start(child)
                        child.restarts += 1
                    else:  # looked at again a tick later: a reset lets it come back
                        if held != child.held:
                            self.report(f"{child.spec.name}: not restarted: {held}")
                        child.held = held
                        child.restart_at = now + tick_every
            if now >= next_tick:
                if tick():
                    return "done"
                next_tick = now + tick_every
            due = [next_tick, *(c.restart_at for c in self.children if c.restart_at is not None)]
            fds = [wake.fd, *(c.pidfd for c in self.children if c.pidfd is not None)]
            readable, _, _ = select.select(fds, [], [], max(0.0, min(due) - time.monotonic()))
            if wake.fd in readable:
                wake.drain()

    def _start(self, child: Child) -> None:
        child.held = None
        try:
            child.start(self.env)
        except OSError as e:
            self.report(f"{child.spec.name}: cannot start: {e}")
            child.started_at = time.monotonic()
            self._schedule_restart(child, None, time.monotonic())
            return
        self.report(f"{child.spec.name}: started (pid {child.pid})")

    def _schedule_restart(self, child: Child, code: int | None, now: float) -> None:
        child.backoff = next_backoff(child.backoff, now - child.started_at)
        child.restart_at = now + child.backoff
        status = "" if code is None else f"{describe_exit(code)}; "
        held = self.hold(child)
        if held is not None:
            child.held = held
            self.report(f"{child.spec.name}: {status}not restarted: {held}")
            return
        self.report(f"{child.spec.name}: {status}restarting in {child.backoff:g} s "
                    f"(log: {child.log_path})")

    def stop(self) -> None:
        """SIGTERM to every child, up to ``grace`` seconds for them to exit, then SIGKILL."""
        for child in self.children:
            child.restart_at = None
            child.signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        while True:
            for child in self.children:
                child.reap()
            fds = [c.pidfd for c in self.children if c.pidfd is not None]
            remaining = deadline - time.monotonic()
            if not fds or remaining <= 0:
                break
            select.select(fds, [], [], remaining)
        for child in self.children:
            if child.running:
                self.report(f"{child.spec.name}: still running after {self.grace:g} s: SIGKILL")
                child.signal(signal.SIGKILL)
                assert child.proc is not None
                child.proc.wait()
                child.reap()
