"""The agent-output usage parser and the pricer behind it."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import genai_prices
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tri24es.inputs.usage import Usage, UsageParser
from tri24es.pricing import Pricer, to_money

FIXTURES = Path(__file__).parent.parent / "fixtures" / "usage"
SONNET = "claude-sonnet-4-5-20250929"


def parse(lines: list[str] | list[bytes], pricer: Pricer | None = None) -> list[Usage]:
    parser = UsageParser(pricer)
    found = [usage for line in lines for usage in parser.feed(line)]
    return found + parser.finish()


def parse_fixture(name: str) -> list[Usage]:
    return parse((FIXTURES / name).read_text(encoding="utf-8").splitlines(keepends=True))


def total(usages: list[Usage]) -> Decimal:
    return sum((u.amount for u in usages), Decimal(0))


def line(obj: object) -> str:
    return json.dumps(obj) + "\n"


def claude_assistant(message_id: str, output_tokens: int, model: str = SONNET) -> str:
    usage = {
        "input_tokens": 4,
        "cache_creation_input_tokens": 6000,
        "cache_read_input_tokens": 12000,
        "output_tokens": output_tokens,
    }
    message = {"id": message_id, "model": model, "usage": usage}
    return line({"type": "assistant", "message": message})


# --- every fixture, end to end ---------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected_total", "count"),
    [
        ("claude_json.json", Decimal("0.18734265"), 1),
        ("claude_stream.jsonl", Decimal("0.0620147"), 5),
        ("codex_exec.jsonl", Decimal("4.132575"), 2),
        ("gemini_json.json", Decimal("0.0347167"), 2),
        ("gemini_stream.jsonl", Decimal("0.02650375"), 1),
        ("generic_cost.jsonl", Decimal("0.1179"), 3),
        ("generic_tokens.jsonl", Decimal("0.3940652"), 3),
    ],
)
def test_fixture_totals(name: str, expected_total: Decimal, count: int) -> None:
    usages = parse_fixture(name)
    assert total(usages) == expected_total
    assert len(usages) == count
    assert all(u.amount > 0 and u.amount == to_money(u.amount) for u in usages)


def test_every_fixture_is_tested_and_described() -> None:
    readme = (FIXTURES / "README.md").read_text(encoding="utf-8")
    for path in FIXTURES.iterdir():
        if path.name != "README.md":
            assert f"`{path.name}`" in readme


def test_claude_json_records_claudes_own_figure_unflagged() -> None:
    [usage] = parse_fixture("claude_json.json")
    assert usage == Usage(Decimal("0.18734265"), SONNET, 31 + 19884 + 187342, 2417, None)


def test_claude_verbose_json_array_counts_once() -> None:
    messages = [json.loads(claude_assistant("msg_a", 50))]
    result = {"type": "result", "total_cost_usd": 0.5, "usage": {}}
    assert total(parse([json.dumps([*messages, result])])) == Decimal("0.5")


def test_gemini_json_prices_each_model_with_thoughts_as_output() -> None:
    pro, lite = parse_fixture("gemini_json.json")
    assert (pro.model, pro.input_tokens, pro.output_tokens) == ("gemini-2.5-pro", 31806, 612 + 1411)
    expected = genai_prices.calc_price(
        genai_prices.Usage(input_tokens=31806, output_tokens=2023, cache_read_tokens=22592),
        model_ref="gemini-2.5-pro",
    ).total_price
    assert pro.amount == expected
    assert lite.flagged is None


def test_gemini_stream_result_without_models_uses_the_init_model() -> None:
    stats = {"total_tokens": 1500, "input_tokens": 1000, "output_tokens": 400, "cached": 0}
    usages = parse(
        [
            line({"type": "init", "session_id": "s", "model": "gemini-2.5-flash"}),
            line({"type": "result", "status": "success", "stats": stats}),
        ]
    )
    assert [(u.model, u.input_tokens, u.output_tokens) for u in usages] == [
        ("gemini-2.5-flash", 1000, 500)
    ]


# --- Claude stream-json: live prices, then the result's adjustment -----------------------


def test_claude_stream_adjustment_makes_the_total_claudes_figure() -> None:
    usages = parse_fixture("claude_stream.jsonl")
    live, adjustment = usages[:-1], usages[-1]
    assert all(u.model == SONNET and u.flagged is None for u in live)
    assert total(live) + adjustment.amount == Decimal("0.0620147")
    assert adjustment == Usage(Decimal("0.0164567"), SONNET, None, None, None)


def test_claude_stream_never_adjusts_downwards() -> None:
    result = {"type": "result", "total_cost_usd": 0.0001}
    usages = parse([claude_assistant("msg_a", 500), line(result)])
    assert len(usages) == 1
    assert usages[0].amount > Decimal("0.0001")


def test_claude_stream_repeated_message_id_counts_its_latest_usage_once() -> None:
    pricer = Pricer()
    first = parse([claude_assistant("msg_a", 1)])
    repeated = parse([claude_assistant("msg_a", 1), claude_assistant("msg_a", 1)])
    grown = parse([claude_assistant("msg_a", 1), claude_assistant("msg_a", 300)])
    assert repeated == first
    final, _ = pricer.price(SONNET, 4, 300, 12000, 6000)
    assert total(grown) == final
    assert grown[1].input_tokens == 0
    assert grown[1].output_tokens == 299


def test_claude_result_after_stream_is_not_double_counted() -> None:
    live = parse([claude_assistant("msg_a", 100), claude_assistant("msg_b", 100)])
    reported = total(live) + Decimal("0.01")
    result = {"type": "result", "total_cost_usd": str(reported)}
    lines = [claude_assistant("msg_a", 100), claude_assistant("msg_b", 100)]
    # A numeric string is read exactly, as a number is.
    assert total(parse([*lines, line(result)])) == reported
    result["total_cost_usd"] = float(reported)  # type: ignore[assignment]
    assert total(parse([*lines, line(result)])) == reported


def test_claude_result_without_a_breakdown_is_recorded_under_the_sessions_model() -> None:
    # The result settles the stream (here: beyond what the messages were priced at); without
    # modelUsage, its remainder goes to the model of the session, not to no model.
    init = {"type": "system", "subtype": "init", "model": SONNET}
    settled = {"type": "result", "total_cost_usd": 5.0}
    *_, remainder = parse([line(init), claude_assistant("msg_a", 100), line(settled)])
    assert remainder.model == SONNET
    [alone] = parse([line(init), line(settled)])
    assert (alone.model, alone.amount) == (SONNET, Decimal(5))
    assert parse([line(settled)])[0].model is None  # no session seen: nothing is guessed


# --- Codex exec --json: cumulative totals, recorded as deltas -------------------------------


def test_codex_records_deltas_of_cumulative_usage() -> None:
    first, second = parse_fixture("codex_exec.jsonl")
    assert (first.input_tokens, first.output_tokens) == (24763, 1342)
    assert (second.input_tokens, second.output_tokens) == (53490 - 24763, 1611 - 1342)
    pricer = Pricer()
    expected, reason = pricer.price(None, 53490 - 24763 - (45568 - 21120), 269, 45568 - 21120)
    assert second.amount == expected
    assert second.flagged == reason == "unknown model: fallback $75/Mtok"


def test_codex_model_from_configuration_event_is_priced() -> None:
    turn = {"type": "turn.completed", "usage": {"input_tokens": 1000, "output_tokens": 100}}
    context = {"type": "turn_context", "payload": {"model": "gpt-5-codex"}}
    [usage] = parse([line({"type": "thread.started", "thread_id": "t"}), line(context), line(turn)])
    assert usage.model == "gpt-5-codex"
    assert usage.flagged is None
    assert usage.amount == Pricer().price("gpt-5-codex", 1000, 100)[0]


def test_codex_new_thread_restarts_the_counters() -> None:
    turn = line({"type": "turn.completed", "usage": {"input_tokens": 1000, "output_tokens": 10}})
    started = line({"type": "thread.started", "thread_id": "t"})
    usages = parse([started, turn, started, turn])
    assert [u.input_tokens for u in usages] == [1000, 1000]


def test_codex_repeated_total_records_nothing_new() -> None:
    turn = line({"type": "turn.completed", "usage": {"input_tokens": 1000, "output_tokens": 10}})
    assert len(parse([turn, turn])) == 1


# --- pricing -------------------------------------------------------------------------------


def test_known_model_is_priced_by_genai_prices() -> None:
    amount, flagged = Pricer().price(
        SONNET, 1000, 500, cache_read_tokens=200, cache_write_tokens=50
    )
    usage = genai_prices.Usage(
        input_tokens=1250, output_tokens=500, cache_read_tokens=200, cache_write_tokens=50
    )
    expected = genai_prices.calc_price(usage, model_ref=SONNET).total_price
    assert amount > 0
    assert amount == expected
    assert flagged is None


@pytest.mark.parametrize("model", [None, "", "gpt-x-unreleased"])
def test_unpriced_model_is_flagged_at_the_fallback_rate(model: str | None) -> None:
    pricer = Pricer(Decimal("75"))
    amount, flagged = pricer.price(
        model, 1000, 2000, cache_read_tokens=3000, cache_write_tokens=4000
    )
    assert amount == Decimal("0.75")  # 10,000 tokens at $75 per million
    assert flagged is not None
    assert "fallback $75/Mtok" in flagged
    if model:
        assert model in flagged


def test_unpriced_model_in_output_is_flagged_never_free() -> None:
    [usage] = parse([line({"model": "gpt-x", "input_tokens": 100, "output_tokens": 0})])
    assert usage.amount == Decimal("0.0075")
    assert usage.flagged == "unpriced model gpt-x: fallback $75/Mtok"


def test_fallback_rate_is_configurable() -> None:
    tokens = line({"input_tokens": 10**6, "output_tokens": 0})
    [usage] = parse([tokens], Pricer(Decimal("1.5")))
    assert usage.amount == Decimal("1.5")


@pytest.mark.parametrize("rate", [Decimal(0), Decimal(-1), Decimal("NaN"), Decimal("Infinity")])
def test_fallback_rate_must_be_positive(rate: Decimal) -> None:
    with pytest.raises(ValueError, match="fallback price"):
        Pricer(rate)


def test_to_money_has_no_float_artefacts() -> None:
    assert to_money(0.1) == Decimal("0.1")
    assert to_money(Decimal("0.00000000001")) == Decimal("1E-10")  # rounded up, never lost


# --- what produces nothing ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "",
        "plain text output\n",
        "{not json\n",
        '{"cost_usd": -1}\n',
        '{"cost_usd": NaN}\n',
        '{"cost_usd": Infinity}\n',
        '{"cost_usd": true}\n',
        '{"cost_usd": 0}\n',
        '{"model": "gpt-4.1", "input_tokens": -5, "output_tokens": 1}\n',
        '{"model": "gpt-4.1", "input_tokens": 1.5, "output_tokens": 1}\n',
        '{"input_tokens": 10000000000000, "output_tokens": 1}\n',
        '{"type": "turn.completed"}\n',
        '{"type": "assistant", "message": {"usage": "lots"}}\n',
        '{"msg": "hello", "level": "info"}\n',
        "[1, 2, 3]\n",
        '"just a string"\n',
    ],
)
def test_lines_without_a_believable_spend_produce_nothing(text: str) -> None:
    assert parse([text]) == []


@pytest.mark.parametrize(("text", "amount"), [
    ('{"cost_usd": 1000.01}\n', Decimal("1000.01")),
    ('{"type": "result", "total_cost_usd": 5000}\n', Decimal("5000")),
    ('{"cost_usd": 1e30}\n', Decimal("9999999999.9999999999")),  # the most a record holds
])
def test_a_spend_over_the_per_record_cap_is_recorded_flagged_never_dropped(
        text: str, amount: Decimal) -> None:
    [usage] = parse([text])
    assert usage.amount == amount
    assert usage.flagged is not None
    assert "over the per-record cap of $1000" in usage.flagged


def test_huge_token_counts_are_priced_and_flagged_over_the_cap() -> None:
    [usage] = parse(['{"input_tokens": 9000000000, "output_tokens": 9000000000}\n'])
    assert usage.amount > 1000
    assert usage.flagged is not None
    assert "over the per-record cap" in usage.flagged


def test_a_numeric_string_is_read_exactly() -> None:
    assert parse(['{"cost_usd": "0.50"}\n']) == [Usage(Decimal("0.50"), None, None, None, None)]


@pytest.mark.parametrize("text", ['{"cost_usd": "lots"}\n', '{"cost_usd": true}\n',
                                  '{"type": "result", "total_cost_usd": null}\n'])
def test_a_cost_that_cannot_be_read_is_counted_as_skipped(text: str) -> None:
    parser = UsageParser()
    assert parser.feed(text) == []
    [(why, sample)] = parser.skipped
    assert "is not a number" in why
    assert sample == text.strip()


def test_a_codex_counter_that_goes_back_is_a_new_baseline_not_counted_again() -> None:
    parser = UsageParser()

    def turn(i: int, o: int) -> str:
        return json.dumps({"type": "turn.completed", "usage": {
            "input_tokens": i, "output_tokens": o}})
    first = total(parser.feed(turn(1000, 100)))
    assert first > 0
    assert parser.feed(turn(999, 100)) == []  # one token back: nothing counted twice
    grown = parser.feed(turn(1999, 100))  # and what grows from there counts
    assert total(grown) > 0
    assert total(grown) < first * 2


def test_generic_cost_with_model_is_recorded_as_reported() -> None:
    [usage] = parse(['{"cost_usd": 0.12, "model": "whatever"}'])
    assert usage == Usage(Decimal("0.12"), "whatever", None, None, None)


def test_bytes_lines_are_decoded() -> None:
    assert total(parse([b'{"cost_usd": 0.25}\n', b"\xff\xfe binary noise\n"])) == Decimal("0.25")


def test_unclosed_pretty_printed_object_does_not_swallow_later_lines() -> None:
    lines = ["{\n", '  "response": "cut off\n', '{"cost_usd": 0.3}\n']
    assert total(parse(lines)) == Decimal("0.3")


def test_pretty_printed_object_still_open_at_exit_is_read_by_finish() -> None:
    parser = UsageParser()
    for text in ["{\n", '  "cost_usd": 0.2\n']:
        assert parser.feed(text) == []
    assert parser.finish() == []  # never closed: not a JSON document
    for text in ["{\n", '  "cost_usd": 0.2\n', "}"]:
        found = parser.feed(text)
    assert total(found) == Decimal("0.2")


# --- never raises, never invents ---------------------------------------------------------------

USAGE_KEYS = {
    "cost_usd",
    "total_cost_usd",
    "input_tokens",
    "output_tokens",
    "usage",
    "stats",
    "msg",
    "message",
    "info",
    "tokens",
    "total_token_usage",
}
json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
plain_keys = st.text(max_size=12).filter(lambda key: key not in USAGE_KEYS)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(plain_keys, children, max_size=4)
    ),
    max_leaves=20,
)
type_values = st.sampled_from(
    ["result", "assistant", "init", "thread.started", "turn.completed", "turn_context", "system"]
)
objects_without_usage = st.dictionaries(plain_keys, json_values, max_size=6) | st.builds(
    lambda obj, kind: {**obj, "type": kind},
    st.dictionaries(plain_keys, json_values, max_size=6),
    type_values,
)


@settings(max_examples=300)
@given(st.lists(st.text() | st.binary(), max_size=8))
def test_random_lines_never_raise(lines: list[str | bytes]) -> None:
    parser = UsageParser()
    for text in lines:
        assert all(u.amount > 0 for u in parser.feed(text))
    parser.finish()


# 100 examples (Hypothesis's default), not 300: each is up to six nested objects of up to 20
# leaves, fed line by line, compact or pretty, and 300 cost 13 s (most of the unit tests'
# time). The 100 are drawn from the same sizes (median ~900 characters of JSON, a quarter
# over 2,000, the largest ~5,900, as with 300), shapes and layouts.
@settings(max_examples=100)
@given(st.lists(objects_without_usage, min_size=1, max_size=6), st.booleans())
def test_objects_without_usage_keys_yield_nothing(objects: list[object], pretty: bool) -> None:
    parser = UsageParser()
    for obj in objects:
        text = json.dumps(obj, indent=2 if pretty else None)
        for piece in text.splitlines():
            assert parser.feed(piece) == []
    assert parser.finish() == []


@settings(max_examples=200)
@given(st.dictionaries(st.sampled_from(sorted(USAGE_KEYS)), json_values, max_size=5))
def test_objects_with_odd_usage_values_never_raise(obj: dict[str, object]) -> None:
    parser = UsageParser()
    for kind in (None, "result", "assistant", "turn.completed"):
        payload = obj if kind is None else {**obj, "type": kind}
        for usage in parser.feed(json.dumps(payload)):
            assert Decimal(0) < usage.amount
            assert usage.amount <= Decimal(1000) or "over the per-record cap" in str(
                usage.flagged)


# Noise an agent prints between its JSON lines: prose, code, stack traces, partial JSON.
noise_lines = st.text(max_size=60).filter(
    lambda t: t.strip()[:1] not in ("{", "[") and not t.startswith((" ", "\t"))
) | st.sampled_from(['{"cost_usd": ', "[1, 2", "{not json}", "}", "Traceback (most recent):"])
JSONL_FIXTURES = ["claude_stream.jsonl", "codex_exec.jsonl", "gemini_stream.jsonl",
                  "generic_cost.jsonl", "generic_tokens.jsonl"]


@settings(max_examples=100)
@given(st.sampled_from(JSONL_FIXTURES), st.data())
def test_noise_between_lines_neither_adds_nor_loses_spend(name: str, data: st.DataObject) -> None:
    lines = (FIXTURES / name).read_text(encoding="utf-8").splitlines()
    mixed: list[str] = []
    for text in lines:
        mixed += [*data.draw(st.lists(noise_lines, max_size=3)), text]
    mixed += data.draw(st.lists(noise_lines, max_size=3))
    assert total(parse(mixed)) == total(parse_fixture(name))


@settings(max_examples=100)
@given(st.sampled_from([*JSONL_FIXTURES, "gemini_json.json", "claude_json.json"]), st.data())
def test_lost_or_cut_lines_never_add_spend(name: str, data: st.DataObject) -> None:
    """An agent killed mid-line, or lines lost: the spend found is at most the full run's."""
    lines = (FIXTURES / name).read_text(encoding="utf-8").splitlines()
    damaged = []
    for text in lines:
        fate = data.draw(st.sampled_from(["keep", "keep", "drop", "cut"]))
        if fate == "keep":
            damaged.append(text)
        elif fate == "cut" and text.strip():
            damaged.append(text[: data.draw(st.integers(0, len(text.rstrip()) - 1))])
    assert total(parse(damaged)) <= total(parse_fixture(name))


@pytest.mark.parametrize("line", [
    '{"type":"assistant","message":{"id":"x","model":"claude-sonnet-4-5\\ud800",'
    '"usage":{"input_tokens":1000,"output_tokens":1000}}}',
    '{"stats":{"models":{"gem\\ud800":{"tokens":{"prompt":1000,"candidates":1000}}}}}',
])
def test_a_model_named_with_a_lone_surrogate_is_spend_that_can_be_recorded(line: str) -> None:
    """JSON may escape half of a surrogate pair; no event holding it can be written (the
    worker's record of the attempt's spend failed). The name keeps a "?" for it."""
    from tri24es import events as ev
    from tri24es.timeutil import from_us, now_us

    parser = UsageParser()
    usages = [*parser.feed(line), *parser.finish()]
    assert usages
    assert all(u.amount > 0 for u in usages)
    for usage in usages:
        assert usage.model is not None
        assert usage.model.endswith("?")
        event = ev.SpendRecorded(amount=usage.amount, model=usage.model, source="worker",
                                 flagged=usage.flagged, occurred_at=from_us(now_us()))
        assert ev.encode(event).type == "SpendRecorded"  # no PydanticSerializationError
