"""Security properties, each on real files and real processes.

Covered elsewhere, and not repeated here:

- a symlinked database path is refused at open: ``tests/integration/test_sqlite_store.py::
  test_a_symlinked_database_path_is_refused`` and ``tests/e2e/test_cli_basics.py::
  test_symlinked_database_is_refused``; the store, -wal and -shm are 0600 in a 0700 folder
  under ``umask 0``: ``test_sqlite_store.py::test_a_new_store_is_private_to_its_owner``;
- the kill switch file is 0600: ``tests/integration/test_budget_watchdog.py``; the task file
  handed to an agent is 0600: ``tests/e2e/test_worker.py``;
- queue files: symlinks leading out of the queue are rejected (``tests/unit/test_taskfile.py``,
  ``tests/e2e/test_queue_watcher.py``), unsafe names are rejected (``test_taskfile.py::
  test_unsafe_ids_are_rejected``) and random names never move a file anywhere but
  ``tasks/rejected/`` (``tests/integration/test_queue_watcher_fuzz.py``).
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventlog import open_store
from tests.e2e.conftest import CLI, clean_env
from tri24es import events as ev
from tri24es.services import Services, TaskSpec

GROUP_OTHER = stat.S_IRWXG | stat.S_IRWXO


def cli(root: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], cwd=root, env=clean_env(root), capture_output=True,
                          text=True, timeout=timeout, check=False)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.args, result.stdout, result.stderr)
    return result.stdout


@pytest.fixture(params=[0o000, 0o022], ids=["umask000", "umask022"])
def permissive_umask(request: pytest.FixtureRequest) -> Iterator[None]:
    previous = os.umask(request.param)  # inherited by the CLI processes: 000 the worst case
    try:
        yield
    finally:
        os.umask(previous)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "fleet"
    root.mkdir()
    return root


def modes(root: Path) -> dict[str, int]:
    found = {}
    for path in root.rglob("*"):
        found[str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
    return found


@pytest.mark.usefixtures("permissive_umask")
def test_nothing_tri24es_creates_is_open_to_other_users(root: Path) -> None:
    """Under ``umask 0``: after init, and after a worker, a queue watcher and the budget
    watchdog (with its kill switch) have run, no file or folder is group/other-accessible —
    state/, the store, the task text handed to the agent, its log, the task folders."""
    ok(cli(root, "init"))
    after_init = modes(root)
    assert after_init["state"] == 0o700
    assert after_init["state/tri24es.db"] == 0o600
    assert {k: v & GROUP_OTHER for k, v in after_init.items()} == dict.fromkeys(after_init, 0)
    (root / "tasks" / "queue" / "HIGH").mkdir(mode=0o700)
    (root / "tasks" / "queue" / "HIGH" / "from-file.md").write_text("# From a file\n")
    (root / "tasks" / "queue" / "bad.md").write_bytes(b"")
    ok(cli(root, "queue-watcher", "--once"))
    ok(cli(root, "submit", "by hand", "--id", "by-hand"))
    agent = (f'{sys.executable} -c "import sys; sys.stdin.read(); '
             'print(\'{\\"cost_usd\\": 0.3}\')"')
    ok(cli(root, "worker", "--exit-when-idle", "--legacy-files", "--exec", agent))
    watchdog = subprocess.run([*CLI, "budget-watchdog", "--once"], cwd=root, timeout=60,
                              env=clean_env(root) | {"BUDGET_DAILY_LIMIT": "0.5"},
                              capture_output=True, text=True, check=False)
    assert watchdog.returncode == 1, watchdog.stderr  # the limit is reached: kill switch on
    ok(cli(root, "budget-watchdog", "--reset", "--reason", "test"))
    ok(cli(root, "submit", "under up", "--id", "under-up"))
    quiet = f'{sys.executable} -c "import sys; sys.stdin.read()"'  # spends nothing
    ok(cli(root, "up", "--workers", "1", "--no-watcher", "--exit-when-done", "--exec", quiet,
           timeout=300))
    ok(cli(root, "audit", "export", "-o", "audit.jsonl"))
    ok(cli(root, "audit", "export", "--format", "csv", "-o", "audit.csv"))
    with open_store(str(root / "state" / "tri24es.db")) as store:  # -wal and -shm exist now
        assert store.head() > 0
        after_run = modes(root)
    for expected in ("state/budget/kill_switch.active.", "state/tri24es.db-wal",
                     "state/tri24es.db-shm", "logs/tasks/by-hand/1.log",
                     "state/tasks/by-hand.md", "tasks/completed/from-file.md",
                     "tasks/rejected/bad.md.reason", "logs/up/budget-watchdog.log",
                     "logs/tasks/under-up/1.log", "audit.jsonl", "audit.csv",
                     "state/witness/key.pem", "state/witness/checkpoints.jsonl"):
        assert any(k.startswith(expected) for k in after_run), sorted(after_run)
    users_own = {"tasks/completed/from-file.md", "tasks/rejected/bad.md"}  # moved, as made
    not_private = {k: oct(v) for k, v in after_run.items() if k not in users_own
                   and v != (0o700 if (root / k).is_dir() else 0o600)}
    assert not_private == {}


MARKERS = ("dollar", "backtick", "semicolon", "pipe", "and", "newline")


def hostile_text(tmp: Path) -> str:
    """Shell syntax that, run by any shell, would create a marker file in ``tmp``."""
    m = {name: tmp / f"pwned-{name}" for name in MARKERS}
    return (f"# Fix $(touch {m['dollar']}) and `touch {m['backtick']}`\n"
            f"; touch {m['semicolon']}\n| touch {m['pipe']} && touch {m['and']}\n"
            f"'\"\n touch {m['newline']}\n$HOME ${{PATH}} %s %n \\x00 \u2603\n")


def test_task_text_never_reaches_a_shell(root: Path, tmp_path: Path) -> None:
    """A title and body full of shell syntax, run by a real worker with a real agent (``cat``
    via ``--exec``): no marker file appears, and the agent's stdin is the text, verbatim."""
    ok(cli(root, "init"))
    body = hostile_text(tmp_path)
    title = body.splitlines()[0][2:]
    task_file = tmp_path / "hostile.md"
    task_file.write_text(body)
    ok(cli(root, "submit", title, "--id", "hostile", "--file", str(task_file)))
    ok(cli(root, "submit", f"$(touch {tmp_path / 'pwned-title'}) `id`; rm -rf /nonexistent",
           "--id", "title-only"))
    ok(cli(root, "worker", "--exit-when-idle", "--exec", "cat"))
    assert sorted(p.name for p in tmp_path.glob("pwned-*")) == []
    assert (root / "logs" / "tasks" / "hostile" / "1.log").read_text() == body
    assert (root / "logs" / "tasks" / "title-only" / "1.log").read_text() == (
        f"# $(touch {tmp_path / 'pwned-title'}) `id`; rm -rf /nonexistent\n")


