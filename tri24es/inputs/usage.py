"""Spend found in an agent's output, one line at a time, as the output streams.

The worker feeds every stdout line of the agent to :class:`UsageParser` and records each
:class:`Usage` it returns as a ``SpendRecorded`` event straight away. Shapes understood:

- Claude Code ``--output-format json``: the final ``{"type": "result", "total_cost_usd": X}``
  (or, with ``--verbose``, a JSON array of every message ending with that result);
- Claude Code ``--output-format stream-json``: each ``assistant`` message is priced live
  (a message id is counted once, at its latest usage), then the final ``result`` adds
  ``X - (recorded so far)`` if positive, so the total is Claude's own figure;
- Codex ``exec --json``: ``turn.completed`` usage is cumulative for the session, so the
  delta since the previous one is recorded; the model comes from a configuration event;
- Gemini CLI ``-o json`` (one pretty-printed object with ``stats.models``) and
  ``-o stream-json`` (a final ``result`` event with ``stats``), priced per model;
- generic lines ``{"cost_usd": 0.12}`` and ``{"model": m, "input_tokens": n, "output_tokens": n}``.

Anything else produces nothing. A line whose spend is negative, not a number, or more than
:data:`ABSURD_USD` is dropped and logged: such a figure is a broken report, not a spend,
and recording it would trip the kill switch for nothing. Amounts of zero are not recorded.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from tri24es.budget import DEFAULT_MAX_RECORD_USD, LARGEST_RECORD_USD, over_cap
from tri24es.pricing import Pricer, to_money

log = logging.getLogger(__name__)


MAX_TOKENS = 10**12
"""Token counts above this are not believed."""

_MAX_DOCUMENT_CHARS = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Usage:
    """One spend: dollars (>= 0, exact), and what is known of how it was spent.

    ``input_tokens`` counts every prompt token, cached or not; ``flagged`` says why the
    amount is an estimate (an unpriced model at the fallback rate), else ``None``.
    """

    amount: Decimal
    model: str | None
    input_tokens: int | None
    output_tokens: int | None
    flagged: str | None


@dataclass(slots=True)
class _Tokens:
    """Token counts in Anthropic's convention: ``input`` excludes the cached tokens."""

    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0

    @property
    def prompt(self) -> int:
        return self.input + self.cache_read + self.cache_write

    def minus(self, other: _Tokens) -> _Tokens:
        return _Tokens(
            max(self.input - other.input, 0),
            max(self.output - other.output, 0),
            max(self.cache_read - other.cache_read, 0),
            max(self.cache_write - other.cache_write, 0),
        )


@dataclass(slots=True)
class _ClaudeMessage:
    amount: Decimal
    tokens: _Tokens


@dataclass(slots=True)
class _State:
    claude_messages: dict[str, _ClaudeMessage] = field(default_factory=dict)
    claude_since_result: Decimal = Decimal(0)
    # the model of the session (its init line, its messages): a result line without a
    # modelUsage breakdown is recorded under it, not under no model
    claude_model: str | None = None
    codex_model: str | None = None
    codex_total: _Tokens | None = None
    gemini_model: str | None = None


