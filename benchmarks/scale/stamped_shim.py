"""The keeper (``tri24es/runtime/shim.py`` of the worker's checkout), stamped: when its order
has been read and around its ``posix_spawnp`` (see ``benchmarks.scale.stamps``). Standard
library only: it runs under ``python -I -S`` like the real one."""

import importlib.util
import os
import sys
import time

fd = os.open(os.environ["LATENCY_STAMPS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)


def stamp(name):  # type: ignore[no-untyped-def]
    os.write(fd, f"{name} {time.time_ns()}\n".encode())


spec = importlib.util.spec_from_file_location("shim", os.environ["LATENCY_SHIM"])
shim = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
spec.loader.exec_module(shim)  # type: ignore[union-attr]
read_order, spawn = shim.read_order, os.posix_spawnp


def stamped_read(order_fd):  # type: ignore[no-untyped-def]
    order = read_order(order_fd)
    stamp("k_order")
    return order


def stamped_spawn(*args, **kwargs):  # type: ignore[no-untyped-def]
    stamp("k_spawn<")
    pid = spawn(*args, **kwargs)
    stamp("k_spawn>")
    return pid


shim.read_order = stamped_read
os.posix_spawnp = stamped_spawn
sys.exit(shim.main(sys.argv[1:]))
