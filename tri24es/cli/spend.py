"""``tri24es spend``: the spend now (window, rate, today, limits, kill switch), and
``tri24es spend record`` to record spend by hand or from a script."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from tri24es.cli.common import (
    Context,
    JsonOption,
    context_of,
    parse_choice,
    print_json,
    print_table,
)
from tri24es.errors import UsageError

if TYPE_CHECKING:  # the domain is imported on use: `--help` needs none of it
    from tri24es.budget import BudgetLimits, Reading

spend_app = typer.Typer(
    help="Show the spend (window, rate, today, limits, kill switch); record spend; import "
         "state/budget/spend.jsonl.",
    invoke_without_command=True,
)

#: reads.SPEND_GROUPS, written here so that building the command line imports no domain.
GROUPS = ("model", "worker", "task")


def _stderr(line: str) -> None:
    typer.echo(line, err=True)


def _limits(context: Context) -> BudgetLimits:
    from tri24es.budget import BudgetLimits

    return BudgetLimits.from_settings(context.settings)


@spend_app.callback()
def spend(
    ctx: typer.Context,
    window: Annotated[
        str | None,
        typer.Option("--window", help="Rolling window: 90s, 5m, 1h, 1h30m, 1d. "
                                      "Default: BUDGET_WINDOW_SIZE (300 s)."),
    ] = None,
    by: Annotated[
        str | None, typer.Option("--by", help="Break the window's spend down by model, "
                                              "worker or task.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Show the spend in a rolling window and its rate in $/min, today's total, both limits
    and how much of them is used, and the kill switch.

    Example: tri24es spend --window 1h --by model
    """
    if ctx.invoked_subcommand is not None:
        return
    from tri24es.budget import dollars, parse_window
    from tri24es.cli.render import money, reading_dict
    from tri24es.inputs.spendfile import SpendFileUnreadable, unrecorded_lines
    from tri24es.projections import reads
    from tri24es.timeutil import now_us

    try:
        seconds = parse_window(window) if window is not None else None
    except ValueError as e:
        raise UsageError(str(e)) from None
    if by is not None:
        by = parse_choice(by, GROUPS, "--by")
    context = context_of(ctx)
    limits = _limits(context)
    now = now_us()
    with context.reading() as (store, conn):
        reading = reads.read_budget(conn, limits, now, seconds)
        groups = None if by is None else reads.spend_by(
            conn, by, now - reading.window_seconds * 1_000_000, now + 1)
        unreadable = None
        try:
            waiting = unrecorded_lines(context.settings.paths.spend_file, store,
                                       limits.max_record_usd)
        except SpendFileUnreadable as e:  # the reading is shown, then this, and exit 1
            waiting, unreadable = 0, e
        skipped = reads.lines_skipped(conn)
    if waiting:  # `spend` only reads: the watchdog, or `spend import`, records them
        _stderr(f"tri24es: note: {waiting} lines of {context.settings.paths.spend_file} are "
                "not recorded yet (run `tri24es spend import`, or the budget watchdog)")
    if skipped:  # never silent: a cost that could not be read may be spend not counted
        _stderr(f"tri24es: warning: {skipped} lines that reported spend could not be read "
                "(tri24es events --type SpendLinesSkipped shows them)")
    if as_json:
        info = reading_dict(reading, limits)
        info["lines_skipped"] = skipped
        if by is not None and groups is not None:
            info["by"] = by
            info[by] = {name: money(amount) for name, amount in groups.items()}
        print_json(info)
    else:
        _print_reading(reading, limits)
        if by is not None and groups is not None:
            typer.echo()
            if groups:
                print_table((by.upper(), "SPEND"),
                            ((name, dollars(amount)) for name, amount in groups.items()))
            else:
                typer.echo(f"by {by}: no spend in the window")
    if unreadable is not None:
        # what is recorded is shown, as `ls` lists what it can; exit 1 as it does, because
        # spend waiting in the file may be missing from it
        _stderr(f"tri24es: error: {unreadable}")
        raise typer.Exit(1)


