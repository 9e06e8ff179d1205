"""Reviewing what an attempt left: approve it (and merge its branch into its base) or send
it back to the queue with the reviewer's words for the next attempt."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tri24es.errors import Tri24esError
from tri24es.machines import TaskState
from tri24es.paths import ProjectPaths
from tri24es.runtime.workspace import GitError, merge
from tri24es.services import Services


class ApprovalRefused(Tri24esError):
    """The approval could not be done (e.g. its merge conflicts): the task stays in review."""


@dataclass(frozen=True)
class Approval:
    merged_into: str | None
    merge_commit: str | None


def approve(services: Services, paths: ProjectPaths, task_id: str, *, by: str,
            merge_branch: bool) -> Approval:
    """Approve a task waiting for review: it is completed; with ``merge_branch``, its branch
    is merged into its base first (fast-forward when possible, else a merge commit). A merge
    that cannot be done is recorded (TaskMergeFailed) and leaves the task in review."""
    if services.task(task_id).state != TaskState.REVIEW:
        raise ApprovalRefused(f"task {task_id!r} is not waiting for review")
    if not merge_branch:
        services.approve(task_id, by=by)
        return Approval(None, None)
    results = services.history(task_id).results
    if not results:
        raise ApprovalRefused(f"task {task_id!r} has no result to merge (it ran without --repo)")
    result = results[-1]
    if result.base is None:
        raise ApprovalRefused(f"task {task_id!r}'s branch has no base branch to merge into")
    try:
        commit = merge(Path(result.repo), paths.workspaces, result.branch, result.base)
    except GitError as e:
        services.merge_failed(task_id, by=by, reason=str(e))
        raise ApprovalRefused(f"{e}; task {task_id!r} stays in review") from None
    services.approve(task_id, by=by, merged_into=result.base, merge_commit=commit)
    return Approval(result.base, commit)
