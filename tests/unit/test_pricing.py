"""The price table: known, dated and unknown models, cached input, worst costs, overrides from JSON, the upper bound
of a call's input tokens, and the prices genai-prices ships (read offline)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aitasks.adapters.genai_prices import provider_prices
from aitasks.application.ai import FAKE_MODEL_PRICE, ModelPrice, PriceTable, Usage, input_tokens_at_most

MILLION = 1_000_000


def _price(input_per_m: str, output_per_m: str, cached_input_per_m: str | None = None) -> ModelPrice:
    return ModelPrice(
        Decimal(input_per_m), Decimal(output_per_m), Decimal(cached_input_per_m) if cached_input_per_m else None
    )


# OpenAI's list prices as genai-prices has them (checked against it below), and the fake model's.
DEFAULT_PRICES = PriceTable.of(
    {
        "gpt-4o": _price("2.50", "10.00", "1.25"),
        # The first gpt-4o snapshot kept its launch price; an exact name wins over the prefix.
        "gpt-4o-2024-05-13": _price("5.00", "15.00"),
        "gpt-4o-mini": _price("0.15", "0.60", "0.075"),
        "gpt-4.1": _price("2.00", "8.00", "0.50"),
        "gpt-4.1-mini": _price("0.40", "1.60", "0.10"),
        "gpt-4.1-nano": _price("0.10", "0.40", "0.025"),
        "o4-mini": _price("1.10", "4.40", "0.275"),
        "fake-echo-1": FAKE_MODEL_PRICE,
    },
    effective_date=date(2026, 11, 27),
)


def test_a_known_model_costs_its_list_price() -> None:
    assert DEFAULT_PRICES.cost("gpt-4o-mini", Usage(tokens_in=MILLION, tokens_out=MILLION)) == Decimal("0.75")
    assert DEFAULT_PRICES.cost("gpt-4o", Usage(tokens_in=2000, tokens_out=500)) == Decimal("0.01")


def test_cached_input_tokens_cost_the_cached_rate() -> None:
    # 1M in of which 400k cached, on gpt-4.1: 600k x $2 + 400k x $0.50 per 1M
    usage = Usage(tokens_in=MILLION, tokens_out=0, cached_tokens=400_000)

    assert DEFAULT_PRICES.cost("gpt-4.1", usage) == Decimal("1.4")


def test_a_model_without_a_cached_rate_bills_cached_tokens_as_input() -> None:
    usage = Usage(tokens_in=MILLION, tokens_out=0, cached_tokens=MILLION)

    assert DEFAULT_PRICES.cost("gpt-4o-2024-05-13", usage) == Decimal("5")


def test_more_cached_than_input_tokens_is_clamped() -> None:
    usage = Usage(tokens_in=100, tokens_out=0, cached_tokens=1000)

    assert DEFAULT_PRICES.cost("gpt-4o", usage) == DEFAULT_PRICES.cost("gpt-4o", Usage(100, 0, cached_tokens=100))


def test_the_fake_model_costs_half_a_dollar_in_and_one_and_a_half_out_per_million() -> None:
    assert DEFAULT_PRICES.cost("fake-echo-1", Usage(tokens_in=MILLION, tokens_out=MILLION)) == Decimal(2)
    assert DEFAULT_PRICES.cost("fake-echo-1", Usage(tokens_in=1000, tokens_out=1000)) == Decimal("0.002")


def test_a_worst_cost_is_every_token_at_full_rate_rounded_up() -> None:
    # 1001 input tokens at $0.15/1M and 7 output tokens at $0.60/1M: $0.00015435, rounded up to the 8th place
    assert DEFAULT_PRICES.worst_cost("gpt-4o-mini", input_tokens=1001, max_output_tokens=7) == Decimal("0.00015435")
    # never rounded down: $0.071 per 1M is 0.000000071 a token, held as 0.00000008 (a cost rounds half up: 7)
    odd = PriceTable.of({"m": ModelPrice(Decimal("0.071"), Decimal(0))}, effective_date=date(2026, 11, 27))
    assert odd.worst_cost("m", input_tokens=1, max_output_tokens=1) == Decimal("0.00000008")
    assert odd.cost("m", Usage(tokens_in=1, tokens_out=1)) == Decimal("0.00000007")
    assert DEFAULT_PRICES.worst_cost("llama-3", input_tokens=10, max_output_tokens=10) is None


@given(st.text(max_size=300), st.one_of(st.none(), st.text(max_size=300), st.dictionaries(st.text(), st.text())))
def test_the_input_bound_is_never_below_the_utf8_bytes_of_what_is_sent(prompt: str, context: object) -> None:
    # a token of a byte-level BPE tokenizer stands for at least one byte: bytes bound the count from above
    import json

    payload = {"prompt": prompt, **({"context": context} if context is not None else {})}
    text = context if isinstance(context, str) else json.dumps(context, ensure_ascii=False) if context else ""
    sent = prompt + text
    assert input_tokens_at_most(payload) >= len(sent.encode())


def test_genai_prices_has_openais_list_prices_offline() -> None:
    prices = provider_prices("openai", on=date(2026, 11, 27))
    assert len(prices) > 50
    for name in ("gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "o4-mini"):
        assert prices[name] == DEFAULT_PRICES.prices[name], name
    assert provider_prices("no-such-provider", on=date(2026, 11, 27)) == {}


@pytest.mark.parametrize(
    ("model", "priced_as"),
    [
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4.1-2025-04-14", "gpt-4.1"),
        ("gpt-4.1-nano-2025-04-14", "gpt-4.1-nano"),
        ("o4-mini-2025-04-16", "o4-mini"),
        ("GPT-4o-Mini", "gpt-4o-mini"),
        # an exact entry beats the prefix: the first gpt-4o snapshot kept its launch price
        ("gpt-4o-2024-05-13", "gpt-4o-2024-05-13"),
    ],
)
def test_a_dated_snapshot_is_priced_as_the_longest_known_name(model: str, priced_as: str) -> None:
    assert DEFAULT_PRICES.price_of(model) == DEFAULT_PRICES.prices[priced_as]


@pytest.mark.parametrize(
    "model", ["llama-3-70b", "gpt-4o-audio-preview", "gpt-4o-mini-tts", "openai/gpt-4o", "gpt-4", "", "gpt-4o-"]
)
def test_an_unknown_model_has_no_cost_rather_than_a_guess(model: str) -> None:
    assert DEFAULT_PRICES.price_of(model) is None
    assert DEFAULT_PRICES.cost(model, Usage(tokens_in=10, tokens_out=10)) is None


@given(
    st.sampled_from(sorted(DEFAULT_PRICES.prices)),
    st.integers(min_value=0, max_value=10**9),
    st.integers(min_value=0, max_value=10**9),
    st.integers(min_value=0, max_value=10**9),
)
def test_a_cost_is_never_negative_fits_the_column_and_grows_with_tokens(
    model: str, tokens_in: int, tokens_out: int, cached: int
) -> None:
    cost = DEFAULT_PRICES.cost(model, Usage(tokens_in, tokens_out, cached_tokens=cached))
    more = DEFAULT_PRICES.cost(model, Usage(tokens_in + 1000, tokens_out + 1000, cached_tokens=cached))

    assert cost is not None and more is not None
    assert Decimal(0) <= cost <= more
    # numeric(16, 8): eight places after the point
    assert cost == cost.quantize(Decimal("0.00000001"))
    assert cost < Decimal(10) ** 8


def test_overrides_from_json_add_and_replace_models_and_date_the_table() -> None:
    table = DEFAULT_PRICES.with_overrides(
        '{"effectiveDate": "2026-01-01", "models": {'
        '"gpt-4o": {"input": 2.0, "output": 8, "cachedInput": 1},'
        '"Mistral-Small": {"input": "0.1", "output": "0.3"}}}'
    )

    assert table.effective_date == date(2026, 1, 1)
    assert table.price_of("gpt-4o") == ModelPrice(Decimal("2.0"), Decimal(8), Decimal(1))
    assert table.price_of("gpt-4o-2024-08-06") == table.price_of("gpt-4o")
    assert table.cost("mistral-small", Usage(tokens_in=MILLION, tokens_out=MILLION)) == Decimal("0.4")
    assert table.price_of("gpt-4.1") == DEFAULT_PRICES.price_of("gpt-4.1")
    # the default table is untouched
    assert DEFAULT_PRICES.price_of("gpt-4o") == ModelPrice(Decimal("2.50"), Decimal("10.00"), Decimal("1.25"))
    assert DEFAULT_PRICES.price_of("mistral-small") is None


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        '{"models": {}}',
        '{"effectiveDate": "2026-01-01", "models": {"m": {"input": -1, "output": 1}}}',
        '{"effectiveDate": "2026-01-01", "models": {"m": {"input": 1}}}',
        '{"effectiveDate": "2026-01-01", "models": {"m": {"input": 1, "output": 1, "per": "1k"}}}',
        '{"effectiveDate": "soon", "models": {}}',
    ],
)
def test_a_malformed_override_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="validation error"):
        DEFAULT_PRICES.with_overrides(text)
