"""``tri24es top``: a live dashboard of the queue, the workers, the spend and the kill switch."""

from __future__ import annotations

import threading
from collections import Counter
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


#: What the events list leaves out unless ``--heartbeats``: a fleet's pulse, which would fill
#: it within a minute.
PULSE = ("WorkerHeartbeat", "LeaseRenewed")
#: How far back the events list looks for events that are not pulse.
EVENTS_LOOKBACK = 2000
MAX_EVENTS = 20


def _money(value: Decimal) -> str:
    from tri24es.budget import dollars

    return dollars(value)


def _table(*headers: str) -> Table:
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold", show_edge=False)
    for header in headers:
        table.add_column(header, no_wrap=True, overflow="ellipsis",
                         justify="left" if header == headers[0] else "right")
    return table


def _alerts(g: Glance) -> list[Text]:
    """What needs the operator, first: the kill switch, then tasks waiting for a person or
    for a worker that is not there, workers lost, spend over its limit."""
    from rich.text import Text


    ks = g.killswitch
    # On, the banner above the header says so (budget.killswitch_banner), wrapped, never cut.
    lines = [] if ks.active else [Text("kill switch off", style="green")]
    by_state = Counter[str]()
    for (state, _rank), n in g.queue.items():
        by_state[state] += n
    needs = []
    if by_state["review"]:
        needs.append(f"{by_state['review']} waiting for review: tri24es tasks approve|reject ID")
    if by_state["failed"]:
        needs.append(f"{by_state['failed']} failed: tri24es tasks list --state failed")
    lost = sum(1 for w in g.workers if w.state == "lost")
    if lost:
        needs.append(f"{lost} workers lost: tri24es workers list")
    if g.rate >= g.rate_limit:
        needs.append(f"spend rate {_money(g.rate)}/min is over the {_money(g.rate_limit)}/min "
                     "limit")
    needs += [str(w) for w in g.waiting]
    if ks.active:
        needs.append("once the cause is dealt with: tri24es budget-watchdog --reset")
    lines += [Text(f"needs you: {line}", style="yellow") for line in needs]
    for line in lines:  # one row each, whatever the width: cut, never wrapped
        line.no_wrap, line.overflow = True, "ellipsis"
    return lines


def _queue_table(g: Glance) -> Table:
    from tri24es.machines import TaskState
    from tri24es.names import Priority

    table = _table("queue", *(p.value for p in Priority), "total")
    for state in TaskState:
        counts = [g.queue.get((state.value, p.rank), 0) for p in Priority]
        if sum(counts):  # the states that hold tasks: the frame stays short
            table.add_row(state.value, *map(str, counts), str(sum(counts)))
    return table


def _workers_table(g: Glance, rows: int | None) -> Table:
    shown = g.workers if rows is None else g.workers[:max(rows, 0)]
    more = len(g.workers) - len(shown)
    table = _table(f"workers ({len(g.workers)})", "state", "task", "last seen")
    for w in shown:
        seen = max(g.now - w.last_seen, 0) // 1_000_000
        table.add_row(w.worker_id, w.state, w.current_task or "-", f"{seen}s ago")
    if more:
        table.add_row(f"… {more} more", "", "", "")
    return table


def _spend(g: Glance) -> Text:
    from rich.text import Text

    from tri24es.budget import window_text

    over = g.rate >= g.rate_limit
    peak = max(g.per_minute, default=Decimal(0))
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append("spend rate ")
    text.append(f"{_money(g.rate)}/min", style="bold red" if over else "bold")
    text.append(f" of {_money(g.rate_limit)}/min ({g.rate / g.rate_limit:.0%}, window "
                f"{window_text(g.window_seconds)}) · peak {_money(peak)}/min · total "
                f"{_money(g.spend_total)}\n")
    text.append(f"last hour {sparkline(g.per_minute)}")
    return text


def _recent(g: Glance, rows: int | None, heartbeats: bool) -> Text:
    from rich.text import Text

    from tri24es.timeutil import iso_time

    shown = g.recent if rows is None else g.recent[len(g.recent) - max(rows, 0):]
    hidden = "" if heartbeats else ", heartbeats hidden"
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(f"last {len(shown)} events{hidden}\n", style="bold")
    for e in shown:
        data = e.data.decode(errors="replace")[:EVENT_DATA_WIDTH]
        text.append(f"{e.position:>7} {iso_time(e.recorded_at)[11:19]} {e.type:<18} "
                    f"{e.stream}  {data}\n")
    text.rstrip()
    return text


