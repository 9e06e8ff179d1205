"""``tri24es spend``: the spend now (window, rate, today, limits, kill switch), and
``tri24es spend record`` to record spend by hand or from a script."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from tri24es.cli.common import Context, JsonOption, context_of, print_json
from tri24es.errors import UsageError

if TYPE_CHECKING:  # the domain is imported on use: `--help` needs none of it
    from tri24es.budget import BudgetLimits, Reading
    from tri24es.services import Services

spend_app = typer.Typer(
    help="Show the spend (window, rate, today, limits, kill switch); record spend.",
    invoke_without_command=True,
)

GROUPS = ("model", "worker", "task")


def _stderr(line: str) -> None:
    typer.echo(line, err=True)


def _limits(context: Context) -> BudgetLimits:
    from tri24es.budget import BudgetLimits

    return BudgetLimits.from_settings(context.settings)


def bridge_spend_file(context: Context, services: Services, limits: BudgetLimits) -> None:
    """Bring ``state/budget/spend.jsonl`` into the log (idempotent) before reporting."""
    from tri24es.inputs.spendfile import SPEND_FILE, SpendFileBridge

    SpendFileBridge(context.settings.root / SPEND_FILE, limits.max_record_usd,
                    _stderr).bridge(services)


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
    from tri24es.budget import parse_window, read_budget, reading_dict, spend_by
    from tri24es.projections import connection_of
    from tri24es.timeutil import now_us

    try:
        seconds = parse_window(window) if window is not None else None
    except ValueError as e:
        raise UsageError(str(e)) from None
    if by is not None and by not in GROUPS:
        raise UsageError(f"bad --by {by!r}: expected {'|'.join(GROUPS)}")
    context = context_of(ctx)
    limits = _limits(context)
    with context.services() as services:
        bridge_spend_file(context, services, limits)
        now = now_us()
        with services.store.snapshot() as tx:
            conn = connection_of(tx)
            reading = read_budget(conn, limits, now, seconds)
            groups = None if by is None else spend_by(
                conn, by, now - reading.window_seconds * 1_000_000, now + 1)
    if as_json:
        info = reading_dict(reading, limits)
        if groups is not None:
            info["by"], info[by] = by, groups  # type: ignore[index]
        print_json(info)
        return
    _print_reading(reading, limits)
    if groups is not None:
        typer.echo(f"By {by}:")
        for name, amount in groups.items():
            typer.echo(f"  {name:<30} ${amount}")
        if not groups:
            typer.echo("  (no spend in the window)")


def _print_reading(reading: Reading, limits: BudgetLimits) -> None:
    from tri24es.budget import percent, usd

    ks = reading.killswitch
    typer.echo(f"Window:       {reading.window_seconds} s: ${reading.window_total}")
    typer.echo(f"Rate:         ${usd(reading.rate)}/min of ${usd(limits.rate_limit)}/min "
               f"({percent(reading.rate, limits.rate_limit)})")
    typer.echo(f"Today:        ${usd(reading.daily)} of ${usd(limits.daily_limit)} "
               f"({percent(reading.daily, limits.daily_limit)})")
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
    from tri24es import events as ev
    from tri24es.budget import BadAmount, parse_amount
    from tri24es.pricing import Pricer
    from tri24es.timeutil import from_us, now_us

    context = context_of(ctx)
    limits = _limits(context)
    flagged = None
    tokens = input_tokens is not None or output_tokens is not None
    if amount is not None and tokens:
        raise UsageError("give --usd or token counts, not both")
    try:
        if amount is not None:
            value = parse_amount(amount, limits.max_record_usd)
        elif tokens:
            pricer = Pricer(context.settings.fallback_usd_per_mtok)
            priced, flagged = pricer.price(model, input_tokens or 0, output_tokens or 0)
            value = parse_amount(priced, limits.max_record_usd)
        else:
            raise UsageError("give --usd X, or --model M with --input-tokens/--output-tokens")
    except BadAmount as e:
        raise UsageError(f"{e}: nothing recorded") from None
    event = ev.SpendRecorded(
        amount=value, model=model, input_tokens=input_tokens, output_tokens=output_tokens,
        task=task, worker=worker, source="cli", occurred_at=from_us(now_us()), flagged=flagged,
    )
    with context.services() as services:
        services.record_spend(event)
    if as_json:
        print_json({"amount_usd": str(value), "model": model, "task": task, "worker": worker,
                    "flagged": flagged})
        return
    note = f" (estimate: {flagged})" if flagged else ""
    typer.echo(f"recorded ${value.normalize():f}{note}")

