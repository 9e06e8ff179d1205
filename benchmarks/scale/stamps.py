"""Per-step time stamps for the latency figure (``benchmarks.latency_steps``): the worker,
its keeper and the raw follower run with a few functions wrapped to write ``<name> <wall
clock ns>`` lines to the file ``LATENCY_STAMPS`` names (one ``os.write`` each, O_APPEND: a
few microseconds). Only for measuring: nothing here runs in the product.

    python -m benchmarks.scale.stamps worker ARGS...    # tri24es ARGS..., stamped
    python -m benchmarks.scale.stamps follower JSON     # the raw follower, stamped

Wrappers go only where the checkout has the function, so two checkouts of different ages
can be stamped alike."""

from __future__ import annotations

import functools
import os
import runpy
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: The keeper's stamped stand-in (run as ``python -I -S`` like the real one).
KEEPER = Path(__file__).with_name("stamped_shim.py")

_fd = -1


def stamp(name: str) -> None:
    os.write(_fd, f"{name} {time.time_ns()}\n".encode())


def _open() -> None:
    global _fd
    _fd = os.open(os.environ["LATENCY_STAMPS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)


def wrap(owner: object, attr: str, before: str | None = None, after: str | None = None,
         only: Callable[[Any], bool] | None = None) -> None:
    """Stamp ``before`` and ``after`` a call of ``owner.attr`` (``only``: stamp ``after``
    only when the result passes)."""
    fn = getattr(owner, attr, None)
    if fn is None:
        return

    @functools.wraps(fn)
    def stamped(*args: Any, **kwargs: Any) -> Any:
        if before:
            stamp(before)
        result = fn(*args, **kwargs)
        if after and (only is None or only(result)):
            stamp(after)
        return result

    setattr(owner, attr, stamped)


def worker(argv: list[str]) -> None:
    _open()
    from tri24es.runtime import agent, worker
    from tri24es.services import Services

    os.environ["LATENCY_SHIM"] = str(agent.SHIM)  # the keeper the stand-in runs
    agent.SHIM = KEEPER  # type: ignore[misc]
    wrap(worker.Worker, "_wait", after="awake")
    wrap(Services, "claimable", before="claimable<", after="claimable>")
    wrap(Services, "claim", after="claimed", only=lambda claim: claim is not None)
    wrap(worker.Worker, "_spawn", before="spawn<")
    wrap(worker, "write_private", before="taskfile<", after="taskfile>")
    wrap(agent.Keeper, "start", before="order<", after="order>")
    wrap(agent.Keeper, "spawned", after="spawned")
    wrap(agent, "open_private", after="log")
    wrap(Services, "started", after="started")
    sys.argv = ["tri24es", *argv]
    runpy.run_module("tri24es", run_name="__main__", alter_sys=True)


def follower(argv: list[str]) -> None:
    _open()
    import select
    import subprocess

    from benchmarks.scale import follower as f

    class Select:
        def select(self, r: Any, w: Any, x: Any, timeout: float) -> Any:
            ready = select.select(r, w, x, timeout)
            if ready[0]:
                stamp("f_awake")
            return ready

    class Popen(subprocess.Popen[bytes]):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            stamp("f_spawn<")
            super().__init__(*args, **kwargs)
            stamp("f_spawn>")

    f.select = Select()  # type: ignore[assignment]
    f.subprocess = type("sp", (), {"Popen": Popen})  # type: ignore[assignment]
    sys.argv = ["follower", *argv]
    f.follow(f.args())


if __name__ == "__main__":
    {"worker": worker, "follower": follower}[sys.argv[1]](sys.argv[2:])
