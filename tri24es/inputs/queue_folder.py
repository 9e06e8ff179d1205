"""What in ``tasks/queue/`` is a queue file, and what is left alone and why.

Kept apart from the task file parser (which needs the event catalog and the services), so
that ``status`` can say what the watcher ignores without loading either.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass
from pathlib import Path

#: The folders under tasks/queue/ whose files take that priority.
PRIORITY_FOLDERS = ("CRITICAL", "HIGH", "MEDIUM", "LOW")
_IGNORED_SUFFIXES = ("~", ".swp", ".swx", ".tmp")


class Ignored(enum.StrEnum):
    """Why a name in the queue folder is not a queue file (it is left alone, not rejected)."""

    HIDDEN = "hidden file"
    EDITOR_TEMP = "editor temporary file"
    NOT_MARKDOWN = "not a .md file"
    NOT_A_QUEUE_FOLDER = "not in the queue folder or a CRITICAL/HIGH/MEDIUM/LOW folder"


def is_ignored_name(name: str) -> Ignored | None:
    if name.startswith("."):
        return Ignored.HIDDEN
    if name.endswith(_IGNORED_SUFFIXES) or (len(name) > 1 and name[0] == name[-1] == "#"):
        return Ignored.EDITOR_TEMP
    if not name.endswith(".md"):
        return Ignored.NOT_MARKDOWN
    return None


@dataclass(frozen=True)
class IgnoredEntry:
    source: str  # e.g. "tasks/queue/notes.txt", "tasks/queue/deep/" (a folder)
    reason: str


def ignored_entries(queue_dir: Path) -> list[IgnoredEntry]:
    """Files and folders in ``queue_dir`` that the watcher leaves alone and a person may have
    meant as tasks: other names than ``*.md`` (``UPPER.MD``, ``notes.txt``) and folders other
    than the priority ones. Hidden and editor temporary files are expected there and not
    listed."""
    found: list[IgnoredEntry] = []

    def look(folder: Path, prefix: str, depth: int) -> None:
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            return
        for entry in entries:
            why = is_ignored_name(entry.name)
            if why in (Ignored.HIDDEN, Ignored.EDITOR_TEMP):
                continue
            source = f"{prefix}{entry.name}"
            if entry.is_dir(follow_symlinks=False):
                if depth == 0 and entry.name.upper() in PRIORITY_FOLDERS:
                    look(Path(entry.path), f"{source}/", depth + 1)
                else:
                    found.append(IgnoredEntry(f"{source}/", "a folder: only the CRITICAL, "
                                              "HIGH, MEDIUM and LOW folders are read"))
            elif why is Ignored.NOT_MARKDOWN:
                hint = (": names end in .md, lower case" if entry.name.lower().endswith(".md")
                        else ": only .md files are tasks")
                found.append(IgnoredEntry(source, f"{why}{hint}"))

    look(queue_dir, "tasks/queue/", 0)
    return found
