"""Budget commands: spend, warnings, the kill switch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from eventlog import ANY
from tri24es import events as ev
from tri24es.budget import (
    BudgetLimits,
    ResetCheck,
    check_reset,
    day_bounds,
    enforced_limits,
    parse_amount,
)
from tri24es.events import (
    Envelope,
    encode,
)
from tri24es.names import BUDGET_STREAM, KILL_SWITCH_STREAM, SPEND_STREAM
from tri24es.pricing import Pricer
from tri24es.projections import connection_of, reads
from tri24es.projections.tables.killswitch import read_killswitch
from tri24es.projections.upkeep import apply_inline
from tri24es.services.base import (
    ServiceBase,
    ServiceError,
)
from tri24es.timeutil import from_us

DEFAULT_LIMITS = BudgetLimits()


class ResetRefused(ServiceError):
    """The kill switch was not reset: the breach that turned it on still holds."""

    def __init__(self, check: ResetCheck) -> None:
        super().__init__("the kill switch was not reset: " + "; ".join(check.explain()))
        self.check = check


@dataclass(frozen=True)
class Spent:
    amount: Decimal
    flagged: str | None  # why the amount is an estimate (an unpriced model), if it is


class BudgetCommands(ServiceBase):
    # --- budget ------------------------------------------------------------------------

    def record_spend(self, spend: ev.SpendRecorded, event_id: str | None = None) -> bool:
        """Record spend; False if ``event_id`` (e.g. derived from a spend.jsonl line) was
        recorded before, so the same spend is never counted twice."""
        with self.store.transaction() as tx:
            conn = connection_of(tx)
            if event_id is not None and tx.events_by_id([event_id]):
                return False
            new = encode(spend, self._metadata, event_id)
            r = tx.append(SPEND_STREAM, [new])[0]
            apply_inline(conn, [Envelope(r.position, r.stream, r.version, r.event_id, spend,
                                         r.recorded_at, r.metadata)])
            return True

    def record_spends(self, spends: Sequence[ev.SpendRecorded | ev.SpendLinesSkipped]) -> int:
        """Record many spends in one transaction (an agent's output streams them fast).
        How many were recorded."""
        if not spends:
            return 0
        with self.store.transaction() as tx:
            conn = connection_of(tx)
            recorded = tx.append(SPEND_STREAM, [encode(s, self._metadata) for s in spends])
            apply_inline(conn, [Envelope(r.position, r.stream, r.version, r.event_id, spend,
                                         r.recorded_at, r.metadata)
                                for r, spend in zip(recorded, spends, strict=True)])
            return len(recorded)

    def record_spend_by_hand(
        self, *, usd: str | None, model: str | None, input_tokens: int | None,
        output_tokens: int | None, task: str | None, worker: str | None, max_usd: Decimal,
        pricer: Pricer,
    ) -> Spent:
        """Record spend given in dollars, or as tokens of a model priced by ``pricer``
        (``spend record``). Raises BadAmount, recording nothing, for an amount that is not a
        number, negative, or over ``max_usd``."""
        flagged = None
        if usd is not None:
            amount = parse_amount(usd, max_usd)
        else:
            priced, flagged = pricer.price(model, input_tokens or 0, output_tokens or 0)
            amount = parse_amount(priced, max_usd)
        self.record_spend(ev.SpendRecorded(
            amount=amount, model=model, input_tokens=input_tokens, output_tokens=output_tokens,
            task=task, worker=worker, source="cli", occurred_at=from_us(self.clock()),
            flagged=flagged,
        ))
        return Spent(amount, flagged)

    def record_spend_many(
        self, spends: Sequence[tuple[ev.SpendRecorded | ev.SpendLinesSkipped, str]],
    ) -> int:
        """Record many spends (and lines skipped), each with its event id, in one
        transaction; ids recorded before are skipped. Returns how many spends were new."""
        with self.store.transaction() as tx:
            conn = connection_of(tx)
            ids = [eid for _, eid in spends]
            known = {r.event_id for i in range(0, len(ids), 500)  # SQL variable limits
                     for r in tx.events_by_id(ids[i:i + 500])}
            fresh = {eid: spend for spend, eid in spends if eid not in known}
            if not fresh:
                return 0
            recorded = tx.append(SPEND_STREAM, [encode(spend, self._metadata, eid)
                                                   for eid, spend in fresh.items()])
            apply_inline(conn, [Envelope(r.position, r.stream, r.version, r.event_id, spend,
                                         r.recorded_at, r.metadata)
                                for r, spend in zip(recorded, fresh.values(), strict=True)])
            return sum(isinstance(spend, ev.SpendRecorded) for spend in fresh.values())

    def record_watchdog_start(self, started: ev.BudgetWatchdogStarted) -> None:
        with self.store.transaction() as tx:
            self._append(connection_of(tx), tx, BUDGET_STREAM, [started], ANY)

    def raise_budget_warning(self, warning: ev.BudgetWarningRaised) -> None:
        with self.store.transaction() as tx:
            tx.append(BUDGET_STREAM, [encode(warning, self._metadata)])

    def activate_killswitch(self, event: ev.KillSwitchActivated) -> bool:
        """Activate the kill switch exactly once however many callers race: False if it
        was already active."""
        with self.store.transaction() as tx:
            conn = connection_of(tx)
            state = read_killswitch(conn)
            if state.active:
                return False
            version = tx.stream_version(KILL_SWITCH_STREAM)
            self._append(conn, tx, KILL_SWITCH_STREAM, [event], version)
            return True

    def reset_killswitch(
        self, *, by: str | None, reason: str, limits: BudgetLimits = DEFAULT_LIMITS,
        fresh_window: bool = False, allow_today: Decimal | None = None,
    ) -> bool:
        """Turn the kill switch off: False if it was not on. Raises ResetRefused, recording
        nothing, while a breach would still hold after the reset under the limits the last
        budget watchdog started with (else ``limits``): the watchdog
        would turn the switch on again at its next look, at spend from before the reset,
        and workers could claim tasks in between. ``fresh_window`` (``--force``) starts the
        rate window at the reset; ``allow_today`` allows that much over the daily limit for
        the rest of the day. The check and the reset are one transaction, so spend recorded
        meanwhile cannot slip between them."""
        with self.store.transaction() as tx:
            conn = connection_of(tx)
            switch = read_killswitch(conn)
            if not switch.active:
                return False
            limits, whose = enforced_limits(switch, limits)
            now = self.clock()
            check = check_reset(
                reads.read_budget(conn, limits, now), limits,
                reads.window_spends(conn, limits, now), fresh_window=fresh_window,
                allow_today=allow_today or Decimal(0), whose=whose)
            if not check.ok:
                raise ResetRefused(check)
            day_start, day_end = day_bounds(now, limits.zone())
            allowed = {} if not allow_today else {
                "allow_today": allow_today, "day_start": from_us(day_start),
                "day_end": from_us(day_end)}
            version = tx.stream_version(KILL_SWITCH_STREAM)
            self._append(conn, tx, KILL_SWITCH_STREAM, [ev.KillSwitchReset(
                by=by, reason=reason, rate_window_start=from_us(now) if fresh_window else None,
                **allowed)], version)
            return True


