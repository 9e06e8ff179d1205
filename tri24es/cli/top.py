"""``tri24es top``: a live dashboard of the queue, the workers, the spend and the kill switch."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated

import typer

from tri24es.cli.common import context_of, watch_for_changes

if TYPE_CHECKING:  # rich and the domain are imported on use
    from rich.console import RenderableType
    from rich.table import Table
    from rich.text import Text

    from eventlog import EventStore
    from tri24es.budget import BudgetLimits
    from tri24es.projections.reads import Glance

BARS = "▁▂▃▄▅▆▇█"
EVENT_DATA_WIDTH = 60


def sparkline(values: Sequence[Decimal]) -> str:
    """One character per value: ▁ for nothing, ▂..█ scaled to the largest value."""
    peak = max(values, default=Decimal(0))
    return "".join(
        BARS[0] if v <= 0 else BARS[1 + round(v / peak * (len(BARS) - 2))] for v in values
    )


def _money(value: Decimal) -> str:
    return f"${value.quantize(Decimal('0.0001'))}"


def _queue_table(g: Glance) -> Table:
    from rich.table import Table

    from tri24es.events import Priority
    from tri24es.machines import TaskState

    table = Table(title="queue", title_justify="left", expand=False)
    table.add_column("state")
    for priority in Priority:
        table.add_column(priority.value, justify="right")
    table.add_column("total", justify="right")
    for state in TaskState:
        counts = [g.queue.get((state.value, p.rank), 0) for p in Priority]
        table.add_row(state.value, *map(str, counts), str(sum(counts)))
    return table


def _workers_table(g: Glance) -> Table:
    from rich.table import Table

    table = Table(title=f"workers ({len(g.workers)})", title_justify="left")
    for name in ("worker", "state", "task", "last seen"):
        table.add_column(name)
    for w in g.workers:
        seen = max(g.now - w.last_seen, 0) // 1_000_000
        table.add_row(w.worker_id, w.state, w.current_task or "-", f"{seen}s ago")
    return table


def _spend(g: Glance) -> Text:
    from rich.text import Text

    from tri24es.timeutil import iso_time

    over = g.rate >= g.rate_limit
    text = Text()
    text.append("spend rate  ")
    text.append(f"{_money(g.rate)}/min", style="bold red" if over else "bold")
    text.append(f" of {_money(g.rate_limit)}/min limit "
                f"({g.rate / g.rate_limit:.0%}, window {g.window_seconds}s)\n")
    peak = max(g.per_minute, default=Decimal(0))
    text.append(f"spend total {_money(g.spend_total)}; last hour, per minute "
                f"(peak {_money(peak)}):\n")
    text.append(f"{sparkline(g.per_minute)}\n")
    ks = g.killswitch
    if ks.active:
        when = iso_time(ks.changed_at) if ks.changed_at is not None else "?"
        text.append(f"kill switch ACTIVE since {when}: {ks.reason}", style="bold red")
    else:
        text.append("kill switch off", style="green")
    return text


def _recent(g: Glance) -> Text:
    from rich.text import Text

    from tri24es.timeutil import iso_time

    text = Text(no_wrap=True, overflow="ellipsis")
    for e in g.recent:
        data = e.data.decode(errors="replace")[:EVENT_DATA_WIDTH]
        text.append(f"{e.position:>7} {iso_time(e.recorded_at)[11:19]} {e.type:<18} "
                    f"{e.stream}  {data}\n")
    text.rstrip()
    return text


def frame(g: Glance) -> RenderableType:
    """One picture of the fleet."""
    from rich.console import Group
    from rich.panel import Panel
    from rich.text import Text

    from tri24es.budget import killswitch_banner
    from tri24es.timeutil import iso_time

    banner = killswitch_banner(g.killswitch)  # first: it stays in sight on any terminal
    header = Text(f"tri24es top — {iso_time(g.now)[:19]}Z — log head {g.head}", style="bold")
    waits = [Text(f"{w}", style="yellow") for w in g.waiting]
    return Group(
        *([Text(banner, style="bold white on red")] if banner else []),
        header,
        _queue_table(g),
        *waits,
        _workers_table(g),
        Panel(_spend(g), title="budget", title_align="left"),
        Panel(_recent(g), title=f"last {len(g.recent)} events", title_align="left"),
    )


def top(
    ctx: typer.Context,
    interval: Annotated[
        float, typer.Option("--interval", min=0.1, help="Seconds between refreshes.")
    ] = 1.0,
    once: Annotated[
        bool, typer.Option("--once", help="Print one frame to stdout and exit.")
    ] = False,
) -> None:
    """A live dashboard: queue by priority and state, workers, spend rate against the limit
    with the last hour as a sparkline, the kill switch and the last 10 events.

    Example: tri24es top --interval 2
    """
    # Imported on use: rich costs every other command ~70 ms at start.
    from rich.console import Console
    from rich.live import Live

    from eventlog import TransientStoreError
    from tri24es.budget import BudgetLimits
    from tri24es.runtime.resilience import Outage

    context = context_of(ctx)
    limits = BudgetLimits.from_settings(context.settings)
    with context.store() as store:
        if once:
            Console().print(frame(_glance(store, limits)))
            return
        watch_for_changes(store)
        calm = threading.Event()  # never set: paces redraws when commits come fast
        with Live(frame(_glance(store, limits)), auto_refresh=False, screen=False) as live:
            outage = Outage("top", lambda text: live.console.print(text, markup=False))
            try:
                while True:
                    try:
                        if store.wait_for_change(store.head(), timeout=interval):
                            calm.wait(min(interval, 0.25))
                        live.update(frame(_glance(store, limits)), refresh=True)
                        outage.ok()
                    except TransientStoreError as e:  # the last frame stays meanwhile
                        calm.wait(outage.failed(e))
            except KeyboardInterrupt:
                return


def _glance(store: EventStore, limits: BudgetLimits) -> Glance:
    from tri24es.projections import connection_of, reads
    from tri24es.timeutil import now_us

    with store.snapshot() as tx:
        return reads.glance(store, connection_of(tx), limits, now_us())