def test_submit_refuses_ids_that_are_not_plain_file_names(root: Path) -> None:
    ok(cli(root, "init"))
    for task_id in ["../../escape", "a/b", "..", "/tmp/abs", ".hidden", "x/../../y", "a\\b"]:
        result = cli(root, "submit", "a task", "--id", task_id)
        assert result.returncode == 2, task_id
        assert result.stderr.count("\n") == 1
        assert "is not safe" in result.stderr
    with open_store(str(root / "state" / "tri24es.db")) as store:
        assert store.head() == 0


def test_ids_with_separators_from_the_api_stay_inside_the_project(root: Path,
                                                                   tmp_path: Path) -> None:
    """Ids the CLI refuses can still be appended through the API (a script, an older
    version). A worker in --legacy-files mode runs them: every file it writes for them (the
    task text, the agent log, the moved queue file) lands inside the project, under a name
    of its own — ``a/b`` and ``a_b`` do not share files."""
    ok(cli(root, "init"))
    queue = root / "tasks" / "queue"
    ids = ["../../escape", "a/b", "a_b", "..", "x/../../../y", ".hidden"]
    with open_store(str(root / "state" / "tri24es.db")) as store:
        services = Services(store, actor="test")
        for n, task_id in enumerate(ids):
            (queue / f"file{n}.md").write_text(f"# task {n}\nbody of {task_id!r}\n")
            services.submit(TaskSpec(task_id, f"task {n}", body=f"body of {task_id!r}\n",
                                     source=f"tasks/queue/file{n}.md"))
    outside_before = {p for p in tmp_path.rglob("*") if root not in p.parents and p != root}
    ok(cli(root, "worker", "--exit-when-idle", "--legacy-files", "--exec", "cat"))
    outside_after = {p for p in tmp_path.rglob("*") if root not in p.parents and p != root}
    assert outside_after == outside_before
    assert not Path("/tmp/abs").exists()
    logs = sorted(p.relative_to(root / "logs" / "tasks").as_posix()
                  for p in (root / "logs" / "tasks").rglob("*.log"))
    assert len(logs) == len(ids), logs  # one folder per id: no two ids share one
    assert all("/" not in name.removesuffix("/1.log") for name in logs)
    for task_id in ids:
        with open_store(str(root / "state" / "tri24es.db")) as store:
            states = [type(e.event) for e in ev.decode_all(store.read_stream(f"task-{task_id}"))]
        assert states[-1] is ev.TaskCompleted, (task_id, states)
    texts = {p.read_text() for p in (root / "logs" / "tasks").rglob("1.log")}
    assert texts == {f"body of {task_id!r}\n" for task_id in ids}
    assert sorted(p.name for p in (root / "tasks" / "completed").iterdir()) == sorted(
        ["%2E.%2F..%2Fescape.md", "a%2Fb.md", "a_b.md", "%2E..md", "x%2F..%2F..%2F..%2Fy.md",
         "%2Ehidden.md"])
    assert list(queue.glob("*.md")) == []