class UsageParser:
    """Turns agent output lines into spends; keeps the state that streams need."""

    def __init__(self, pricer: Pricer | None = None,
                 max_usd: Decimal = DEFAULT_MAX_RECORD_USD) -> None:
        self._pricer = pricer or Pricer()
        self._max_usd = max_usd
        #: (why, the line) of each line that reported a cost that could not be read: the
        #: worker counts them in the log (SpendLinesSkipped), never drops them in silence.
        self.skipped: list[tuple[str, str]] = []
        self._document = ""
        self._state = _State()
        self._pending: list[str] = []
        self._pending_chars = 0

    def feed(self, line: str | bytes) -> list[Usage]:
        """Zero or more spends found in this output line. Never raises."""
        try:
            return self._feed(line)
        except Exception:  # a parser bug must never stop the worker's output pump
            log.exception("usage parser failed on an output line; it was skipped")
            return []

    def finish(self) -> list[Usage]:
        """At agent exit: whatever the buffered output still holds; then start afresh.

        Claude's ``result`` line settles its own stream and Codex/Gemini report totals as
        they go, so an agent killed mid-run keeps the spends already returned and nothing is
        guessed for the rest.
        """
        try:
            text = "\n".join(self._pending)
            self._drop_pending()
            self._state = _State()
            return self._parse_document(text) if text else []
        except Exception:  # see feed()
            log.exception("usage parser failed at the end of the output")
            return []

    # --- lines and documents ------------------------------------------------------------

    def _feed(self, line: str | bytes) -> list[Usage]:
        text = line.decode("utf-8", errors="replace") if isinstance(line, bytes) else line
        text = text.rstrip("\r\n")
        if self._pending:
            return self._continue_document(text)
        stripped = text.strip()
        if stripped == "{" and text.startswith("{"):
            self._add_pending(text)  # the first line of a pretty-printed object (Gemini -o json)
            return []
        if stripped[:1] not in ("{", "["):
            return []
        return self._parse_document(stripped)

    def _continue_document(self, text: str) -> list[Usage]:
        # Inside a pretty-printed object every line is indented except the closing brace; an
        # unindented line means the "{" was not the start of one, so the line stands alone.
        if text[:1] in (" ", "\t") or text == "":
            self._add_pending(text)
            return []
        if text.rstrip() == "}":
            document = "\n".join([*self._pending, text])
            self._drop_pending()
            return self._parse_document(document)
        self._drop_pending()
        return self._feed(text)

    def _add_pending(self, text: str) -> None:
        self._pending.append(text)
        self._pending_chars += len(text) + 1
        if self._pending_chars > _MAX_DOCUMENT_CHARS:
            self._drop_pending()

    def _drop_pending(self) -> None:
        self._pending.clear()
        self._pending_chars = 0

    def _parse_document(self, text: str) -> list[Usage]:
        self._document = text
        try:
            value = json.loads(text, parse_float=Decimal, parse_constant=_reject_constant)
        except (ValueError, RecursionError):
            return []
        objects: Iterable[Any] = value if isinstance(value, list) else [value]
        found: list[Usage] = []
        for obj in objects:
            if isinstance(obj, dict):
                found.extend(self._accept(self._dispatch(obj)))
        return found

    def _accept(self, usages: list[Usage]) -> list[Usage]:
        accepted = []
        for usage in usages:
            if usage.amount <= 0:
                continue
            if not _encodable(usage.model) or not _encodable(usage.flagged):
                # a model named with a lone surrogate ("\ud800" in the JSON) is kept as "?":
                # no event holding it can be written, and the spend must be
                usage = Usage(usage.amount, _encoded(usage.model), usage.input_tokens,
                              usage.output_tokens, _encoded(usage.flagged))
            amount, flagged = over_cap(usage.amount, self._max_usd)
            if flagged is not None:  # recorded all the same: it may be what must stop the fleet
                log.warning("an agent reported %s", flagged)
                usage = Usage(amount, usage.model, usage.input_tokens, usage.output_tokens,
                              flagged)
            accepted.append(usage)
        return accepted

    def _unreadable(self, key: str, value: object) -> list[Usage]:
        self.skipped.append((f"{key} {value!r} is not a number", self._document[:200]))
        return []

    # --- formats ------------------------------------------------------------------------

    def _dispatch(self, obj: dict[str, Any]) -> list[Usage]:
        kind = obj.get("type")
        msg = obj.get("msg")
        stats = obj.get("stats")
        if kind == "result" and ("total_cost_usd" in obj or "cost_usd" in obj):
            return self._claude_result(obj)
        if kind == "assistant" and isinstance(obj.get("message"), dict):
            return self._claude_assistant(obj["message"])
        if kind == "system" and obj.get("subtype") == "init":
            self._state.claude_model = _text(obj.get("model")) or self._state.claude_model
            return []
        if kind == "result" and isinstance(stats, dict):
            return self._gemini_stream_result(stats)
        if kind == "init":
            self._state.gemini_model = _text(obj.get("model")) or self._state.gemini_model
            return []
        if kind in ("thread.started", "turn.completed", "turn_context"):
            return self._codex(kind, obj)
        if isinstance(msg, dict) and msg.get("type") in ("session_configured", "token_count"):
            return self._codex(msg["type"], msg)
        if isinstance(stats, dict) and isinstance(stats.get("models"), dict):
            return self._gemini_json(stats["models"])
        if "cost_usd" in obj:
            return self._generic_cost(obj)
        if "input_tokens" in obj and "output_tokens" in obj:
            return self._generic_tokens(obj)
        return []

    def _claude_assistant(self, message: dict[str, Any]) -> list[Usage]:
        tokens = _claude_tokens(message.get("usage"))
        if tokens is None:
            return []
        model = _text(message.get("model"))
        self._state.claude_model = model or self._state.claude_model
        amount, flagged = self._price(model, tokens)
        message_id = _text(message.get("id"))
        seen = self._state.claude_messages.get(message_id) if message_id else None
        if seen is not None:
            # A message streamed in several lines repeats its usage; count only what grew.
            delta = amount - seen.amount
            if delta <= 0:
                return []
            found = Usage(delta, model, *_grown(tokens, seen.tokens), flagged)
            seen.amount, seen.tokens = amount, tokens
        else:
            if message_id:
                self._state.claude_messages[message_id] = _ClaudeMessage(amount, tokens)
            found = _usage(amount, model, tokens, flagged)
        accepted = self._accept([found])
        self._state.claude_since_result += sum((u.amount for u in accepted), Decimal(0))
        return accepted

    def _claude_result(self, obj: dict[str, Any]) -> list[Usage]:
        key = "total_cost_usd" if "total_cost_usd" in obj else "cost_usd"
        reported = _amount(obj.get(key))
        already = self._state.claude_since_result
        self._state.claude_since_result = Decimal(0)
        if reported is None:
            return self._unreadable(key, obj.get(key))
        if reported <= already:
            return []
        model = _top_model(obj.get("modelUsage")) or self._state.claude_model
        tokens = _claude_tokens(obj.get("usage")) if already == 0 else None
        if tokens is None:
            return [Usage(reported - already, model, None, None, None)]
        return [_usage(reported, model, tokens, None)]

    def _codex(self, kind: str, obj: dict[str, Any]) -> list[Usage]:
        state = self._state
        if kind in ("thread.started", "session_configured"):
            state.codex_total = None  # a new session: its counters start from zero
            state.codex_model = _text(obj.get("model")) or state.codex_model
        elif kind == "turn_context" and isinstance(obj.get("payload"), dict):
            state.codex_model = _text(obj["payload"].get("model")) or state.codex_model
        elif kind == "turn.completed" and isinstance(obj.get("usage"), dict):
            return self._codex_total(obj["usage"])
        elif kind == "token_count" and isinstance(obj.get("info"), dict):
            total = obj["info"].get("total_token_usage")
            if isinstance(total, dict):
                return self._codex_total(total)
        return []

    def _codex_total(self, usage: dict[str, Any]) -> list[Usage]:
        counts = _counts(usage, ("input_tokens", "output_tokens"), ("cached_input_tokens",))
        if counts is None:
            return []
        cached = counts["cached_input_tokens"]
        # OpenAI counts the cached tokens inside input_tokens.
        total = _Tokens(
            input=max(counts["input_tokens"] - cached, 0),
            output=counts["output_tokens"],
            cache_read=cached,
        )
        previous = self._state.codex_total
        self._state.codex_total = total
        if previous is None:  # the session's first report counts in full
            return [self._priced(self._state.codex_model, total)]
        if _shrank(total, previous):
            # A counter that went back is a new baseline, not a new session (that starts
            # with thread.started): counting it in full would count it all twice.
            return []
        return [self._priced(self._state.codex_model, total.minus(previous))]

    def _gemini_json(self, models: dict[str, Any]) -> list[Usage]:
        found = []
        for name, metrics in models.items():
            tokens = metrics.get("tokens") if isinstance(metrics, dict) else None
            counts = _counts(tokens, ("prompt", "candidates"), ("cached", "thoughts", "tool"))
            if counts is None:
                continue
            # "prompt" includes the cached tokens; thoughts bill as output, tool prompts as input.
            billed = _Tokens(
                input=max(counts["prompt"] - counts["cached"], 0) + counts["tool"],
                output=counts["candidates"] + counts["thoughts"],
                cache_read=counts["cached"],
            )
            found.append(self._priced(_text(name), billed))
        return found

    def _gemini_stream_result(self, stats: dict[str, Any]) -> list[Usage]:
        models = stats.get("models")
        if isinstance(models, dict) and models:
            found = []
            for name, metrics in models.items():
                billed = _gemini_stream_tokens(metrics)
                if billed is not None:
                    found.append(self._priced(_text(name), billed))
            return found
        billed = _gemini_stream_tokens(stats)
        return [] if billed is None else [self._priced(self._state.gemini_model, billed)]

    def _generic_cost(self, obj: dict[str, Any]) -> list[Usage]:
        amount = _amount(obj.get("cost_usd"))
        if amount is None:
            return self._unreadable("cost_usd", obj.get("cost_usd"))
        counts = _counts(obj, ("input_tokens", "output_tokens"), ())
        model = _text(obj.get("model"))
        if counts is None:
            return [Usage(amount, model, None, None, None)]
        return [Usage(amount, model, counts["input_tokens"], counts["output_tokens"], None)]

    def _generic_tokens(self, obj: dict[str, Any]) -> list[Usage]:
        counts = _counts(
            obj, ("input_tokens", "output_tokens"), ("cache_read_tokens", "cache_write_tokens")
        )
        if counts is None:
            return []
        tokens = _Tokens(
            input=counts["input_tokens"],
            output=counts["output_tokens"],
            cache_read=counts["cache_read_tokens"],
            cache_write=counts["cache_write_tokens"],
        )
        return [self._priced(_text(obj.get("model")), tokens)]

    # --- pricing ------------------------------------------------------------------------

    def _price(self, model: str | None, tokens: _Tokens) -> tuple[Decimal, str | None]:
        return self._pricer.price(
            model, tokens.input, tokens.output, tokens.cache_read, tokens.cache_write
        )

    def _priced(self, model: str | None, tokens: _Tokens) -> Usage:
        amount, flagged = self._price(model, tokens)
        return _usage(amount, model, tokens, flagged)