def frame(g: Glance, height: int | None = None, heartbeats: bool = False) -> RenderableType:
    """One picture of the fleet, most urgent first: the kill switch and what needs the
    operator, the queue, the workers, the spend, then as many recent events as ``height``
    leaves room for (all of them, and every worker, when ``height`` is None)."""
    from rich.console import Group
    from rich.text import Text

    from tri24es.budget import killswitch_banner
    from tri24es.timeutil import iso_time

    banner = killswitch_banner(g.killswitch)  # first: it stays in sight on any terminal
    header = Text(f"tri24es top — {iso_time(g.now)[:19]}Z — log head {g.head}", style="bold")
    alerts = _alerts(g)
    # The banner wraps rather than being cut: at 80 columns it may take two rows or three.
    shown = [Text(banner, style="bold white on red")] if banner else []
    queue = _queue_table(g)
    fixed = (3 * len(shown) + 1 + len(alerts) + 1 + (1 + queue.row_count) + 1 + 2 + 1)
    workers = _workers_table(g, None if height is None else max(height - fixed - 6, 1))
    used = fixed + 1 + workers.row_count + 2  # the events' title line, the blank before
    events = _recent(g, None if height is None else height - used, heartbeats)
    blank = Text("")
    return Group(*shown, header, *alerts, blank, queue, blank, workers, blank, _spend(g),
                 blank, events)


def top(
    ctx: typer.Context,
    interval: Annotated[
        float, typer.Option("--interval", min=0.1, help="Seconds between refreshes.")
    ] = 1.0,
    once: Annotated[
        bool, typer.Option("--once", help="Print one frame to stdout and exit.")
    ] = False,
    heartbeats: Annotated[
        bool, typer.Option("--heartbeats", help="List heartbeats and lease renewals too.")
    ] = False,
) -> None:
    """A live dashboard, most urgent first: the kill switch and what needs you (reviews,
    failures, lost workers, tasks no worker can take), the queue by state and priority, the
    workers, the spend rate against its limit with the last hour as a sparkline, then the
    latest events (heartbeats hidden) in the rows that are left.

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
            Console().print(frame(_glance(store, limits, heartbeats), heartbeats=heartbeats))
            return
        watch_for_changes(store)
        calm = threading.Event()  # never set: paces redraws when commits come fast
        console = Console()

        shown = 0  # the log head the frame on screen shows

        def draw() -> RenderableType:  # to the terminal's height as it is now
            nonlocal shown
            g = _glance(store, limits, heartbeats)
            shown = g.head
            return frame(g, console.height, heartbeats)

        with Live(draw(), console=console, auto_refresh=False, screen=False) as live:
            outage = Outage("top", lambda text: live.console.print(text, markup=False))
            try:
                while True:
                    try:
                        # Waits past what is shown, not the head now: a commit between the
                        # draw and this wait would otherwise wait a whole interval unseen.
                        if store.wait_for_change(shown, timeout=interval):
                            calm.wait(min(interval, 0.25))
                        live.update(draw(), refresh=True)
                        outage.ok()
                    except TransientStoreError as e:  # the last frame stays meanwhile
                        calm.wait(outage.failed(e))
            except KeyboardInterrupt:
                return


def glance(store: EventStore, limits: BudgetLimits, now: int,
           heartbeats: bool = False) -> Glance:
    """What a frame shows, read in one snapshot; the latest events without the fleet's pulse
    unless ``heartbeats`` (looked for among the last EVENTS_LOOKBACK)."""
    from dataclasses import replace

    from tri24es.events import CATALOG
    from tri24es.projections import connection_of, reads

    with store.snapshot() as tx:
        g = reads.glance(store, connection_of(tx), limits, now, recent=0)
        types = None if heartbeats else [t for t in CATALOG if t not in PULSE]
        found = store.read_page(max(g.head - EVENTS_LOOKBACK, 0), EVENTS_LOOKBACK, types)
    return replace(g, recent=found[-MAX_EVENTS:])


def _glance(store: EventStore, limits: BudgetLimits, heartbeats: bool) -> Glance:
    from tri24es.timeutil import now_us

    return glance(store, limits, now_us(), heartbeats)
