"""The AI provider port and its values: what the executor asks a model, what comes back, how it fails, what it costs.

Adapters map their SDK's errors to `AiError` once, at the boundary; the executor only ever sees an `AiError`, whose
code decides (through `RETRYABLE`) whether the attempt may be retried.
"""

from __future__ import annotations

import dataclasses
import re
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from aitasks.domain.errors import AitasksError

if TYPE_CHECKING:
    from collections.abc import Mapping

AiErrorCode = Literal[
    "rate_limit",
    "timeout",
    "connection",
    "server_error",
    "overloaded",
    "bad_request",
    "content_filter",
    "context_length",
    "auth",
    "quota",
    "invalid_output",
    "unknown",
]

# The one classification table: may an attempt that failed with this code be tried again?
# invalid_output: the model answered, but unusably (empty, or an extract answer that breaks its schema); sampling
# again often fixes it, and the attempt budget bounds what it can cost. unknown: a surprise should surface, not loop.
RETRYABLE: Mapping[AiErrorCode, bool] = MappingProxyType(
    {
        "rate_limit": True,
        "timeout": True,
        "connection": True,
        "server_error": True,
        "overloaded": True,
        "bad_request": False,
        "content_filter": False,
        "context_length": False,
        "auth": False,
        "quota": False,
        "invalid_output": True,
        "unknown": False,
    }
)

# error_detail is stored with the attempt and shown to the client: keep it short.
MAX_DETAIL_CHARS = 500


