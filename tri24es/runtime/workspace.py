"""Agent workspaces: each attempt in a git worktree of its own, on the task's branch.

A fleet pointed at a repository (``--repo``) gives each attempt a worktree under
``workspaces/`` in the project, on the branch ``tri24es/<task id>`` made from the task's base
(its ``base:`` ref, else the repository's HEAD). The agent works there; the operator's own
checkout is never touched by an agent. When the attempt ends, whatever the agent left
uncommitted is committed to the branch under a message naming the task (never lost), the
result is measured against the base (files, insertions, deletions), and the worktree is
removed; the branch stays. A retry goes on from the branch (``retry_from: branch``, the
default) or starts over from the base (``retry_from: base``: the branch is moved, its old
head kept under ``refs/tri24es/<task>/attempt-<n>``).

Only ``git`` is run, never a shell, and nothing outside the workspaces folder is removed:
worktrees go with ``git worktree remove`` after their changes are committed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tri24es.errors import Tri24esError
from tri24es.files import private_folder
from tri24es.paths import safe_name

BRANCH_PREFIX = "tri24es/"
#: Commits tri24es makes on an agent's behalf (its leftovers) carry this identity.
IDENTITY = {"GIT_AUTHOR_NAME": "tri24es", "GIT_AUTHOR_EMAIL": "tri24es@localhost",
            "GIT_COMMITTER_NAME": "tri24es", "GIT_COMMITTER_EMAIL": "tri24es@localhost"}
_SHORTSTAT = re.compile(r"(\d+) files? changed(?:, (\d+) insertions?\(\+\))?"
                        r"(?:, (\d+) deletions?\(-\))?")


class GitError(Tri24esError):
    """A git command failed (the message is git's own, on one line)."""


def git(where: Path, *args: str, check: bool = True) -> str:
    """``git -C where args...``: its output, stripped; GitError naming what failed."""
    env = os.environ | {"GIT_TERMINAL_PROMPT": "0", "GIT_EDITOR": "true", "LC_ALL": "C"}
    done = subprocess.run(["git", "-C", str(where), *args], capture_output=True, text=True,
                          env=env, check=False)
    if check and done.returncode != 0:
        why = " ".join((done.stderr or done.stdout).split()) or f"exit {done.returncode}"
        raise GitError(f"git {' '.join(args[:3])}: {why}")
    return done.stdout.strip()


def repository(path: Path) -> Path:
    """The top folder of the git repository at ``path``; GitError if there is none."""
    if shutil.which("git") is None:
        raise GitError("--repo needs git on the PATH")
    try:
        top = git(path, "rev-parse", "--show-toplevel")
    except GitError as e:
        raise GitError(f"{path} is not a git repository ({e})") from None
    return Path(top)


def branch_for(task_id: str) -> str:
    """The task's branch: ``tri24es/<task id>`` (a digest where the id is no valid ref)."""
    name = BRANCH_PREFIX + task_id
    ok = subprocess.run(["git", "check-ref-format", f"refs/heads/{name}"],
                        capture_output=True, check=False).returncode == 0
    return name if ok else BRANCH_PREFIX + hashlib.sha256(task_id.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Result:
    head: str
    files_changed: int
    insertions: int
    deletions: int
    committed_leftovers: bool

    @property
    def changed(self) -> bool:
        return self.files_changed > 0


@dataclass(frozen=True)
class Workspace:
    repo: Path
    path: Path
    root: Path
    task_id: str
    attempt: int
    branch: str
    base_commit: str
    base_ref: str  # the base as given (a branch name: the HEAD's branch by default)

    @classmethod
    def prepare(cls, repo: Path, root: Path, task_id: str, attempt: int, *,
                base: str | None, from_branch: bool, base_commit: str | None = None,
                ) -> Workspace:
        """A worktree for this attempt. ``from_branch``: go on from the task's branch if it
        exists (with ``base_commit``, the base of the attempt that made it)."""
        private_folder(root, root.parent)
        path = root / f"{safe_name(task_id)}-{attempt}"
        if path.exists():  # left by a worker that died before it could clean up
            salvage(repo, root, path, f"leftovers of {task_id} attempt {attempt}")
        branch = branch_for(task_id)
        exists = bool(git(repo, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}",
                          check=False))
        ref = base or _current_branch(repo) or "HEAD"
        if exists and from_branch:
            start = base_commit or git(repo, "merge-base", branch, f"{ref}^{{commit}}")
            git(repo, "worktree", "add", str(path), branch)
            return cls(repo, path, root, task_id, attempt, branch, start, ref)
        start = git(repo, "rev-parse", "--verify", f"{ref}^{{commit}}")
        if exists:  # starting over: the last attempt's head stays reachable
            old = git(repo, "rev-parse", f"refs/heads/{branch}")
            git(repo, "update-ref", f"refs/tri24es/{safe_name(task_id)}/attempt-{attempt - 1}",
                old)
        git(repo, "worktree", "add", "-B", branch, str(path), start)
        return cls(repo, path, root, task_id, attempt, branch, start, ref)

    def finish(self, why: str) -> Result:
        """Commit what the agent left uncommitted (``why``: how the attempt ended, in the
        message) and measure the branch against the base."""
        leftovers = commit_leftovers(self.path, f"tri24es: {self.task_id} attempt "
                                                f"{self.attempt}: {why}")
        head = git(self.path, "rev-parse", "HEAD")
        stat = git(self.path, "diff", "--shortstat", f"{self.base_commit}..{head}")
        found = _SHORTSTAT.search(stat)
        files, plus, minus = (int(n or 0) for n in found.groups()) if found else (0, 0, 0)
        return Result(head, files, plus, minus, leftovers)

    def remove(self) -> None:
        remove_worktree(self.repo, self.root, self.path)


def _current_branch(repo: Path) -> str | None:
    """The branch the repository's HEAD is on (None when detached)."""
    return git(repo, "symbolic-ref", "--quiet", "--short", "HEAD", check=False) or None


def commit_leftovers(worktree: Path, message: str) -> bool:
    """Commit everything uncommitted in ``worktree`` (untracked files too, ignored ones not);
    whether there was anything."""
    git(worktree, "add", "-A")
    if not git(worktree, "status", "--porcelain", check=False):
        return False
    env = os.environ | IDENTITY | {"GIT_TERMINAL_PROMPT": "0"}
    done = subprocess.run(["git", "-C", str(worktree), "commit", "--no-verify", "-q", "-m",
                           message], capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise GitError(f"git commit: {' '.join(done.stderr.split())}")
    return True


def remove_worktree(repo: Path, root: Path, path: Path) -> None:
    """Remove a worktree of ours: only a folder inside the workspaces root, only through git
    (its changes must have been committed first)."""
    if not path.resolve().is_relative_to(root.resolve()) or path.resolve() == root.resolve():
        raise GitError(f"refusing to remove {path}: not a workspace under {root}")
    git(repo, "worktree", "remove", "--force", str(path), check=False)
    git(repo, "worktree", "prune", check=False)
    if path.exists():  # not a worktree git knows (any more): its own files only
        with contextlib.suppress(OSError):
            path.rmdir()


def salvage(repo: Path, root: Path, path: Path, message: str) -> bool:
    """Commit what a dead attempt left in ``path`` to its branch, then remove the worktree.
    Whether there was anything to commit."""
    kept = False
    if (path / ".git").exists():
        with contextlib.suppress(GitError):
            kept = commit_leftovers(path, f"tri24es: {message}")
    remove_worktree(repo, root, path)
    return kept


def ours(repo: Path, root: Path) -> list[tuple[Path, str | None]]:
    """The worktrees of ``repo`` under the workspaces root, with their branch."""
    found, path, branch = [], None, None
    for line in [*git(repo, "worktree", "list", "--porcelain").splitlines(), ""]:
        if line.startswith("worktree "):
            path, branch = Path(line[len("worktree "):]), None
        elif line.startswith("branch "):
            branch = line[len("branch refs/heads/"):]
        elif not line and path is not None:
            if path.resolve().is_relative_to(root.resolve()):
                found.append((path, branch))
            path = None
    return found


def merge(repo: Path, root: Path, branch: str, into: str) -> str:
    """Merge ``branch`` into the branch ``into``: fast-forward when it can, else a merge
    commit. Done in the operator's checkout when ``into`` is checked out there (which must be
    clean), else in a scratch worktree. The new head of ``into``; GitError on a conflict
    (the merge is undone)."""
    if not git(repo, "rev-parse", "--verify", "--quiet", f"refs/heads/{into}", check=False):
        raise GitError(f"{into!r} is not a branch of {repo}: nothing to merge into")
    target: Path | None = None
    current: Path | None = None
    for line in git(repo, "worktree", "list", "--porcelain").splitlines():
        if line.startswith("worktree "):
            current = Path(line[len("worktree "):])
        elif line == f"branch refs/heads/{into}":
            target = current
    scratch = None
    if target is None:
        scratch = root / f"merge-{safe_name(branch)}"
        if scratch.exists():
            remove_worktree(repo, root, scratch)
        git(repo, "worktree", "add", str(scratch), into)
        target = scratch
    elif git(target, "status", "--porcelain", "--untracked-files=no"):
        raise GitError(f"{target} has uncommitted changes on {into}: commit or stash them, "
                       "then approve again")
    try:
        env = os.environ | IDENTITY | {"GIT_TERMINAL_PROMPT": "0", "GIT_EDITOR": "true"}
        done = subprocess.run(["git", "-C", str(target), "merge", "--no-edit", branch],
                              capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0:
            conflicts = git(target, "diff", "--name-only", "--diff-filter=U", check=False)
            git(target, "merge", "--abort", check=False)
            raise GitError(f"merging {branch} into {into} conflicts"
                           + (f" in {', '.join(conflicts.split())}" if conflicts else
                              f": {' '.join(done.stderr.split())}"))
        return git(target, "rev-parse", "HEAD")
    finally:
        if scratch is not None:
            remove_worktree(repo, root, scratch)
