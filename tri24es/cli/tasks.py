"""``tri24es submit`` and ``tri24es tasks``: put work in the queue, look at it, steer it."""

from __future__ import annotations

import hashlib
import re
import secrets
import sys
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tri24es.cli.common import (
    JsonOption,
    context_of,
    output_gone,
    parse_priority,
    parse_task_state,
    print_json,
    print_table,
    shown,
)
from tri24es.errors import UsageError

if TYPE_CHECKING:
    from tri24es.projections.tables.queue import TaskRow

tasks_app = typer.Typer(
    help="List, show, cancel and retry tasks.", no_args_is_help=True
)

SLUG_LENGTH = 40


def slug(title: str) -> str:
    """``"Fix the login page!"`` -> ``"fix-the-login-page"`` (empty titles give ``"task"``)."""
    words = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
    return words[:SLUG_LENGTH].rstrip("-") or "task"


def default_task_id(title: str) -> str:
    return f"{slug(title)}-{secrets.token_hex(3)}"


def _title_of(body: str, fallback: str) -> str:
    for line in body.splitlines():
        if line.startswith("# "):
            return line[2:].strip() or fallback
    return fallback


def _not_before(at: str | None, in_: str | None) -> datetime | None:
    """``--at`` or ``--in`` as the time a task may first be claimed."""
    from tri24es.scheduling import parse_when
    from tri24es.timeutil import from_us, now_us

    if at is not None and in_ is not None:
        raise ValueError("give --at or --in, not both")
    if in_ is not None and not in_.strip()[:1].isdigit():
        raise ValueError(f"bad --in {in_!r}: expected a delay such as 10m or 1h30m")
    when = at if at is not None else in_
    return None if when is None else from_us(parse_when(when, now_us()))


