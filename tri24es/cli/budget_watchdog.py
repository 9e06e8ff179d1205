"""``tri24es budget-watchdog``: the daemon, ``--once``, ``--status`` and ``--reset``."""

from __future__ import annotations

import logging
import os
import signal
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated

import typer

from tri24es.cli.common import Context, JsonOption, context_of, print_json
from tri24es.errors import UsageError

if TYPE_CHECKING:  # the domain and the daemon's module are imported on use
    from tri24es.budget import BudgetLimits, Reading
    from tri24es.runtime.budget_watchdog import BudgetWatchdog
    from tri24es.services import Services


def _watchdog(context: Context, services: Services) -> BudgetWatchdog:
    from tri24es.budget import BudgetLimits
    from tri24es.runtime.budget_watchdog import BudgetWatchdog

    settings = context.settings
    return BudgetWatchdog(services, BudgetLimits.from_settings(settings), settings.paths,
                          report=lambda line: typer.echo(line, err=True),
                          witness=settings.witness, witness_interval=settings.witness_interval)


def budget_watchdog(
    ctx: typer.Context,
    once: Annotated[bool, typer.Option("--once", help="Evaluate once: exit 0 within "
                                                      "budget, 1 if exceeded or on.")] = False,
    status: Annotated[bool, typer.Option("--status", help="Show spend, limits, the kill "
                                                          "switch and active workers.")] = False,
    reset: Annotated[bool, typer.Option("--reset", help="Turn the kill switch off (needs "
                                                        "--reason); refused while the breach "
                                                        "still holds.")] = False,
    reason: Annotated[str | None, typer.Option("--reason", help="Why (with --reset).")] = None,
    force: Annotated[bool, typer.Option("--force", help="With --reset: start a fresh rate "
                                                        "window at the reset (spend before it "
                                                        "no longer counts toward the rate).")
                     ] = False,
    allow_today: Annotated[str | None, typer.Option(
        "--allow-today", metavar="USD", help="With --reset: allow USD over the daily limit "
                                             "for the rest of today (recorded).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Watch the spend and enforce the budget: a warning, then a pause, then the kill switch
    (every worker and agent stopped). Without a flag it runs as a daemon until SIGTERM.

    Example: tri24es budget-watchdog --reset --force --reason "runaway agent stopped"
    """
    if once + status + reset > 1:
        raise UsageError("give at most one of --once, --status, --reset")
    if reset and not (reason and reason.strip()):
        raise UsageError("--reset needs --reason TEXT")
    for given, flag in ((reason is not None, "--reason"), (force, "--force"),
                        (allow_today is not None, "--allow-today")):
        if given and not reset:
            raise UsageError(f"{flag} goes with --reset")
    allowance = None if allow_today is None else _allowance(allow_today)
    # Imported on use: only this command needs them, and every other one starts faster.
    from tri24es.runtime.budget_watchdog import BY, single_daemon
    from tri24es.runtime.signals import received_signals

    context = context_of(ctx)
    if status:
        _status(context, as_json)
        return
    if reset:
        assert reason is not None
        raise typer.Exit(_reset(context, reason.strip(), force, allowance, as_json))
    with context.services(BY, daemon=None if once else "budget watchdog") as services:
        watchdog = _watchdog(context, services)
        if once:
            raise typer.Exit(_once(watchdog, as_json))
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
        with single_daemon(context.settings.paths), \
                received_signals((signal.SIGTERM, signal.SIGINT)) as inbox:
            typer.echo(f"budget watchdog: running (pid {os.getpid()})", err=True)
            code = watchdog.run(inbox)
    raise typer.Exit(code)


def _once(watchdog: BudgetWatchdog, as_json: bool) -> int:
    from tri24es.budget import usd

    result = watchdog.evaluate()
    reading, limits = result.reading, watchdog.limits
    if as_json:
        print_json({"exceeded": result.exceeded, "activated": result.activated,
                    "level": str(reading.level(limits)), "daily_usd": str(reading.daily),
                    "rate_per_min_usd": str(reading.rate), "paused": result.paused,
                    "resumed": result.resumed})
    else:
        if reading.killswitch.active:
            typer.echo(f"Kill switch is ACTIVE: {reading.killswitch.reason}")
        elif result.exceeded:
            typer.echo("Budget exceeded: kill switch activated")
        else:
            typer.echo(f"Within budget: ${usd(reading.daily)} today, "
                       f"${usd(reading.rate)}/min ({reading.level(limits)})")
    return 1 if result.exceeded else 0


def _status(context: Context, as_json: bool) -> None:
    from tri24es.budget import BudgetLimits
    from tri24es.cli.render import reading_dict
    from tri24es.projections import reads
    from tri24es.timeutil import now_us

    limits = BudgetLimits.from_settings(context.settings)
    with context.reading() as (_, conn):
        reading = reads.read_budget(conn, limits, now_us())
        workers = reads.live_workers(conn)
    if as_json:
        print_json({**reading_dict(reading, limits),
                    "active_workers": [{"worker_id": w.worker_id, "state": w.state,
                                        "pid": w.pid, "host": w.host} for w in workers]})
        return
    _print_status(reading, limits)
    typer.echo(f"Active Workers: {len(workers)}")
    for w in workers:
        typer.echo(f"  {w.worker_id:<28} {w.state:<9} pid {w.pid}@{w.host}")


def _print_status(reading: Reading, limits: BudgetLimits) -> None:
    from tri24es.budget import percent, usd
    from tri24es.timeutil import iso_time

    ks = reading.killswitch
    typer.echo(f"Kill Switch: {'ACTIVE' if ks.active else 'INACTIVE'}"
               + (f" ({ks.reason})" if ks.active else ""))
    limit = reading.daily_limit(limits)
    typer.echo(f"Daily Spend: ${usd(reading.daily)} / ${usd(limit)} "
               f"({percent(reading.daily, limit)})"
               + (f" (${usd(reading.allowance)} allowed today)" if reading.allowance else ""))
    typer.echo(f"Current Rate: ${usd(reading.rate)}/min / ${usd(limits.rate_limit)}/min")
    typer.echo(f"Warning Level: {reading.level(limits).upper()}")
    typer.echo(f"Window Size: {reading.window_seconds} s" + (
        "" if reading.reset_at is None else
        f" (counting from the forced reset at {iso_time(reading.reset_at)[:19]}Z)"))
    typer.echo("Limits:")
    typer.echo(f"  Daily Limit: ${usd(limits.daily_limit)}")
    typer.echo(f"  Rate Limit: ${usd(limits.rate_limit)}/min")
    typer.echo(f"  Rate Warning: ${usd(limits.rate_warning)}/min")
    typer.echo(f"  Daily Pause: {limits.daily_pause_pct:.0%} of the daily limit")


def _allowance(text: str) -> Decimal:
    from tri24es.budget import BadAmount, parse_amount

    try:
        amount = parse_amount(text, Decimal("1e9"))
    except BadAmount as e:
        raise UsageError(f"bad --allow-today: {e}") from None
    if not amount:
        raise UsageError("bad --allow-today: it must be more than 0")
    return amount


def _reset(context: Context, reason: str, force: bool, allowance: Decimal | None,
           as_json: bool) -> int:
    """0 if reset (or not on), 1 if refused: the breach still holds."""
    from tri24es.budget import BudgetLimits, usd
    from tri24es.runtime.budget_watchdog import reset
    from tri24es.services import ResetRefused
    from tri24es.timeutil import iso_time

    paths = context.settings.paths
    limits = BudgetLimits.from_settings(context.settings)
    with context.services() as services:
        try:
            done = reset(services, paths, limits, by=context.actor, reason=reason,
                         fresh_window=force, allow_today=allowance,
                         report=lambda line: typer.echo(line, err=True))
        except ResetRefused as e:
            check = e.check
            if as_json:
                clears = check.rate_clears_at
                print_json({"reset": False, "rate_holds": check.rate_holds,
                            "daily_holds": check.daily_holds,
                            "rate_clears_at": None if clears is None else iso_time(clears),
                            "daily_total_usd": str(check.reading.daily),
                            "daily_limit_usd": str(check.daily_limit_after),
                            "explanation": check.explain()})
            else:
                typer.echo("Kill switch NOT reset: the breach that turned it on still holds",
                           err=True)
                for line in check.explain():
                    typer.echo(f"  {line}", err=True)
            return 1
    moved = done.moved_file
    if as_json:
        print_json({"reset": done.was_active, "file": None if moved is None else str(moved),
                    "fresh_window": force and done.was_active,
                    "allow_today_usd": str(allowance) if allowance and done.was_active
                    else None})
        return 0
    typer.echo("Kill switch reset" if done.was_active else "Kill switch was not active")
    if done.was_active and force:
        typer.echo("  a fresh rate window starts now: spend before the reset no longer "
                   "counts toward the rate")
    if done.was_active and allowance:
        typer.echo(f"  ${usd(allowance)} allowed over the daily limit for the rest of today")
    if moved is not None:
        typer.echo(f"  {paths.kill_switch_file.relative_to(paths.root)} -> {moved.name}")
    if done.was_active:
        typer.echo("  killed workers stay stopped (under `up` they come back); paused ones "
                   "resume with `tri24es workers resume --all`")
    return 0
