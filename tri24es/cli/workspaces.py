"""``tri24es workspaces``: the git worktrees attempts left behind, and removing them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from tri24es.cli.common import Context, JsonOption, context_of, print_json
from tri24es.errors import UsageError

workspaces_app = typer.Typer(
    help="List the worktrees of attempts (with --repo) and prune the ones left behind.",
    no_args_is_help=True,
)

RepoOption = Annotated[
    Path | None, typer.Option("--repo", help="The repository (env TRI24ES_REPO).")
]


def _entries(context: Context, repo: Path | None) -> tuple[Path, list[dict[str, Any]]]:
    from tri24es.projections.queue import QUEUE
    from tri24es.runtime.workspace import BRANCH_PREFIX, GitError, ours, repository

    where = repo or context.settings.repo
    if where is None:
        raise UsageError("give --repo PATH (or set TRI24ES_REPO)")
    try:
        top = repository(where.resolve())
        found = ours(top, context.settings.paths.workspaces)
    except GitError as e:
        raise UsageError(f"bad --repo: {e}") from None
    entries = []
    with context.reading() as (_, conn):
        for path, branch in found:
            task_id = branch[len(BRANCH_PREFIX):] if branch and \
                branch.startswith(BRANCH_PREFIX) else None
            attempt = path.name.rpartition("-")[2]
            row = None if task_id is None else QUEUE.load_by_id(conn, task_id)
            in_use = row is not None and row.state == "running" and str(row.attempt) == attempt
            entries.append({"path": str(path), "branch": branch, "task_id": task_id,
                            "attempt": int(attempt) if attempt.isdigit() else None,
                            "task_state": None if row is None else row.state,
                            "in_use": in_use})
    return top, entries


@workspaces_app.command("list")
def list_workspaces(ctx: typer.Context, repo: RepoOption = None,
                    as_json: JsonOption = False) -> None:
    """List the worktrees under workspaces/: branch, task, attempt, and whether its attempt
    still runs.

    Example: tri24es workspaces list --repo ~/src/app
    """
    _, entries = _entries(context_of(ctx), repo)
    if as_json:
        print_json(entries)
        return
    if not entries:
        typer.echo("no workspaces")
    for e in entries:
        typer.echo(f"{e['path']}  {e['branch'] or '-'}  task {e['task_id'] or '-'} "
                   f"({e['task_state'] or 'unknown'})  {'in use' if e['in_use'] else 'left'}")


@workspaces_app.command("prune")
def prune(ctx: typer.Context, repo: RepoOption = None, as_json: JsonOption = False) -> None:
    """Remove the worktrees whose attempt no longer runs, committing any uncommitted change
    in them to their branch first (nothing is lost; the branches stay).

    Example: tri24es workspaces prune --repo ~/src/app
    """
    from tri24es.runtime.workspace import salvage

    context = context_of(ctx)
    top, entries = _entries(context, repo)
    pruned = []
    for e in entries:
        if e["in_use"]:
            continue
        kept = salvage(top, context.settings.paths.workspaces, Path(e["path"]),
                       f"leftovers of {e['task_id']} attempt {e['attempt']} (pruned)")
        pruned.append({**e, "committed_leftovers": kept})
    if as_json:
        print_json(pruned)
        return
    for e in pruned:
        note = " (its uncommitted changes committed to its branch)" if \
            e["committed_leftovers"] else ""
        typer.echo(f"removed {e['path']}{note}")
    if not pruned:
        typer.echo("nothing to prune")