@dataclasses.dataclass(frozen=True, slots=True)
class AiRequest:
    """One call to a model: a task's payload plus the attempt it is made for.

    `params` holds the payload's params as the client sent them (temperature, maxTokens, schema for extract, fake
    for the fake provider); each provider picks the keys it understands and ignores the rest.
    """

    task_type: str
    prompt: str
    context: str | dict[str, Any] | None = None
    model: str | None = None
    params: Mapping[str, Any] = dataclasses.field(default_factory=lambda: MappingProxyType({}))
    attempt_no: int = 1

    @classmethod
    def from_payload(cls, task_type: str, payload: Mapping[str, Any], *, attempt_no: int) -> AiRequest:
        return cls(
            task_type=task_type,
            prompt=str(payload.get("prompt", "")),
            context=payload.get("context"),
            model=payload.get("model"),
            params=MappingProxyType(dict(payload.get("params") or {})),
            attempt_no=attempt_no,
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Usage:
    """Tokens billed for a call. As OpenAI counts them: `tokens_in` includes `cached_tokens` and `tokens_out`
    includes `reasoning_tokens`; the details are None when the provider does not report them."""

    tokens_in: int
    tokens_out: int
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class AiResult:
    """A model's answer. `model` is the model the provider says it used (often a dated snapshot of the one asked)."""

    text: str
    model: str
    usage: Usage
    latency_ms: int


class AiError(AitasksError):
    """A failed model call, classified. `retry_after_s` is the provider's own hint (Retry-After) when it gave one;
    `usage` holds the tokens already billed when the provider reported them (a filtered or unusable answer)."""

    def __init__(
        self,
        code: AiErrorCode,
        detail: str = "",
        *,
        retry_after_s: float | None = None,
        usage: Usage | None = None,
    ) -> None:
        detail = detail[:MAX_DETAIL_CHARS]
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code: AiErrorCode = code
        self.retryable = RETRYABLE[code]
        self.detail = detail
        self.retry_after_s = retry_after_s
        self.usage = usage


class AiProvider(Protocol):
    """A language model behind some API. `complete` raises `AiError` and nothing else."""

    name: str

    def complete(self, request: AiRequest, *, timeout_s: float) -> AiResult: ...


class FakeParams(BaseModel):
    """`params.fake` of a payload: scripts the fake provider's failures and latency (ignored by real providers).

    Attempts numbered up to `failAttempts` fail with `error`; `latencyMs` is how long each call takes.
    It lives here, not with the fake adapter, so the HTTP edge can validate the field up front.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    fail_attempts: int = Field(default=0, ge=0, le=100, alias="failAttempts")
    error: AiErrorCode = "server_error"
    latency_ms: int = Field(default=0, ge=0, le=900_000, alias="latencyMs")
    retry_after_s: float | None = Field(default=None, ge=0, le=86_400, alias="retryAfterS")


# --- pricing ---------------------------------------------------------------------------------------------------

_PER_TOKEN = Decimal(1_000_000)
# The attempts table stores cost as numeric(16, 8).
_COST_QUANTUM = Decimal("0.00000001")
# What may follow a known model name in a snapshot's name: -2024-07-18, -0125, -20250514.
_SNAPSHOT_SUFFIX = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{8}|\d{4})")


@dataclasses.dataclass(frozen=True, slots=True)
class ModelPrice:
    """USD per 1M tokens. Cached input tokens cost `cached_input_per_m` when set, else the input rate."""

    input_per_m: Decimal
    output_per_m: Decimal
    cached_input_per_m: Decimal | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class PriceTable:
    """Prices per model as of `effective_date`. An unknown model has no price (None), never a guess."""

    effective_date: date
    prices: Mapping[str, ModelPrice]

    def price_of(self, model: str) -> ModelPrice | None:
        """The exact name's price, else that of the longest known name it is a dated snapshot of.

        Only a date or version suffix may follow the known name: gpt-4.1-nano is not priced as gpt-4.1.
        """
        name = model.strip().lower()
        if name in self.prices:
            return self.prices[name]
        candidates = [
            known for known in self.prices if name.startswith(known) and _SNAPSHOT_SUFFIX.fullmatch(name[len(known) :])
        ]
        return self.prices[max(candidates, key=len)] if candidates else None

    def cost(self, model: str, usage: Usage) -> Decimal | None:
        price = self.price_of(model)
        if price is None:
            return None
        cached = min(max(usage.cached_tokens or 0, 0), usage.tokens_in)
        cached_rate = price.cached_input_per_m if price.cached_input_per_m is not None else price.input_per_m
        total = (
            (usage.tokens_in - cached) * price.input_per_m
            + cached * cached_rate
            + usage.tokens_out * price.output_per_m
        ) / _PER_TOKEN
        return total.quantize(_COST_QUANTUM, rounding=ROUND_HALF_UP)

    def with_overrides(self, json_text: str) -> PriceTable:
        """This table with the models of a JSON document added or replaced, dated by the document.

        `{"effectiveDate": "2025-09-01", "models": {"gpt-4o": {"input": 2.5, "output": 10, "cachedInput": 1.25}}}`;
        raises ValueError (a pydantic ValidationError) when the document is malformed.
        """
        doc = _PriceTableDoc.model_validate_json(json_text)
        merged = dict(self.prices)
        for name, entry in doc.models.items():
            merged[name.strip().lower()] = ModelPrice(entry.input, entry.output, entry.cached_input)
        return PriceTable(effective_date=doc.effective_date, prices=MappingProxyType(merged))


class _PriceDoc(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    input: Decimal = Field(ge=0)
    output: Decimal = Field(ge=0)
    cached_input: Decimal | None = Field(default=None, ge=0, alias="cachedInput")


class _PriceTableDoc(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    effective_date: date = Field(alias="effectiveDate")
    models: dict[str, _PriceDoc]


def _price(input_per_m: str, output_per_m: str, cached_input_per_m: str | None = None) -> ModelPrice:
    return ModelPrice(
        Decimal(input_per_m), Decimal(output_per_m), Decimal(cached_input_per_m) if cached_input_per_m else None
    )


# OpenAI's standard-tier list prices (platform.openai.com/docs/pricing) on the effective date. When they change,
# override them with the settings' JSON rather than waiting for a release.
DEFAULT_PRICES = PriceTable(
    effective_date=date(2025, 8, 7),
    prices=MappingProxyType(
        {
            "gpt-4o": _price("2.50", "10.00", "1.25"),
            # The first gpt-4o snapshot kept its launch price; an exact name wins over the prefix.
            "gpt-4o-2024-05-13": _price("5.00", "15.00"),
            "gpt-4o-mini": _price("0.15", "0.60", "0.075"),
            "gpt-4.1": _price("2.00", "8.00", "0.50"),
            "gpt-4.1-mini": _price("0.40", "1.60", "0.10"),
            "gpt-4.1-nano": _price("0.10", "0.40", "0.025"),
            "o4-mini": _price("1.10", "4.40", "0.275"),
            "fake-echo-1": _price("0", "0"),
        }
    ),
)
