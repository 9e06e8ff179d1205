"""Queue file rules: names, priorities, titles, field lines, and every kind of bad file."""

from __future__ import annotations

import hashlib
import os
from decimal import Decimal
from pathlib import Path, PurePosixPath

import pytest

from tri24es.events import NO_PROGRESS_OFF, Backoff, NoProgress
from tri24es.inputs.taskfile import (
    Ignored,
    Location,
    Rejection,
    Unreadable,
    locate,
    parse_task_file,
    read_queue_file,
)
from tri24es.names import Priority
from tri24es.services import TaskSpec


def location(relative: str) -> Location:
    found = locate(PurePosixPath(relative))
    assert isinstance(found, Location), found
    return found


def spec(relative: str, text: str = "# A task\n") -> TaskSpec:
    result = parse_task_file(location(relative), text.encode(), source=f"tasks/queue/{relative}")
    assert isinstance(result, TaskSpec), result
    return result


def rejection(relative: str, data: bytes, max_bytes: int = 1024) -> str:
    result = parse_task_file(location(relative), data, max_bytes=max_bytes)
    assert isinstance(result, Rejection), result
    return result.reason


@pytest.mark.parametrize(
    ("relative", "task_id", "priority"),
    [
        ("fix.md", "fix", Priority.MEDIUM),
        ("CRITICAL/fix.md", "fix", Priority.CRITICAL),
        ("HIGH/fix.md", "fix", Priority.HIGH),
        ("MEDIUM/fix.md", "fix", Priority.MEDIUM),
        ("LOW/fix.md", "fix", Priority.LOW),
        ("critical/fix.md", "fix", Priority.CRITICAL),
        ("High/fix.md", "fix", Priority.HIGH),
        ("low/fix.md", "fix", Priority.LOW),
        ("CRITICAL_fix.md", "CRITICAL_fix", Priority.CRITICAL),
        ("CRITICAL-fix.md", "CRITICAL-fix", Priority.CRITICAL),
        ("HIGH_fix.md", "HIGH_fix", Priority.HIGH),
        ("LOW-fix.md", "LOW-fix", Priority.LOW),
        ("MEDIUM_fix.md", "MEDIUM_fix", Priority.MEDIUM),
        ("LOW/CRITICAL-x.md", "CRITICAL-x", Priority.CRITICAL),
        ("CRITICAL/LOW_x.md", "LOW_x", Priority.LOW),
        ("high/MEDIUM-x.md", "MEDIUM-x", Priority.MEDIUM),
        # The prefix is upper case (as in TRI-24) and needs its separator.
        ("critical-fix.md", "critical-fix", Priority.MEDIUM),
        ("HIGHLY.md", "HIGHLY", Priority.MEDIUM),
        ("LOW/HIGHfix.md", "HIGHfix", Priority.LOW),
    ],
)
def test_id_and_priority_from_the_layout(relative: str, task_id: str, priority: Priority) -> None:
    task = spec(relative)
    assert (task.task_id, task.priority) == (task_id, priority)
    assert task.source == f"tasks/queue/{relative}"


@pytest.mark.parametrize(
    ("name", "why"),
    [
        (".fix.md", Ignored.HIDDEN),
        ("..md", Ignored.HIDDEN),
        (".md", Ignored.HIDDEN),
        ("fix.md~", Ignored.EDITOR_TEMP),
        (".fix.md.swp", Ignored.HIDDEN),
        ("fix.md.swp", Ignored.EDITOR_TEMP),
        ("fix.md.swx", Ignored.EDITOR_TEMP),
        ("fix.md.tmp", Ignored.EDITOR_TEMP),
        ("#fix.md#", Ignored.EDITOR_TEMP),
        ("fix.txt", Ignored.NOT_MARKDOWN),
        ("fix.MD", Ignored.NOT_MARKDOWN),
        ("fix", Ignored.NOT_MARKDOWN),
        ("4913", Ignored.NOT_MARKDOWN),
    ],
)
def test_editor_and_hidden_files_are_ignored(name: str, why: Ignored) -> None:
    assert locate(PurePosixPath(name)) == why
    assert locate(PurePosixPath("HIGH", name)) == why


@pytest.mark.parametrize("relative", ["urgent/fix.md", "HIGH/sub/fix.md", "a/b/c.md"])
def test_only_the_queue_folder_and_priority_folders_count(relative: str) -> None:
    assert locate(PurePosixPath(relative)) == Ignored.NOT_A_QUEUE_FOLDER


