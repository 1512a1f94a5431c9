"""The price table: known, dated and unknown models, cached input, and overrides from JSON."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aitasks.application.ai import DEFAULT_PRICES, ModelPrice, Usage

MILLION = 1_000_000


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


def test_the_fake_model_is_free() -> None:
    assert DEFAULT_PRICES.cost("fake-echo-1", Usage(tokens_in=123, tokens_out=456)) == Decimal(0)


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
