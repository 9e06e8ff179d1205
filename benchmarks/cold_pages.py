"""Which b-trees a claim reads from the disk on a cold page cache (issue #20): claim+complete
cycles on a copy of a store, the worker set up, the copy's pages then dropped from the OS
page cache; then the disk reads of the cycles (``ru_inblock``, major faults) and the pages
of the file the cycles brought into the cache, by b-tree (``mincore``, then SQLite's
``dbstat``). The store's checkpoints are held off meanwhile, so the file's cached pages are
the ones read, not the ones a checkpoint wrote. For the code before a change: that checkout
first on PYTHONPATH, and this file's path instead of ``-m``.

    .venv/bin/python -m benchmarks.cold_pages backlog-1m.db --cycles 500 [--no-mmap]

A store is made with ``python -m benchmarks.scale.ours '{"mode": "seed", "url":
"backlog-1m.db", "jobs": 1000000}'``. Pages are the kernel's (4 KB): every SQLite page of one
counts, so a 2 KB page read shows with its neighbour in the file (whatever b-tree that is);
with the memory map on, a fault reads up to the disk's ``read_ahead_kb`` around the page it
needs, which shows as many pages read. An exact count: ``strace -e pread64`` with the map off.
"""

from __future__ import annotations

import argparse
import ctypes
import mmap
import os
import resource
import shutil
import sqlite3
import time
from collections import Counter
from pathlib import Path

from benchmarks.scale.launch import drop_pages

_libc = ctypes.CDLL("libc.so.6", use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]


def cached(path: Path) -> list[int]:
    """The numbers of the file's 4 KB pages that are in the page cache."""
    size = path.stat().st_size
    fd = os.open(path, os.O_RDONLY)
    try:
        address = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
    finally:
        os.close(fd)
    pages = (size + 4095) // 4096
    vector = (ctypes.c_ubyte * pages)()
    try:
        if _libc.mincore(address, size, vector) != 0:
            raise OSError(ctypes.get_errno(), "mincore")
    finally:
        _libc.munmap(address, size)
    return [n for n in range(pages) if vector[n] & 1]


def drop(*paths: Path) -> None:
    os.sync()
    drop_pages(paths)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("store", type=Path, help="a store to copy (left as it is)")
    parser.add_argument("--cycles", type=int, default=500)
    parser.add_argument("--no-mmap", action="store_true", help="SQLite reads with pread")
    parser.add_argument("--work", type=Path, help="where the copy goes (default: beside it)")
    args = parser.parse_args()
    import eventlog.sqlite

    if args.no_mmap:
        kept = [t for t in eventlog.sqlite.TUNING if not t.startswith("mmap")]
        eventlog.sqlite.TUNING = (*kept, "mmap_size = 0")
    from eventlog import open_store
    from tri24es.services import Services, TaskSpec

    work = (args.work or args.store.parent) / f"cold-pages-{os.getpid()}.db"
    shutil.copyfile(args.store, work)
    try:
        with open_store(str(work)) as store:  # as many tasks as the cycles take
            Services(store, actor="bench").submit_many(
                [TaskSpec(f"cold-{os.getpid()}-{n}", "t") for n in range(args.cycles)])
        store = open_store(str(work))
        store._checkpointer.stop()  # type: ignore[attr-defined]  # the file: only reads
        services = Services(store, actor="w")
        services.start_worker("w", pid=os.getpid(), pid_start_time=0, host="bench")
        wal = Path(f"{work}-wal")
        drop(work, wal)
        before = resource.getrusage(resource.RUSAGE_SELF)
        started = time.perf_counter()
        claim, done = services.claim("w"), 0
        while claim is not None:
            done += 1
            claim = services.complete(claim.task_id, "w", claim.attempt,
                                      claim_next=done < args.cycles)
        seconds = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_SELF)
        pages = cached(work)
        db = sqlite3.connect(work)
        owner = dict(db.execute("SELECT pageno, name || ' (' || pagetype || ')' FROM dbstat"))
        (page_size,) = db.execute("PRAGMA page_size").fetchone()
        db.close()
        store.close()
    finally:
        for path in work.parent.glob(f"{work.name}*"):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    print(f"{done} cycles, {done / seconds:,.0f}/s, memory map {'off' if args.no_mmap else 'on'}:"
          f" {(after.ru_inblock - before.ru_inblock) * 512 / done / 1024:.1f} KB read from the"
          f" disk per cycle, {(after.ru_majflt - before.ru_majflt) / done:.3f} major faults per"
          f" cycle; {len(pages) * 4 / done:.1f} KB of the file cached per cycle")
    per = max(1, 4096 // page_size)  # SQLite's pages in one of the kernel's (or a part)
    trees = Counter(owner.get(n * 4096 // page_size + 1 + k, "?") for n in pages
                    for k in range(per))
    for name, count in trees.most_common(12):
        print(f"  {count / done:7.3f} pages per cycle  {name}")


if __name__ == "__main__":
    main()