def submit(
    ctx: typer.Context,
    title: Annotated[
        str | None, typer.Argument(help="What the task is (default with --file: its # heading).")
    ] = None,
    task_id: Annotated[
        str | None, typer.Option("--id", help="Task id (default: file stem, or title slug).")
    ] = None,
    priority: Annotated[
        str, typer.Option("--priority", help="CRITICAL, HIGH, MEDIUM or LOW.")
    ] = "MEDIUM",
    shard: Annotated[str | None, typer.Option("--shard", help="Only for this shard.")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Only for this model.")] = None,
    type_: Annotated[str | None, typer.Option("--type", help="Only for this type.")] = None,
    file: Annotated[
        Path | None, typer.Option("--file", help="Markdown file holding the task's body.")
    ] = None,
    max_retries: Annotated[
        int, typer.Option("--max-retries", help="Retries after the first attempt (>= 0).")
    ] = 3,
    command: Annotated[
        str | None, typer.Option("--command", help="This task's agent command (split like a "
                                 "shell, never run by one), for workers without --exec.")
    ] = None,
    max_budget: Annotated[
        str | None, typer.Option("--max-budget", help="USD the task may spend over all its "
                                 "attempts.")
    ] = None,
    agent: Annotated[
        str | None, typer.Option("--agent", help="claude, codex or gemini: run it with that "
                                 "agent's command line (workers without --exec).")
    ] = None,
    base: Annotated[
        str | None, typer.Option("--base", help="With --repo workers: the ref its branch "
                                 "starts from (default: the repository's HEAD).")
    ] = None,
    review: Annotated[
        bool, typer.Option("--review", help="A finished attempt waits for review.")
    ] = False,
    require_changes: Annotated[
        bool, typer.Option("--require-changes", help="An attempt that changed nothing fails.")
    ] = False,
    resume: Annotated[
        bool, typer.Option("--resume", help="A retry resumes the agent's session (presets).")
    ] = False,
    retry_from: Annotated[
        str, typer.Option("--retry-from", help="branch (go on from the last attempt's branch) "
                          "or base (start over).")
    ] = "branch",
    retry_backoff: Annotated[
        str | None, typer.Option("--retry-backoff", help="Wait before a retry: BASE..CAP "
                                 "(e.g. 10s..5m, doubling per failure, jittered), BASE, or 0 "
                                 "(default TRI24ES_RETRY_BACKOFF).")
    ] = None,
    at: Annotated[
        str | None, typer.Option("--at", help="Not claimed before this time (ISO-8601, naive "
                                 "means UTC).")
    ] = None,
    in_: Annotated[
        str | None, typer.Option("--in", help="Not claimed before this delay from now (e.g. "
                                 "10m, 1h30m).")
    ] = None,
    after: Annotated[
        list[str] | None, typer.Option("--after", help="Claimed only once this task has "
                                       "completed (repeatable).")
    ] = None,
    no_progress: Annotated[
        str | None, typer.Option("--no-progress", help="'USD TIME' (e.g. '$2 10m'): an "
                                 "attempt that spent that much with no new output or file "
                                 "change for that long fails; off: none (default "
                                 "TRI24ES_NO_PROGRESS).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Submit a task to the queue; idempotent by id (a known id is left as it is).

    Example: tri24es submit "Fix the login page" --priority HIGH --model claude
    """
    from tri24es.agents import check_agent
    from tri24es.cli.render import estimate_dict, estimate_line, task_dict
    from tri24es.inputs.taskfile import (
        id_problem,
        parse_after,
        parse_budget,
        parse_command,
        parse_retry_from,
    )
    from tri24es.scheduling import parse_backoff, parse_no_progress
    from tri24es.services import TaskSpec

    rank = parse_priority(priority)
    if max_retries < 0:
        raise UsageError(f"bad --max-retries {max_retries}: must be >= 0")
    body, sha, source = "", None, None
    if file is not None:
        from tri24es.files import read_regular

        try:
            raw = read_regular(file)  # a FIFO or a device (/dev/zero): refused, never read
            body = raw.decode()
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"cannot read --file {str(file)!r}: "
                             f"{e.strerror if isinstance(e, OSError) else e}") from e
        sha, source = hashlib.sha256(raw).hexdigest(), str(file)
        title = title or _title_of(body, file.stem)
        task_id = task_id or file.stem
    if not title or not title.strip():
        raise UsageError("a task needs a TITLE (or --file)")
    task_id = task_id or default_task_id(title)
    problem = id_problem(task_id)  # the queue folder's rule: an id is also a file name
    if problem is not None:
        raise UsageError(f"{problem}: nothing submitted")
    try:
        argv = parse_command(command)
        budget = None if max_budget is None else parse_budget(max_budget)
        since = parse_retry_from(retry_from)
        backoff = None if retry_backoff is None else parse_backoff(retry_backoff)
        not_before = _not_before(at, in_)
        waits_for = parse_after(" ".join(after or ()))
        rule = None if no_progress is None else parse_no_progress(no_progress)
    except ValueError as e:
        raise UsageError(f"{e}: nothing submitted") from None
    spec = TaskSpec(
        task_id=task_id, title=title, priority=rank, body=body, shard=shard, model=model,
        type=type_, max_retries=max_retries, source=source, body_sha256=sha, command=argv,
        max_budget_usd=budget, agent=check_agent(agent), base=base, review=review,
        require_changes=require_changes, resume=resume, retry_from=since,
        retry_backoff=backoff, not_before=not_before, after=waits_for, no_progress=rule,
    )
    from tri24es.services import DependencyError

    with context_of(ctx).services() as services:
        try:
            row, new = services.submit(spec)
        except DependencyError as e:
            raise DependencyError(f"{e}: nothing submitted") from None
        found = services.estimate(row.type, row.model)  # what similar tasks cost and took
    if as_json:
        print_json({"task_id": row.task_id, "new": new, **task_dict(row),
                    "estimate": estimate_dict(found)})
        return
    if new:
        typer.echo(f"submitted {row.task_id}")
    else:
        typer.echo(f"{row.task_id} already submitted ({row.state}): unchanged")
    if found is not None:
        typer.echo(estimate_line(row.type, row.model, found))


@tasks_app.command("list")
def list_tasks(
    ctx: typer.Context,
    state: Annotated[str | None, typer.Option("--state", help="Only tasks in this state.")] = None,
    limit: Annotated[int, typer.Option(
        "--limit", min=0, help="Show at most this many (0: all).")] = 200,
    as_json: JsonOption = False,
) -> None:
    """List tasks in claim order: CRITICAL first, then oldest first.

    Example: tri24es tasks list --state queued --limit 20 --json
    """
    from tri24es.budget import BudgetLimits, dollars
    from tri24es.cli.render import priority_name, task_dict
    from tri24es.projections import reads
    from tri24es.projections.tables.money import from_units

    wanted = None if state is None else parse_task_state(state).value
    context = context_of(ctx)
    with context.reading() as (_, conn):
        rows = reads.tasks(conn, wanted, limit or None)
        more = reads.task_total(conn, wanted) - len(rows) if limit else 0
        waits = reads.waiting(conn, None, BudgetLimits.from_settings(context.settings)) \
            if wanted in (None, "queued") else []
    if more > 0:  # said on stderr: the JSON and the lines stay what they are
        typer.echo(f"tri24es: note: {more} more not shown (--limit 0 shows all)", err=True)
    if as_json:
        print_json([task_dict(row) for row in rows])
        return
    for wait in waits:  # no silent waiting: say why queued tasks are not being taken
        typer.echo(f"tri24es: note: {wait}", err=True)
    def also(row: TaskRow) -> str:
        """What a queued task waits for beside a worker: its time, its dependencies."""
        if row.state != "queued":
            return ""
        d = task_dict(row)
        later = f" (not before {d['not_before']})" if d["not_before"] else ""
        if row.blocked or row.deps_open:
            later += f" (blocked: {row.blocked})" if row.blocked else \
                f" (after {', '.join(row.after)})"
        return later

    print_table(
        ("TASK", "STATE", "PRIORITY", "TRIES", "RETRIES", "SPENT", "WORKER", "TITLE"),
        ((row.task_id, row.state, priority_name(row.priority), row.attempt,
          f"{row.retries_used}/{row.max_retries}", dollars(from_units(row.spent_units)),
          row.worker, row.title + also(row)) for row in rows),
        squeeze="TITLE")


@tasks_app.command("show")
def show(
    ctx: typer.Context,
    task_id: Annotated[str, typer.Argument(help="The task's id.")],
    as_json: JsonOption = False,
) -> None:
    """Show a task's row and its full event history.

    Example: tri24es tasks show fix-login-3f9a2c
    """
    import orjson

    from tri24es.budget import dollars
    from tri24es.cli.render import (
        attempts,
        decode_problem,
        estimate_dict,
        estimate_line,
        history_entry,
        no_progress_of,
        task_dict,
    )
    from tri24es.names import task_stream
    from tri24es.projections import reads
    from tri24es.projections.queue import QUEUE
    from tri24es.services import NotFound

    context = context_of(ctx)
    with context.reading() as (store, conn):
        row = QUEUE.load_by_id(conn, task_id)
        history, events = [], []
        for event in store.read_stream(task_stream(task_id)):
            problem = decode_problem(event)
            if problem is None:
                history.append(history_entry(event))
                events.append(event)
            else:  # a corrupt or unknown event: reported, the rest of the history shown
                typer.echo(f"tri24es: warning: skipped {problem}", err=True)
        tried = attempts(conn, events, context.settings.paths)
        found = None if row is None else reads.estimate(conn, row.type, row.model)
    if row is None and not history:
        raise NotFound(f"no task {task_id!r}")
    task = None if row is None else task_dict(row)
    rule = no_progress_of(events)
    if as_json:
        print_json({"task": task, "no_progress": rule, "attempts": tried, "history": history,
                    "estimate": estimate_dict(found)})
        return
    if task is not None:
        for key, value in task.items():
            if key.endswith("_usd") and value is not None:
                value = dollars(Decimal(value))
            typer.echo(shown(f"{key + ':':<20}{'' if value is None else value}", newlines=False))
        fleets = "the fleet's (TRI24ES_NO_PROGRESS)"
        typer.echo(f"{'no_progress:':<20}{rule or fleets}")
    # The text as it is now: the submission's, or the last edit of its queue file.
    bodies = [orjson.loads(e.data).get("body") for e in events
              if e.type in ("TaskSubmitted", "TaskUpdated")]
    body = next((text for text in reversed(bodies) if text is not None), None)
    if body:  # as written, on lines of its own: not squeezed into a history line
        typer.echo("body:")
        for line in body.splitlines():
            typer.echo(shown(f"    {line}", newlines=False) if line.strip() else "")
    for a in tried:
        result = a["result"]
        made = "" if result is None else (
            f"  {result['branch']} {result['head_commit'][:12]} {result['files_changed']} files "
            f"+{result['insertions']} -{result['deletions']}")
        typer.echo(shown(f"attempt {a['attempt']}: {a['outcome'] or 'running'} by {a['worker']}, "
                         f"{a['seconds']} s, {dollars(Decimal(a['spent_usd']))}{made}  "
                         f"log {a['log']}", newlines=False))
    if row is not None and found is not None:
        typer.echo(estimate_line(row.type, row.model, found))
    typer.echo("history:")
    for h in history:
        fields = " ".join(f"{k}={_one_line(v)}" for k, v in h["fields"].items() if k != "body")
        typer.echo(shown(f"{h['position']:>7}  {h['time']}  {h['type']:<16} {h['who'] or '-'}  "
                         f"{fields}", newlines=False))


def _one_line(value: object) -> str:
    """A field's value on one line: a newline shown as ``\\n``, as in the JSON."""
    return str(value).replace("\r", "\\r").replace("\n", "\\n")


@tasks_app.command("update")
def update(
    ctx: typer.Context,
    task_id: Annotated[str, typer.Argument(help="The task's id.")],
    priority: Annotated[str | None, typer.Option("--priority", help="CRITICAL, HIGH, MEDIUM "
                                                 "or LOW.")] = None,
    title: Annotated[str | None, typer.Option("--title", help="A new title.")] = None,
    shard: Annotated[str | None, typer.Option("--shard", help="Only for this shard ('' for "
                                              "any).")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Only for this model ('' for "
                                              "any).")] = None,
    type_: Annotated[str | None, typer.Option("--type", help="Only for this type ('' for "
                                              "any).")] = None,
    max_retries: Annotated[int | None, typer.Option("--max-retries", min=0, help="Retries "
                                                    "after the first attempt.")] = None,
    max_budget: Annotated[str | None, typer.Option("--max-budget", help="USD it may spend "
                                                   "over all its attempts.")] = None,
    at: Annotated[str | None, typer.Option("--at", help="Not claimed before this time ("
                                           "'now': at once).")] = None,
    in_: Annotated[str | None, typer.Option("--in", help="Not claimed before this delay from "
                                            "now.")] = None,
    no_progress: Annotated[
        str | None, typer.Option("--no-progress", help="'USD TIME' (e.g. '$2 10m'): an "
                                 "attempt that spent that much with no new output or file "
                                 "change for that long fails; off: none.")
    ] = None,
    command: Annotated[
        str | None, typer.Option("--command", help="Its own agent command ('' for none: "
                                 "its agent preset or the worker's --exec runs it).")
    ] = None,
    agent: Annotated[
        str | None, typer.Option("--agent", help="claude, codex or gemini ('' for none).")
    ] = None,
    base: Annotated[
        str | None, typer.Option("--base", help="The ref its branch starts from ('' for the "
                                 "repository's HEAD).")
    ] = None,
    review: Annotated[
        bool | None, typer.Option("--review/--no-review", help="A finished attempt waits "
                                  "for review, or not.", show_default=False)
    ] = None,
    require_changes: Annotated[
        bool | None, typer.Option("--require-changes/--no-require-changes", help="An attempt "
                                  "that changed nothing fails, or not.", show_default=False)
    ] = None,
    resume: Annotated[
        bool | None, typer.Option("--resume/--no-resume", help="A retry resumes the agent's "
                                  "session, or starts afresh.", show_default=False)
    ] = None,
    retry_from: Annotated[
        str | None, typer.Option("--retry-from", help="branch or base.")
    ] = None,
    retry_backoff: Annotated[
        str | None, typer.Option("--retry-backoff", help="Wait before a retry: BASE..CAP "
                                 "(e.g. 10s..5m), BASE, or 0 (at once).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Change a queued task: its priority, title, filters, retries, budget, no-progress rule,
    time, command or agent, base, review, require-changes, resume, retry-from or retry
    backoff (recorded as TaskUpdated).

    Example: tri24es tasks update fix-login --priority CRITICAL --at now
    """
    from tri24es.agents import check_agent
    from tri24es.cli.render import task_dict
    from tri24es.events import TaskUpdated
    from tri24es.inputs.taskfile import parse_budget, parse_command, parse_retry_from
    from tri24es.scheduling import parse_backoff, parse_no_progress

    if no_progress is not None and not no_progress.strip():
        raise UsageError("--no-progress '': a task's rule can be changed (to a rule, or off), "
                         "not removed: nothing changed")
    try:
        budget = None if max_budget is None else parse_budget(max_budget)
        not_before = _not_before(at, in_)
        rule = None if no_progress is None else parse_no_progress(no_progress)
        argv = None if command is None else parse_command(command) or []
        since = None if retry_from is None else parse_retry_from(retry_from)
        backoff = None if retry_backoff is None else parse_backoff(retry_backoff)
    except ValueError as e:
        raise UsageError(f"{e}: nothing changed") from None
    preset = None if agent is None else check_agent(agent) if agent.strip() else ""
    if title is not None and not title.strip():
        raise UsageError("--title must not be empty: nothing changed")
    changes = (priority, title, shard, model, type_, max_retries, budget, not_before, rule,
               argv, preset, base, review, require_changes, resume, since, backoff)
    if all(change is None for change in changes):
        raise UsageError("say what to change (e.g. --priority HIGH): nothing changed")
    context = context_of(ctx)
    with context.services() as services:
        version = None
        if (argv is None) != (preset is None):
            # The two decide together who may run the task, so they are recorded together:
            # the one not given stays as it is, unless the task changed since it was read.
            version = services.task(task_id).version
            current = services.history(task_id).submitted
            argv = current.command or [] if argv is None else argv
            preset = current.agent or "" if preset is None else preset
        event = TaskUpdated(
            task_id=task_id, by=context.actor,
            priority=None if priority is None else parse_priority(priority), title=title,
            shard=shard, model=model, type=type_, max_retries=max_retries,
            max_budget_usd=budget, not_before=not_before, no_progress=rule, command=argv,
            agent=preset, base=base, review=review, require_changes=require_changes,
            resume=resume, retry_from=since, retry_backoff=backoff)
        row = services.update(event, version=version)
    if as_json:
        print_json(task_dict(row))
    else:
        typer.echo(f"{task_id}: updated")


@tasks_app.command("cancel")
def cancel(
    ctx: typer.Context,
    task_id: Annotated[str, typer.Argument(help="The task's id.")],
    reason: Annotated[str | None, typer.Option("--reason", help="Why, for the log.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Cancel a queued or running task.

    Example: tri24es tasks cancel fix-login-3f9a2c --reason "duplicate"
    """
    context = context_of(ctx)
    with context.services() as services:
        services.cancel(task_id, by=context.actor, reason=reason)
    _done(task_id, "cancelled", as_json)


@tasks_app.command("retry")
def retry(
    ctx: typer.Context,
    task_id: Annotated[str, typer.Argument(help="The task's id.")],
    budget: Annotated[
        str | None, typer.Option("--budget", help="Raise the task's max_budget_usd (over all "
                                 "its attempts, those spent included) to USD.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Send a failed (dead-lettered) task back to the queue with a fresh retry budget; a task
    that spent its whole max_budget_usd needs --budget USD, a higher cap.

    Example: tri24es tasks retry fix-login-3f9a2c --budget 10
    """
    from tri24es.inputs.taskfile import parse_budget

    try:
        cap = None if budget is None else parse_budget(budget)
    except ValueError as e:
        raise UsageError(f"bad --budget: {e}") from None
    context = context_of(ctx)
    with context.services() as services:
        services.retry(task_id, by=context.actor, budget_usd=cap)
    _done(task_id, "queued", as_json)


def _done(task_id: str, state: str, as_json: bool) -> None:
    if as_json:
        print_json({"task_id": task_id, "state": state})
    else:
        typer.echo(f"{task_id}: {state}")


@tasks_app.command("approve")
def approve(
    ctx: typer.Context,
    task_id: Annotated[str, typer.Argument(help="The task's id.")],
    merge: Annotated[
        bool, typer.Option("--merge", help="Merge its branch into its base first (fast-forward "
                           "when possible, else a merge commit); a conflict leaves it in review.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Approve a task waiting for review: it is completed.

    Example: tri24es tasks approve fix-login --merge
    """
    from tri24es.runtime.review import approve as approve_task

    context = context_of(ctx)
    with context.services() as services:
        done = approve_task(services, context.settings.paths, task_id, by=context.actor,
                            merge_branch=merge)
    if as_json:
        print_json({"task_id": task_id, "state": "completed", "merged_into": done.merged_into,
                    "merge_commit": done.merge_commit})
    elif done.merged_into:
        typer.echo(f"{task_id}: completed; merged into {done.merged_into} "
                   f"({done.merge_commit[:12] if done.merge_commit else ''})")
    else:
        typer.echo(f"{task_id}: completed")


@tasks_app.command("reject")
def reject(
    ctx: typer.Context,
    task_id: Annotated[str, typer.Argument(help="The task's id.")],
    reason: Annotated[str, typer.Option("--reason", help="What to change: given to the next "
                                        "attempt's agent with the task.")],
    as_json: JsonOption = False,
) -> None:
    """Send a task waiting for review back to the queue, with the reviewer's words for the
    next attempt (it counts as a retry).

    Example: tri24es tasks reject fix-login --reason "keep the old endpoint too"
    """
    if not reason.strip():
        raise UsageError("--reason must say what to change")
    context = context_of(ctx)
    with context.services() as services:
        services.reject_review(task_id, by=context.actor, reason=reason.strip())
    _done(task_id, "queued", as_json)


@tasks_app.command("diff")
def diff(
    ctx: typer.Context,
    task_id: Annotated[str, typer.Argument(help="The task's id.")],
    attempt: Annotated[int | None, typer.Option("--attempt", min=1, help="That attempt's "
                                                "result (default: the last).")] = None,
) -> None:
    """Print the diff of a task's result: its branch against its base.

    Example: tri24es tasks diff fix-login
    """
    from tri24es.runtime.workspace import git

    result = _result_of(ctx, task_id, attempt)
    typer.echo(git(Path(result.repo), "diff", f"{result.base_commit}..{result.head_commit}"))


@tasks_app.command("logs")
def logs(
    ctx: typer.Context,
    task_id: Annotated[str, typer.Argument(help="The task's id.")],
    attempt: Annotated[int | None, typer.Option("--attempt", min=1, help="That attempt's "
                                                "output (default: the last).")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing what the "
                                         "agent writes, until the attempt ends.")] = False,
) -> None:
    """Print (or follow) the output of a task's agent.

    Example: tri24es tasks logs fix-login -f
    """
    from eventlog.watch import FileChangeWatcher
    from tri24es.projections.queue import QUEUE

    context = context_of(ctx)
    with context.reading() as (_, conn):
        row = QUEUE.load_by_id(conn, task_id)
    if row is None:
        raise UsageError(f"no task {task_id!r}")
    number = attempt or row.attempt
    if number < 1:
        raise UsageError(f"task {task_id!r} has not run yet")
    path = context.settings.paths.attempt_log(task_id, number)
    out = sys.stdout.buffer
    offset = 0

    def grown() -> bool:
        return path.exists() and path.stat().st_size > offset

    watcher = None
    try:
        while True:
            if path.exists():
                with path.open("rb") as f:
                    f.seek(offset)
                    chunk = f.read()
                offset += len(chunk)
                out.write(chunk)
                out.flush()
            if not follow or output_gone():  # its reader gone (`| head`): end now
                return
            with context.reading() as (_, conn):
                now = QUEUE.load_by_id(conn, task_id)
            running = now is not None and now.state == "running" and now.attempt == number
            if not running and not grown():
                return
            if watcher is None:
                from tri24es.files import private_folder

                private_folder(path.parent, context.settings.paths.root)
                watcher = FileChangeWatcher(path.parent, {path.name})
            watcher.wait_until(grown, timeout=1.0)  # and a look at the task once a second
    except KeyboardInterrupt:
        return
    finally:
        if watcher is not None:
            watcher.stop()


def _result_of(ctx: typer.Context, task_id: str, attempt: int | None) -> Any:
    context = context_of(ctx)
    with context.services() as services:
        results = services.history(task_id).results
    chosen = [r for r in results if attempt is None or r.attempt == attempt]
    if not chosen:
        raise UsageError(f"task {task_id!r} has no result"
                         + (f" for attempt {attempt}" if attempt else "")
                         + " (results are recorded by workers given --repo)")
    return chosen[-1]
