"""A file made ahead (``files.SpareFile``): put in place as ``write_private`` writes, and
never someone else's file moved or removed in its name."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from tri24es.files import SpareFile


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_spare_is_put_in_place_whole_and_private_replacing_what_was_there(
        tmp_path: Path) -> None:
    folder = tmp_path / "state" / "tasks"
    umask = os.umask(0)  # what it makes is private all the same
    try:
        spare = SpareFile(folder, "worker-w", tmp_path)
    finally:
        os.umask(umask)
    assert names(folder) == [".worker-w.spare"]
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    (folder / "t.md").write_bytes(b"old text")
    spare.place(folder / "t.md", b"x" * 300_000)
    assert (folder / "t.md").read_bytes() == b"x" * 300_000
    assert stat.S_IMODE(os.stat(folder / "t.md").st_mode) == 0o600
    assert names(folder) == ["t.md"]
    spare.place(folder / "u.md", b"used up: written afresh")
    assert (folder / "u.md").read_bytes() == b"used up: written afresh"
    assert names(folder) == ["t.md", "u.md"]


def test_a_spare_whose_name_was_taken_moves_and_removes_nothing_of_the_other(
        tmp_path: Path) -> None:
    """Two workers of one id (one declared lost, still running) make spares of one name:
    each keeps to its own file."""
    folder = tmp_path / "tasks"
    first = SpareFile(folder, "w", tmp_path)
    second = SpareFile(folder, "w", tmp_path)  # the first's file removed, its own made
    first.place(folder / "a.md", b"first")
    assert (folder / "a.md").read_bytes() == b"first"
    assert names(folder) == [".w.spare", "a.md"]  # the second's spare is still there
    first.discard()
    SpareFile(folder, "w", tmp_path).discard()  # a third: made, then removed unused
    assert names(folder) == ["a.md"]
    second.discard()  # not its file any more: nothing removed, nothing raised
    second.place(folder / "b.md", b"second")
    assert (folder / "b.md").read_bytes() == b"second"
    assert names(folder) == ["a.md", "b.md"]
