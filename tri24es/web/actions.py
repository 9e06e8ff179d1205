"""What each action does: the service call its CLI command makes, with the same checks and
the same JSON answer (``--json``). The caller (``app.Dashboard``) checks the right to act and
turns errors into answers."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request

from tri24es.budget import BudgetLimits
from tri24es.errors import UsageError
from tri24es.paths import ProjectPaths
from tri24es.services import NotFound, Services

WORKER_ACTIONS = ("pause", "resume", "stop")
TASK_ACTIONS = ("cancel", "retry", "approve", "reject", "prioritise")
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def from_form(request: Request) -> bool:
    return request.headers.get("content-type", "").startswith(FORM_TYPES)


async def fields_of(request: Request) -> dict[str, str]:
    """An action's fields: a form's (browsers) or a JSON object's (programs)."""
    if from_form(request):
        form = await request.form()
        return {k: v for k, v in form.items() if isinstance(v, str)}
    body = await request.body()
    if not body:
        return {}
    try:
        found = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise HTTPException(400, "the body is neither a form nor a JSON object") from None
    if not isinstance(found, dict):
        raise HTTPException(400, "the body must be a JSON object")
    return {k: str(v) for k, v in found.items() if v is not None}


def _yes(value: str | None) -> bool:
    return value in ("1", "true", "on")


def workers(services: Services, action: str, worker_ids: list[str],
            who: str) -> dict[str, Any]:
    """``workers pause|resume|stop --json``."""
    if action not in WORKER_ACTIONS:
        raise NotFound(f"no action {action!r} on workers: expected {'|'.join(WORKER_ACTIONS)}")
    request: Callable[[str], bool] = {
        "pause": lambda w: services.request_pause(w, by=who),
        "resume": lambda w: services.request_resume(w, by=who),
        "stop": lambda w: services.request_stop(w, by=who),
    }[action]
    return {"action": action,
            "workers": [{"worker_id": w, "changed": request(w)} for w in worker_ids]}


def task(services: Services, paths: ProjectPaths, action: str, task_id: str,
         fields: dict[str, str], who: str) -> dict[str, Any]:
    """``tasks cancel|retry|approve|reject --json``, and ``tasks update ID --priority P``."""
    if action not in TASK_ACTIONS:
        raise NotFound(f"no action {action!r} on tasks: expected {'|'.join(TASK_ACTIONS)}")
    if action == "prioritise":
        from tri24es.cli.common import parse_priority
        from tri24es.cli.render import task_dict
        from tri24es.events import TaskUpdated

        priority = parse_priority(fields.get("priority", "").strip())
        return task_dict(services.update(TaskUpdated(task_id=task_id, by=who,
                                                     priority=priority)))
    if action == "cancel":
        services.cancel(task_id, by=who, reason=fields.get("reason", "").strip() or None)
        return {"task_id": task_id, "state": "cancelled"}
    if action == "retry":
        from tri24es.inputs.taskfile import parse_budget

        budget = fields.get("budget", "").strip()
        try:
            cap = parse_budget(budget) if budget else None
        except ValueError as e:
            raise UsageError(f"bad budget: {e}") from None
        services.retry(task_id, by=who, budget_usd=cap)
        return {"task_id": task_id, "state": "queued"}
    if action == "reject":
        reason = fields.get("reason", "").strip()
        if not reason:
            raise UsageError("a rejection needs a reason: what to change")
        services.reject_review(task_id, by=who, reason=reason)
        return {"task_id": task_id, "state": "queued"}
    from tri24es.runtime.review import approve

    done = approve(services, paths, task_id, by=who, merge_branch=_yes(fields.get("merge")))
    return {"task_id": task_id, "state": "completed", "merged_into": done.merged_into,
            "merge_commit": done.merge_commit}


def reset_killswitch(services: Services, paths: ProjectPaths, limits: BudgetLimits,
                     fields: dict[str, str], who: str) -> dict[str, Any]:
    """``budget-watchdog --reset --reason TEXT [--force] [--allow-today USD] --json``;
    ResetRefused while the breach that turned the switch on holds."""
    from tri24es.budget import BadAmount, parse_amount
    from tri24es.runtime.budget_watchdog import reset

    reason = fields.get("reason", "").strip()
    if not reason:
        raise UsageError("a reset needs a reason")
    force = _yes(fields.get("force"))
    allowance = None
    if fields.get("allow_today", "").strip():
        try:
            allowance = parse_amount(fields["allow_today"].strip(), Decimal("1e9"))
        except BadAmount as e:
            raise UsageError(f"bad allow_today: {e}") from None
        if not allowance:
            raise UsageError("bad allow_today: it must be more than 0")
    done = reset(services, paths, limits, by=who, reason=reason, fresh_window=force,
                 allow_today=allowance)
    return {"reset": done.was_active,
            "file": None if done.moved_file is None else str(done.moved_file),
            "fresh_window": force and done.was_active,
            "allow_today_usd": str(allowance) if allowance and done.was_active else None}