@pytest.mark.parametrize(
    ("text", "title"),
    [
        ("# Fix the login page\nbody\n", "Fix the login page"),
        ("intro\n# Later heading\n", "Later heading"),
        ("## Sub heading\n#Nospace\nbody\n", "fix"),
        ("#   Padded  \n", "Padded"),
        ("# \nbody\n", "fix"),
        ("\ufeff# With a BOM\n", "With a BOM"),
        ("```\n# not a title\n```\n# Real title\n", "Real title"),
        ("just text\n", "fix"),
    ],
)
def test_title_is_the_first_heading_else_the_id(text: str, title: str) -> None:
    assert spec("fix.md", text).title == title


@pytest.mark.parametrize(
    ("text", "fields"),
    [
        ("# T\ntype: bugfix\n", {"type": "bugfix"}),
        ("# T\n## Type: feature\n", {"type": "feature"}),
        ("# T\n##Type:feature\n", {"type": "feature"}),
        ("# T\nTYPE:  spaced  \n", {"type": "spaced"}),
        ("# T\nshard: web\n", {"shard": "web"}),
        ("# T\nlane: api\n", {"shard": "api"}),
        ("# T\nmodel: claude\n", {"model": "claude"}),
        ("# T\nAssigned_Model: codex\n", {"model": "codex"}),
        ("# T\nmodel: first\nmodel: second\n", {"model": "first"}),
        ("# T\nlane: a\nshard: b\n", {"shard": "a"}),
        ("# T\nmodel:\n", {"model": None}),
        ("# T\n  model: indented\n", {"model": None}),
        ("# T\n```yaml\nmodel: in-code\n```\n", {"model": None}),
        ("# T\nmax_retries: 0\n", {"max_retries": 0}),
        ("# T\nMAX_RETRIES: 7\n", {"max_retries": 7}),
        ("# T\n", {"max_retries": 3, "max_budget_usd": None}),
        ("# T\nmax_budget_usd: 2.50\n", {"max_budget_usd": Decimal("2.50")}),
        ("# T\nmax_budget_usd: $10\n", {"max_budget_usd": Decimal("10")}),
        ("# T\nmax_budget_usd: 0\n", {"max_budget_usd": Decimal("0")}),
        ("# T\nmax_budget_usd:\n", {"max_budget_usd": None}),
        ("# T\nretry_backoff: 10s..5m\n", {"retry_backoff": Backoff(base_s=10, cap_s=300)}),
        ("# T\nretry_backoff: 0\n", {"retry_backoff": Backoff(base_s=0, cap_s=0)}),
        ("# T\n", {"retry_backoff": None}),
        ("# T\nno_progress: $2 10m\n", {"no_progress": NoProgress(usd=Decimal(2), after_s=600)}),
        ("# T\nNO_PROGRESS: 0.5, 90s\n",
         {"no_progress": NoProgress(usd=Decimal("0.5"), after_s=90)}),
        ("# T\nno_progress: off\n", {"no_progress": NO_PROGRESS_OFF}),
        ("# T\n", {"no_progress": None}),
    ],
)
def test_field_lines(text: str, fields: dict[str, object]) -> None:
    task = spec("fix.md", text)
    assert {key: getattr(task, key) for key in fields} == fields


def test_body_and_sha256_are_the_whole_file() -> None:
    text = "# Fix\r\nmodel: claude\r\n\r\nDo it.\n"
    task = spec("HIGH/fix.md", text)
    assert task.body == text
    assert task.body_sha256 == hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("fix.md", b"", "empty file"),
        ("fix.md", b" \n\t\r\n", "empty file"),
        ("fix.md", b"\xff\xfe# x", "not UTF-8 text (byte 0: b'\\xff')"),
        ("fix.md", b"# ok\n\xc3", "not UTF-8 text (byte 5: b'\\xc3')"),
        ("fix.md", b"# x\x00y", "contains NUL bytes (a binary file?)"),
        ("fix.md", b"x" * 1025, "file is larger than 1024 bytes"),
        ("fix.md", b"# T\nmax_retries: -1\n",
         "bad max_retries '-1': an integer from 0 to 100"),
        ("fix.md", b"# T\nmax_retries: 101\n",
         "bad max_retries '101': an integer from 0 to 100"),
        ("fix.md", b"# T\nmax_retries: two\n",
         "bad max_retries 'two': an integer from 0 to 100"),
        ("fix.md", b"# T\nmax_budget_usd: -1\n",
         "bad max_budget_usd '-1': a non-negative amount such as 2.50 or $2.50 "
         "(at most 10 digits before and 10 after the point)"),
        ("fix.md", b"# T\nmax_budget_usd: 1e3\n",
         "bad max_budget_usd '1e3': a non-negative amount such as 2.50 or $2.50 "
         "(at most 10 digits before and 10 after the point)"),
        ("fix.md", b"# T\nmax_budget_usd: NaN\n",
         "bad max_budget_usd 'NaN': a non-negative amount such as 2.50 or $2.50 "
         "(at most 10 digits before and 10 after the point)"),
        ("fix.md", b"# T\nmax_budget_usd: 0.12345678901\n",
         "bad max_budget_usd '0.12345678901': a non-negative amount such as 2.50 or $2.50 "
         "(at most 10 digits before and 10 after the point)"),
        ("fix.md", b"# T\nretry_backoff: soon\n",
         "bad retry backoff 'soon': expected e.g. 5s..10m, 30s or 0"),
        ("fix.md", b"# T\nno_progress: $2\n",
         "bad no-progress rule '$2': expected dollars and a time, e.g. '$2 10m', or off"),
        ("fix.md", b"# T\nmodel: " + b"m" * 201 + b"\n", "model is longer than 200 characters"),
    ],
)
def test_bad_content_is_rejected_with_its_reason(name: str, data: bytes, reason: str) -> None:
    assert rejection(name, data) == reason


