"""The queue watcher against random names and random bytes in ``tasks/queue/``.

One in-process ``QueueWatcher.scan()`` per example, over a fresh project and a real SQLite
store. Whatever lands in the folder (undecodable names, names with spaces, control characters
or no ``.md``, random and binary content, bad field lines, symlinks out of the queue, dangling
ones, FIFOs, folders), the scan never raises, and:

- every file is accounted for: left in place (ignored, or submitted) or moved to
  ``tasks/rejected/`` with a ``.reason`` file; nothing is lost, nothing written elsewhere;
- each rejected file has exactly one TaskRejected event, with a one-line reason;
- each good file becomes exactly one TaskSubmitted, and a second scan adds nothing.

The rules for single files (names, priorities, fields, each rejection reason) are tested in
``tests/unit/test_taskfile.py``; this is their sum on disk, fuzzed.
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventlog import open_store
from tri24es import events as ev
from tri24es.names import Priority
from tri24es.paths import ProjectPaths
from tri24es.runtime.queue_watcher import QueueWatcher
from tri24es.services import Services

FOLDERS = [b"", b"CRITICAL", b"HIGH", b"MEDIUM", b"LOW", b"critical", b"High", b"low",
           b"urgent", b"HIGH/deeper"]
PRIORITY_FOLDERS = {b"", b"CRITICAL", b"HIGH", b"MEDIUM", b"LOW", b"critical", b"High", b"low"}

# Random file names: any bytes but "/" and NUL, often ending in .md (else mostly ignored).
random_names = st.builds(
    lambda stem, md: stem + (b".md" if md else b""),
    st.binary(min_size=1, max_size=40).map(lambda b: b.replace(b"/", b"_").replace(b"\0", b"_")),
    st.booleans(),
).filter(lambda n: n not in (b".", b"..") and not n.startswith(b"good-"))
field_lines = st.sampled_from([
    b"max_retries: 2\n", b"max_retries: -1\n", b"max_retries: lots\n", b"max_budget_usd: $2.50\n",
    b"max_budget_usd: 1e9\n", b"model: " + b"m" * 300 + b"\n", b"type: bugfix\n", b"lane: web\n",
    b"```\nmax_retries: x\n```\n", b"\xff\xfe\n", b"\x00\n", b"   \n",
])
random_content = st.one_of(
    st.binary(max_size=300),
    st.lists(field_lines | st.text(max_size=30).map(str.encode), max_size=6).map(b"".join),
    st.just(b""),
)


@st.composite
def queue_files(draw: st.DrawFn) -> list[tuple[str, bytes, bytes, bytes]]:
    """(kind, folder, name, content) for random files and a few known-good ones."""
    files = []
    for _ in range(draw(st.integers(0, 10))):
        kind = draw(st.sampled_from(["file"] * 6 + ["symlink-out", "dangling", "fifo", "dir"]))
        files.append((kind, draw(st.sampled_from(FOLDERS)), draw(random_names),
                      draw(random_content)))
    for n in range(draw(st.integers(0, 4))):
        folder = draw(st.sampled_from(sorted(PRIORITY_FOLDERS)))
        title = draw(st.text(st.characters(exclude_categories=("Cc", "Cs")), max_size=30))
        files.append(("good", folder, b"good-%d.md" % n, f"# {title}\nbody\n".encode()))
    return files


def create(queue: Path, outside: Path, kind: str, folder: bytes, name: bytes,
           content: bytes) -> bytes | None:
    """Make one entry; its path relative to the queue folder, or None if it could not be
    made (the name is taken by an earlier one)."""
    where = os.path.join(bytes(queue), folder) if folder else bytes(queue)
    os.makedirs(where, exist_ok=True)
    path = os.path.join(where, name)
    if os.path.lexists(path):
        return None
    if kind in ("file", "good"):
        with open(path, "wb") as f:
            f.write(content)
    elif kind == "symlink-out":
        os.symlink(bytes(outside), path)
    elif kind == "dangling":
        os.symlink(b"/nonexistent/" + name, path)
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        os.mkdir(path)
    return os.path.relpath(path, bytes(queue))


def tree(root: Path) -> set[bytes]:
    found = set()
    for dirpath, dirnames, filenames in os.walk(bytes(root)):
        found.update(os.path.join(dirpath, n) for n in filenames + dirnames)
    return found


def past(paths: set[bytes]) -> None:
    """Age the files past the watcher's settle time (it reads only files at rest)."""
    for path in paths:
        if not os.path.islink(path):
            os.utime(path, (1_700_000_000, 1_700_000_000))


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(queue_files())
def test_random_queue_files_are_each_submitted_once_or_rejected_with_a_reason(
    files: list[tuple[str, bytes, bytes, bytes]],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "fleet"
        queue = root / "tasks" / "queue"
        queue.mkdir(parents=True)
        (root / "tasks" / "rejected").mkdir()
        outside = Path(tmp) / "secret.md"
        outside.write_bytes(b"# a secret outside the queue\n")
        made = {}
        for kind, folder, name, content in files:
            relative = create(queue, outside, kind, folder, name, content)
            if relative is not None:
                made[relative] = kind
        past(tree(queue))
        before = tree(Path(tmp))
        with open_store(str(root / "events.db")) as store:
            watcher = QueueWatcher(Services(store, actor="fuzz"), ProjectPaths(root),
                                   max_bytes=200)
            report, _ = watcher.scan()
            again, _ = watcher.scan()
            log = list(ev.decode_all(store.read_all()))
        store_files = (b"events.db", b"events.db-wal", b"events.db-shm", b"events.db.bells")
        after = {p for p in tree(Path(tmp))
                 if not any(p == os.path.join(bytes(root), n)
                            or p.startswith(os.path.join(bytes(root), b"events.db.bells/"))
                            for n in store_files)}

        submitted = [e.event for e in log if isinstance(e.event, ev.TaskSubmitted)]
        rejected = [e.event for e in log if isinstance(e.event, ev.TaskRejected)]
        ids = [s.task_id for s in submitted]
        assert len(ids) == len(set(ids)) == len(report.submitted), "a task submitted twice"
        assert (again.submitted, again.rejected) == ([], []), "a second scan changed something"
        assert len(rejected) == len(report.rejected)
        for r in rejected:
            assert r.reason, r
            assert r.reason.isprintable(), r
            assert r.source is not None
            assert r.source.isprintable(), r
        # Every good file is a task, with its folder's priority.
        priorities = {s.task_id: s.priority for s in submitted}
        for relative, kind in made.items():
            if kind == "good":
                folder, name = os.path.split(relative)
                task_id = name.decode().removesuffix(".md")
                assert task_id in ids, (relative, report)
                expected = folder.decode().upper() or "MEDIUM"
                assert priorities[task_id] == Priority(expected)
        # Nothing lost, nothing new outside tasks/: each entry that left the queue folder is in
        # tasks/rejected/ under a name of its own, beside a .reason file.
        rejected_dir = bytes(root / "tasks" / "rejected")
        moved = sorted(p for p in after - before if not p.endswith(b".reason"))
        assert all(os.path.dirname(p) == rejected_dir for p in after - before), after - before
        assert len(moved) == len(report.rejected)
        reasons = []
        for path in moved:
            with open(path + b".reason", "rb") as f:
                reasons.append(f.readline().decode().rstrip("\n"))
        assert Counter(reasons) == Counter(r.reason for r in rejected)
        gone = before - after
        assert len([p for p in gone if not os.path.isdir(p)]) == len(moved), (gone, moved)
        # A file is rejected, or submitted, or left alone: never two of these.
        sources = Counter(r.source for r in report.rejected)
        assert all(count == 1 for count in sources.values())


def test_what_is_refused_whatever_it_holds_is_refused_by_the_first_scan(tmp_path: Path) -> None:
    """Files just written (not settled): a symlink out of the queue and a name that is no
    safe id are refused at once; a good file waits until it has settled."""
    root = tmp_path / "fleet"
    queue = root / "tasks" / "queue"
    queue.mkdir(parents=True)
    (root / "tasks" / "rejected").mkdir()
    outside = tmp_path / "secret.md"
    outside.write_text("# a secret\n")
    (queue / "out.md").symlink_to(outside)
    (queue / "-bad name.md").write_text("# bad\n")
    (queue / "good.md").write_text("# good\n")
    with open_store(str(root / "events.db")) as store:
        watcher = QueueWatcher(Services(store, actor="fuzz"), ProjectPaths(root), settle=3600)
        report, recheck = watcher.scan()
    assert sorted(r.source for r in report.rejected) == ["tasks/queue/-bad name.md",
                                                         "tasks/queue/out.md"]
    assert report.submitted == []
    assert report.waiting == ["tasks/queue/good.md"]
    assert recheck is not None