@pytest.fixture
def other_user() -> Iterator[int]:
    """A real second user on this machine (made for the test, removed after): the uid."""
    if os.geteuid() != 0:
        pytest.skip("making a second user takes root (useradd); run as root to play it")
    if shutil.which("useradd") is None:
        pytest.skip("no useradd on this machine to make a second user with")
    name = f"t24x{secrets.token_hex(4)}"
    subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                   check=True, capture_output=True, timeout=60)
    try:
        yield pwd.getpwnam(name).pw_uid
    finally:
        subprocess.run(["userdel", name], check=False, capture_output=True, timeout=60)


def one_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    errors = [line for line in result.stderr.splitlines() if line.startswith("tri24es: error")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return errors[0]


def test_another_users_folder_or_file_is_never_written(root: Path, other_user: int) -> None:
    """What an attacker who shared the machine tried (issue 15): their own folder in place of
    ``logs/tasks``, their own file where an agent's log goes, ``logs/`` left writable to all
    by an older version, their folder in place of ``logs/up``. Each is refused with one
    line, before a byte is written; the task goes back to the queue."""
    ok(cli(root, "init"))
    ok(cli(root, "submit", "deploy", "--id", "deploy"))
    agent = f'{sys.executable} -c "import sys; print(\'secret-token\', sys.stdin.read())"'
    worker = ("worker", "--exit-when-idle", "--max-tasks", "1", "--exec", agent)

    theirs = root / "logs" / "tasks"
    (root / "logs").mkdir(mode=0o700)
    theirs.mkdir(mode=0o777)
    os.chown(theirs, other_user, other_user)
    (theirs / "deploy").mkdir(mode=0o777)
    os.chown(theirs / "deploy", other_user, other_user)
    planted = theirs / "deploy" / "1.log"
    planted.write_bytes(b"")
    planted.chmod(0o666)
    os.chown(planted, other_user, other_user)
    line = one_error(cli(root, *worker))
    assert f"refusing to use {theirs}: the folder belongs to user id {other_user}" in line
    assert planted.read_bytes() == b""
    with open_store(str(root / "state" / "tri24es.db")) as store:
        assert Services(store).task("deploy").state == "queued"  # not the task's fault

    # Their file in a folder of ours: refused by the file's owner.
    shutil.rmtree(theirs)
    (theirs / "deploy").mkdir(mode=0o700, parents=True)
    theirs.chmod(0o700)
    planted = theirs / "deploy" / "2.log"
    planted.write_bytes(b"")
    os.chown(planted, other_user, other_user)
    line = one_error(cli(root, *worker))
    assert f"refusing to use {planted}: the file belongs to user id {other_user}" in line
    assert planted.read_bytes() == b""

    # logs/ writable by everyone (made so by an older version under umask 0): not trusted.
    planted.unlink()
    (root / "logs").chmod(0o777)
    line = one_error(cli(root, *worker))
    assert f"refusing to use {root / 'logs'}: the folder is writable by others" in line
    assert not (theirs / "deploy" / "3.log").exists()

    # up checks its own log folder before it starts anything.
    (root / "logs").chmod(0o700)
    (root / "logs" / "up").mkdir(mode=0o755)
    os.chown(root / "logs" / "up", other_user, other_user)
    line = one_error(cli(root, "up", "--workers", "1", "--exit-when-done", "--exec", agent))
    assert f"refusing to use {root / 'logs' / 'up'}: the folder belongs to user id" in line
    assert list((root / "logs" / "up").iterdir()) == []

    # An export named onto their file (e.g. in /tmp): refused, and their file left whole.
    shared = root.parent / "shared"
    shared.mkdir(mode=0o1777)
    shared.chmod(0o1777)
    their_file = shared / "audit.jsonl"
    their_file.write_bytes(b"theirs\n")
    their_file.chmod(0o666)
    os.chown(their_file, other_user, other_user)
    line = one_error(cli(root, "audit", "export", "-o", str(their_file)))
    assert f"refusing to use {their_file}: the file belongs to user id {other_user}" in line
    assert their_file.read_bytes() == b"theirs\n"

    # Put right, the same worker runs the task, and its log is ours alone.
    shutil.rmtree(root / "logs")
    ok(cli(root, *worker))
    written = root / "logs" / "tasks" / "deploy" / "4.log"
    assert b"secret-token" in written.read_bytes()
    assert stat.S_IMODE(written.stat().st_mode) == 0o600


def test_a_link_in_place_of_a_log_is_not_followed(root: Path, tmp_path: Path) -> None:
    ok(cli(root, "init"))
    ok(cli(root, "submit", "deploy", "--id", "deploy"))
    elsewhere = tmp_path / "elsewhere.log"
    elsewhere.write_bytes(b"")
    (root / "logs" / "tasks" / "deploy").mkdir(mode=0o700, parents=True)
    for folder in (root / "logs", root / "logs" / "tasks"):
        folder.chmod(0o700)
    (root / "logs" / "tasks" / "deploy" / "1.log").symlink_to(elsewhere)
    agent = f'{sys.executable} -c "import sys; print(sys.stdin.read())"'
    line = one_error(cli(root, "worker", "--exit-when-idle", "--max-tasks", "1", "--exec", agent))
    assert "1.log: it is a symbolic link" in line
    assert elsewhere.read_bytes() == b""
