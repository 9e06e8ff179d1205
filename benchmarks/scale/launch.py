"""Starting workload processes and measuring them: a common start for a group of processes,
the CPU time and memory of commands, the machine's load."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.scale.protocol import RESULT_PREFIX

REPO = Path(__file__).resolve().parents[2]
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


class WorkloadFailed(RuntimeError):
    """A workload process exited without a result; the message holds its stderr's tail."""


@dataclass(frozen=True)
class Workload:
    """One process to start: ``python -m module '<params as JSON>'``."""

    python: str
    module: str
    params: dict[str, Any]
    env: dict[str, str] | None = None

    def command(self) -> list[str]:
        return [self.python, "-m", self.module, json.dumps(self.params)]


@dataclass
class GroupResult:
    """What a group of processes did between their common start and the last one's end."""

    done: int
    seconds: float
    ran: list[Any] = field(repr=False)
    per_process: list[dict[str, Any]] = field(repr=False)

    @property
    def rate(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0

    def duplicates(self) -> int:
        """Jobs that the handlers ran more than once (each extra run counts)."""
        return sum(n - 1 for n in Counter(map(str, self.ran)).values() if n > 1)

    def lost(self, expected: Iterable[Any]) -> int:
        """Jobs of ``expected`` that no handler ran."""
        return len({str(x) for x in expected} - set(map(str, self.ran)))

    @property
    def peak_rss_mib(self) -> float:
        return max(float(p.get("peak_rss_mib", 0.0)) for p in self.per_process)


class _Child:
    def __init__(self, workload: Workload) -> None:
        env = dict(os.environ if workload.env is None else workload.env)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(
            workload.command(), cwd=REPO, env=env, text=True, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        self.name = f"{workload.module} {workload.params.get('mode', '')}"
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stderr: list[str] = []
        self.readers = [threading.Thread(target=self._read_stdout, daemon=True),
                        threading.Thread(target=self._read_stderr, daemon=True)]
        for reader in self.readers:
            reader.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)
            del self.stderr[:-40]

    def expect(self, prefix: str, deadline: float) -> str:
        """The next stdout line that starts with ``prefix`` (others are echoed)."""
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                self.kill()
                raise WorkloadFailed(f"{self.name}: no {prefix.strip()!r} in time; stderr:\n"
                                     + "".join(self.stderr[-15:])) from None
            if line is None:
                code = self.proc.wait()
                time.sleep(0.05)  # let the stderr thread catch the last lines
                raise WorkloadFailed(f"{self.name}: exited {code} before {prefix.strip()!r};"
                                     " stderr:\n" + "".join(self.stderr[-15:]))
            if line.startswith(prefix):
                return line[len(prefix):]
            if line == "ready":  # not waited for: a process on its own starts at once
                self.go(time.monotonic())
                continue
            print(f"    [{self.name}] {line}", file=sys.stderr)

    def go(self, start_at: float) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"go {start_at!r}\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        """Ended (killed if it still runs), reaped, its pipes closed."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for reader in self.readers:
            reader.join(timeout=5)
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):  # stdin of a killed process: broken pipe
                    pipe.close()


def run_group(workloads: Sequence[Workload], timeout: float = 900.0,
              before_go: Callable[[], object] | None = None) -> GroupResult:
    """Start every workload, wait until all are set up, (call ``before_go``,) give them one
    common start, and measure from it to the last one's end."""
    deadline = time.monotonic() + timeout
    children = [_Child(w) for w in workloads]
    try:
        for child in children:
            child.expect("ready", deadline)
        if before_go is not None:
            before_go()
        start_at = time.monotonic() + 0.05
        for child in children:
            child.go(start_at)
        results = [json.loads(child.expect(RESULT_PREFIX, deadline)) for child in children]
        for child in children:
            if child.proc.wait(timeout=max(1.0, deadline - time.monotonic())) != 0:
                raise WorkloadFailed(f"{child.name}: exited {child.proc.returncode};"
                                     " stderr:\n" + "".join(child.stderr[-15:]))
    finally:
        for child in children:
            child.kill()
    end = max(r["end"] for r in results)
    ran = [job for r in results for job in r.pop("ran", [])]
    return GroupResult(sum(r["done"] for r in results), end - start_at, ran, results)