def _print_reading(reading: Reading, limits: BudgetLimits) -> None:
    from tri24es.budget import dollars, percent, window_text
    from tri24es.timeutil import iso_time

    ks = reading.killswitch
    typer.echo(f"Window:       {window_text(reading.window_seconds)}: "
               f"{dollars(reading.window_total)}" + (
                   "" if reading.reset_at is None else
                   f" (counting from the forced reset at {iso_time(reading.reset_at)[:19]}Z)"))
    typer.echo(f"Rate:         {dollars(reading.rate)}/min of {dollars(limits.rate_limit)}/min "
               f"({percent(reading.rate, limits.rate_limit)})")
    limit = reading.daily_limit(limits)  # with today's allowance
    typer.echo(f"Today:        {dollars(reading.daily)} of {dollars(limit)} "
               f"({percent(reading.daily, limit)})")
    state = f"ACTIVE ({ks.reason})" if ks.active else "INACTIVE"
    typer.echo(f"Kill switch:  {state}")


@spend_app.command("record")
def record(
    ctx: typer.Context,
    amount: Annotated[str | None, typer.Option("--usd", help="The amount in US dollars.")] = None,
    model: Annotated[str | None, typer.Option("--model", help="The model that spent it.")] = None,
    input_tokens: Annotated[
        int | None, typer.Option("--input-tokens", min=0, help="Priced when --usd is absent.")
    ] = None,
    output_tokens: Annotated[
        int | None, typer.Option("--output-tokens", min=0, help="Priced when --usd is absent.")
    ] = None,
    task: Annotated[str | None, typer.Option("--task", help="The task it was spent on.")] = None,
    worker: Annotated[str | None, typer.Option("--worker", help="The worker that spent it.")] = (
        None
    ),
    as_json: JsonOption = False,
) -> None:
    """Record spend: --usd X, or --model M with --input-tokens/--output-tokens (priced from
    the catalogue; an unpriced model is charged at a conservative fallback and flagged).

    Example: tri24es spend record --model claude-sonnet-4-5 --input-tokens 12000 --output-tokens 800
    """
    from tri24es.budget import BadAmount, dollars
    from tri24es.cli.render import money
    from tri24es.pricing import Pricer

    tokens = input_tokens is not None or output_tokens is not None
    if amount is not None and tokens:
        raise UsageError("give --usd or token counts, not both")
    if amount is None and not tokens:
        raise UsageError("give --usd X, or --model M with --input-tokens/--output-tokens")
    context = context_of(ctx)
    limits = _limits(context)
    try:
        with context.services() as services:
            spent = services.record_spend_by_hand(
                usd=amount, model=model, input_tokens=input_tokens,
                output_tokens=output_tokens, task=task, worker=worker,
                max_usd=limits.max_record_usd,
                pricer=Pricer(context.settings.fallback_usd_per_mtok))
    except BadAmount as e:
        raise UsageError(f"{e}: nothing recorded") from None
    if as_json:
        print_json({"amount_usd": money(spent.amount), "model": model, "task": task,
                    "worker": worker, "flagged": spent.flagged})
        return
    note = f" (estimate: {spent.flagged})" if spent.flagged else ""
    typer.echo(f"recorded {dollars(spent.amount)}{note}")


@spend_app.command("import")
def import_file(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Record the lines of state/budget/spend.jsonl not recorded yet (the budget watchdog
    does this on every evaluation; each line counts once however often it is read).

    Example: tri24es spend import
    """
    from tri24es.inputs.spendfile import SpendFileBridge

    context = context_of(ctx)
    path = context.settings.paths.spend_file
    with context.services() as services:
        limits = _limits(context)
        result = SpendFileBridge(path, limits.max_record_usd, _stderr,
                                 limits.window_seconds).bridge(services)
    if as_json:
        print_json({"recorded": result.recorded, "known": result.known, "bad": result.bad})
        return
    typer.echo(f"{path}: recorded {result.recorded} lines, {result.known} already recorded, "
               f"{result.bad} bad")