UNSAFE = ("is not safe: use letters, digits, '.', '_' and '-', not starting with '.' or '-', "
          "without '..'")


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("fix login.md", f"task id 'fix login' {UNSAFE}"),
        ("a..b.md", f"task id 'a..b' {UNSAFE}"),
        ("back\\slash.md", f"task id 'back\\\\slash' {UNSAFE}"),
        ("new\nline.md", f"task id 'new\\\\nline' {UNSAFE}"),
        ("tab\there.md", f"task id 'tab\\\\there' {UNSAFE}"),
        ("-dash.md", f"task id '-dash' {UNSAFE}"),
        ("caf\u00e9.md", f"task id 'caf\u00e9' {UNSAFE}"),
        ("bad\udcffbyte.md", f"task id 'bad\\\\udcffbyte' {UNSAFE}"),
        ("x" * 201 + ".md", "task id is longer than 200 characters"),
    ],
)
def test_unsafe_ids_are_rejected(name: str, reason: str) -> None:
    result = parse_task_file(location(name), b"# fine\n")
    assert isinstance(result, Rejection)
    assert result.reason == reason
    assert result.task_id.isprintable()


@pytest.mark.parametrize("name", ["x" * 200 + ".md", "_x.md", "a.b-c_d.md", "9.md"])
def test_safe_ids(name: str) -> None:
    assert spec(name).task_id == name[:-3]


# --- reading files (the one function here that touches the disk) ------------------------


@pytest.fixture
def queue(tmp_path: Path) -> Path:
    (tmp_path / "queue" / "HIGH").mkdir(parents=True)
    return tmp_path / "queue"


def unreadable(path: Path, queue: Path, max_bytes: int = 1024) -> str:
    with pytest.raises(Unreadable) as caught:
        read_queue_file(path, queue, max_bytes)
    return str(caught.value)


def test_reads_a_file_and_a_symlink_inside_the_queue(queue: Path) -> None:
    (queue / "HIGH" / "real.md").write_bytes(b"# real\n")
    (queue / "alias.md").symlink_to(queue / "HIGH" / "real.md")
    assert read_queue_file(queue / "HIGH" / "real.md", queue) == b"# real\n"
    assert read_queue_file(queue / "alias.md", queue) == b"# real\n"


def test_symlink_outside_the_queue_is_refused(queue: Path, tmp_path: Path) -> None:
    (tmp_path / "secret.md").write_text("# secret\n")
    (queue / "leak.md").symlink_to(tmp_path / "secret.md")
    assert unreadable(queue / "leak.md", queue).startswith(
        "symlink leading outside the queue folder ("
    )


def test_dangling_symlink_is_unreadable(queue: Path) -> None:
    (queue / "gone.md").symlink_to(queue / "nowhere.md")
    assert unreadable(queue / "gone.md", queue) == "unreadable: No such file or directory"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_file_without_read_permission_is_unreadable(queue: Path) -> None:
    (queue / "locked.md").write_text("# locked\n")
    (queue / "locked.md").chmod(0)
    assert unreadable(queue / "locked.md", queue) == "unreadable: Permission denied"


def test_fifo_and_directory_are_not_regular_files(queue: Path) -> None:
    os.mkfifo(queue / "pipe.md")
    (queue / "dir").mkdir()
    (queue / "dir.md").symlink_to(queue / "dir")
    assert unreadable(queue / "pipe.md", queue) == "not a regular file"
    assert unreadable(queue / "dir.md", queue) == "not a regular file"


def test_large_file_is_refused_before_it_is_read(queue: Path) -> None:
    (queue / "big.md").write_bytes(b"x" * 1025)
    assert unreadable(queue / "big.md", queue) == "file is larger than 1024 bytes"
    (queue / "fits.md").write_bytes(b"x" * 1024)
    assert read_queue_file(queue / "fits.md", queue) == b"x" * 1024