def run_one(workload: Workload, timeout: float = 3600.0) -> dict[str, Any]:
    """One process, started at once if it waits to be: its result line."""
    child = _Child(workload)
    try:
        result: dict[str, Any] = json.loads(
            child.expect(RESULT_PREFIX, time.monotonic() + timeout))
        if child.proc.wait(timeout=60) != 0:
            raise WorkloadFailed(f"{child.name}: exited {child.proc.returncode}; stderr:\n"
                                 + "".join(child.stderr[-15:]))
    finally:
        child.kill()
    return result


# --- whole commands: time, CPU, memory -----------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of a live process (/proc/<pid>/stat), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants."""
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo.extend(int(c) for c in f.read().split())
        except OSError:
            continue
    return pids


@dataclass
class CommandRun:
    seconds: float
    exit_code: int
    peak_rss_mib: float  # the largest single process of the tree (the kernel's count)
    peak_tree_rss_mib: float  # the tree's total, sampled every 10 ms
    stderr_tail: str
    stdout: str = ""  # only when asked for (``capture_stdout``)

    def as_dict(self) -> dict[str, Any]:
        return {"seconds": self.seconds, "exit_code": self.exit_code,
                "peak_rss_mib": self.peak_rss_mib, "peak_tree_rss_mib": self.peak_tree_rss_mib}


def run_command(command: Sequence[str], env: dict[str, str] | None = None,
                timeout: float = 600.0, stdin: bytes | None = None,
                cwd: Path | str = REPO, capture_stdout: bool = False) -> CommandRun:
    """Run a command to its end (stdout discarded unless ``capture_stdout``): wall time and
    peak memory."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, env=env, cwd=cwd,
                            stdout=subprocess.PIPE if capture_stdout else subprocess.DEVNULL,
                            stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE)
    if stdin is not None:
        assert proc.stdin is not None
        proc.stdin.write(stdin)
        proc.stdin.close()
    err: list[bytes] = []
    out: list[bytes] = []
    # Read on threads: a child filling a pipe nobody drains would never end.
    readers = [threading.Thread(target=lambda: err.append(proc.stderr.read()  # type: ignore[union-attr]
                                                            ), daemon=True)]
    if capture_stdout:
        readers.append(threading.Thread(
            target=lambda: out.append(proc.stdout.read()), daemon=True))  # type: ignore[union-attr]
    for reader in readers:
        reader.start()
    peak_tree = 0.0
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        total = 0.0
        for p in tree(proc.pid):
            try:
                total += rss_mib(p)
            except OSError:
                continue
        peak_tree = max(peak_tree, total)
        if time.monotonic() > deadline:
            os.kill(proc.pid, signal.SIGKILL)
        time.sleep(0.01)
    seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    for reader in readers:
        reader.join(5)
    for pipe in (proc.stderr, proc.stdout):
        if pipe is not None:
            pipe.close()
    return CommandRun(seconds, proc.returncode, usage.ru_maxrss / 1024,
                      max(peak_tree, usage.ru_maxrss / 1024),
                      b"".join(err).decode(errors="replace")[-2000:],
                      b"".join(out).decode(errors="replace"))


def machine() -> dict[str, Any]:
    """The load average now, the number of cores, the processor's name and a fixed loop's
    time: machines of one kind differ (a run of the same code gave the raw queues 2.5x
    apart on two days), and the loop says which kind of day a results file had."""
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        model = next((line.split(":", 1)[1].strip() for line in cpuinfo
                      if line.startswith("model name")), "")
    return {"loadavg": list(os.getloadavg()), "nproc": os.cpu_count(), "cpu": model,
            "loop_ms": calibrate()}


def calibrate() -> float:
    """Milliseconds for a fixed pure-Python loop, best of 5 (the least disturbed)."""
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        total = 0
        for i in range(1_000_000):
            total += i & 7
        best = min(best, time.perf_counter() - started)
    return round(best * 1000, 1)


def make_cold(files: Iterable[Path]) -> str:
    """Take ``files`` out of the OS page cache: the whole cache where we may (root), else
    each file's pages (posix_fadvise DONTNEED, which keeps pages that are mapped or dirty).
    Which of the two was done."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError:
        drop_pages(files)
        return "posix_fadvise(DONTNEED)"
    return "drop_caches"


def drop_pages(files: Iterable[Path]) -> None:
    """Take each of ``files``' pages out of the OS page cache (those not mapped or dirty)."""
    for path in files:
        if path.exists():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
