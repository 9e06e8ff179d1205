"""Token prices in exact ``Decimal`` dollars, from the ``genai-prices`` catalogue.

A model the catalogue does not know (or ``None``, or one it prices at $0) is never free:
every token it used, cached or not, is charged at a conservative fallback rate, and the
result carries a reason saying that the amount is an estimate.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal, InvalidOperation

MICRO = Decimal("1e-10")
"""The finest amount recorded: ten decimal places, as ``events.Money`` allows."""

_PER_MTOK = Decimal(1_000_000)


def to_money(value: Decimal | float | int | str) -> Decimal:
    """``value`` as dollars with at most ten decimal places, rounded up (never under-counted).

    Floats go through their shortest ``repr``, so ``0.1`` becomes ``Decimal("0.1")``, not
    the binary expansion.
    """
    amount = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    return amount.quantize(MICRO, rounding=ROUND_CEILING)


class Pricer:
    """Prices token usage per model; unknown models at ``fallback_usd_per_mtok``.

    Token counts follow Anthropic's convention: ``input_tokens`` are the prompt tokens that
    were neither read from nor written to the cache; ``cache_read_tokens`` and
    ``cache_write_tokens`` are counted separately, and all three are billed.
    """

    def __init__(self, fallback_usd_per_mtok: Decimal = Decimal("75")) -> None:
        if not fallback_usd_per_mtok.is_finite() or fallback_usd_per_mtok <= 0:
            raise ValueError(
                f"fallback price must be a positive amount, not {fallback_usd_per_mtok}"
            )
        self.fallback_usd_per_mtok = fallback_usd_per_mtok

    def price(
        self,
        model: str | None,
        input_tokens: int,
        output_tokens: int,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
    ) -> tuple[Decimal, str | None]:
        """``(amount, flagged)``: flagged is ``None`` when the catalogue priced the model."""
        counts = (input_tokens, output_tokens, cache_read_tokens, cache_write_tokens)
        if any(n < 0 for n in counts):
            raise ValueError(f"token counts must not be negative: {counts}")
        if model:
            amount = self._catalogue_price(model, *counts)
            if amount is not None:
                return amount, None
        return self._fallback(model, sum(counts))

    def _catalogue_price(
        self, model: str, input_tokens: int, output_tokens: int, cache_read: int, cache_write: int
    ) -> Decimal | None:
        # genai-prices counts cached tokens as part of input_tokens.
        import genai_prices  # 40 ms to import: only when tokens need a price

        usage = genai_prices.Usage(
            input_tokens=input_tokens + cache_read + cache_write,
            output_tokens=output_tokens,
            cache_read_tokens=cache_read,
            cache_write_tokens=cache_write,
        )
        try:
            calculation = genai_prices.calc_price(usage, model_ref=model)
            amount = to_money(calculation.total_price)
        except (LookupError, ValueError, TypeError, ArithmeticError, InvalidOperation):
            return None
        if amount <= 0 and any((input_tokens, output_tokens, cache_read, cache_write)):
            return None  # a $0 price for real tokens is a gap in the catalogue, not a gift
        return amount

    def _fallback(self, model: str | None, tokens: int) -> tuple[Decimal, str]:
        rate = self.fallback_usd_per_mtok
        name = f"unpriced model {model}" if model else "unknown model"
        return to_money(Decimal(tokens) * rate / _PER_MTOK), f"{name}: fallback ${rate}/Mtok"