# --- helpers ----------------------------------------------------------------------------


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number a spend can have")


def _usage(amount: Decimal, model: str | None, tokens: _Tokens, flagged: str | None) -> Usage:
    return Usage(amount, model, tokens.prompt, tokens.output, flagged)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _encodable(text: str | None) -> bool:
    if text is None:
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _encoded(text: str | None) -> str | None:
    return None if text is None else text.encode("utf-8", "replace").decode()


def _amount(value: object) -> Decimal | None:
    """A reported dollar figure (a JSON number or a numeric string, read exactly), or
    ``None`` unless it is a finite number >= 0. Over the per-record cap it is still an
    amount: ``_accept`` flags it."""
    if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
        return None
    try:
        amount = Decimal(value.strip() if isinstance(value, str) else value)
        if not amount.is_finite() or amount < 0:
            return None
        return amount if amount > LARGEST_RECORD_USD else to_money(amount)  # _accept caps it
    except (InvalidOperation, ValueError):
        return None


def _count(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if 0 <= value <= MAX_TOKENS else None


def _counts(
    usage: object, required: tuple[str, ...], optional: tuple[str, ...]
) -> dict[str, int] | None:
    """The token counts under these keys; ``None`` if one is missing (when required) or bad."""
    if not isinstance(usage, dict):
        return None
    counts: dict[str, int] = {}
    for key in (*required, *optional):
        raw = usage.get(key)
        if raw is None and key in optional:
            counts[key] = 0
            continue
        count = _count(raw)
        if count is None:
            return None
        counts[key] = count
    return counts


def _claude_tokens(usage: object) -> _Tokens | None:
    counts = _counts(
        usage,
        ("input_tokens", "output_tokens"),
        ("cache_read_input_tokens", "cache_creation_input_tokens"),
    )
    if counts is None:
        return None
    return _Tokens(
        input=counts["input_tokens"],
        output=counts["output_tokens"],
        cache_read=counts["cache_read_input_tokens"],
        cache_write=counts["cache_creation_input_tokens"],
    )


def _gemini_stream_tokens(stats: object) -> _Tokens | None:
    counts = _counts(stats, ("input_tokens", "output_tokens"), ("cached", "total_tokens"))
    if counts is None:
        return None
    prompt, cached = counts["input_tokens"], counts["cached"]
    # input_tokens includes the cached ones; output_tokens leaves out the thoughts, which the
    # total still counts, so whatever the total holds beyond the prompt is billed as output.
    return _Tokens(
        input=max(prompt - cached, 0),
        output=max(counts["output_tokens"], counts["total_tokens"] - prompt),
        cache_read=cached,
    )


def _shrank(now: _Tokens, before: _Tokens) -> bool:
    return any(
        a < b
        for a, b in (
            (now.prompt, before.prompt),
            (now.output, before.output),
            (now.cache_read, before.cache_read),
        )
    )


def _grown(now: _Tokens, before: _Tokens) -> tuple[int, int]:
    grown = now.minus(before)
    return grown.prompt, grown.output


def _top_model(model_usage: object) -> str | None:
    """The model that cost the most in Claude's ``modelUsage`` breakdown."""
    if not isinstance(model_usage, dict) or not model_usage:
        return None
    costs = {
        name: _amount(entry.get("costUSD")) or Decimal(0)
        for name, entry in model_usage.items()
        if isinstance(name, str) and isinstance(entry, dict)
    }
    return max(costs, key=lambda name: costs[name]) if costs else None
