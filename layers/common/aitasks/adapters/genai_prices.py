"""Model prices from genai-prices, pydantic's maintained price data (it ships with the package: no network).

Read only when prices are synced into the database (`aitasks models sync-prices`, and every migration): importing
it costs about 150 ms, which no request should pay. The functions read the prices from the database.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from decimal import Decimal
from importlib.metadata import version
from typing import Any, cast

from aitasks.application.ai import ModelPrice


def source() -> str:
    return f"genai-prices {version('genai-prices')}"


def provider_prices(provider_id: str, *, on: date) -> dict[str, ModelPrice]:
    """Every model of the provider that has input and output prices per token on that day, USD per 1M tokens.

    A price that changed on a date is taken as it is on `on`; time-of-day discounts are left out, and tiered prices
    count at their highest tier: the prices are used for worst cases and budgets, which must never be too low."""
    from genai_prices import data_snapshot

    snapshot = data_snapshot.get_snapshot()
    provider = data_snapshot.find_provider_by_id(snapshot.providers, provider_id)
    if provider is None:
        return {}
    found: dict[str, ModelPrice] = {}
    moment = datetime.combine(on, time(12), tzinfo=UTC)
    for model in provider.models:
        price = _current(model.prices, moment)
        if price is None:
            continue
        input_per_m, output_per_m = _rate(price, "input_mtok"), _rate(price, "output_mtok")
        if input_per_m is None or output_per_m is None:
            continue
        found[model.id] = ModelPrice(input_per_m, output_per_m, _rate(price, "cache_read_mtok"))
    return found


def _current(prices: Any, moment: datetime) -> Any:
    if not isinstance(prices, list):
        return prices
    from genai_prices.types import StartDateConstraint

    active = [
        conditional.prices
        for conditional in prices
        if conditional.constraint is None
        or (isinstance(conditional.constraint, StartDateConstraint) and conditional.constraint.active(moment))
    ]
    return active[-1] if active else None


def _rate(price: Any, name: str) -> Decimal | None:
    value = getattr(price, name, None)
    if value is None or isinstance(value, Decimal):
        return value
    tiers = getattr(value, "tiers", None)  # TieredPrices: the highest rate any call can pay
    return cast("Decimal", max([value.base, *(tier.price for tier in tiers or [])]))
