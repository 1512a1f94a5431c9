"""The AI provider port and its values: what the executor asks a model, what comes back, how it fails, what it costs.

Adapters map their SDK's errors to `AiError` once, at the boundary; the executor only ever sees an `AiError`, whose
code decides (through `ERROR_CLASSES`) whether the attempt may be retried, whether the call may have been billed, and
what it pauses.
"""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import date
from decimal import ROUND_HALF_UP, ROUND_UP, Decimal
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


@dataclasses.dataclass(frozen=True, slots=True)
class ErrorClass:
    """What a failed call's code says.

    `retryable`: another attempt may succeed. `billed`: the provider may have billed the call; when it reported no
    usage, the tenant is charged what the attempt held (the worst it could cost) - only errors known to be free
    are not. `pauses`: what the error stops for everyone's calls of the model - until the provider's Retry-After
    (`"retry_after"`, clamped to AI_MAX_PAUSE_SECONDS), or for AI_ACCOUNT_PAUSE_SECONDS (`"account"`: the
    deployment's key or credit, not the task, is at fault; every call would fail the same way until an operator
    acts, so the backlog waits for the pause instead of each task spending its attempts on it)."""

    retryable: bool
    billed: bool
    pauses: Literal["retry_after", "account"] | None = None


# The one classification table. Free: a 429 or a request refused before the model ran (a 4xx other than a timeout).
# Billed unless told otherwise: a timeout or a broken connection (the model may have run), a 5xx (a gateway's 502 or
# 504 after the upstream ran, a 200 whose body did not parse), an unusable answer, and anything unknown.
# invalid_output: the model answered, but unusably (empty, or an extract answer that breaks its schema); sampling
# again often fixes it, and the attempt budget bounds what it can cost. unknown: a surprise should surface, not loop.
ERROR_CLASSES: Mapping[AiErrorCode, ErrorClass] = MappingProxyType(
    {
        "rate_limit": ErrorClass(retryable=True, billed=False, pauses="retry_after"),
        "timeout": ErrorClass(retryable=True, billed=True),
        "connection": ErrorClass(retryable=True, billed=True),
        "server_error": ErrorClass(retryable=True, billed=True),
        "overloaded": ErrorClass(retryable=True, billed=True),
        "bad_request": ErrorClass(retryable=False, billed=False),
        "content_filter": ErrorClass(retryable=False, billed=False),
        "context_length": ErrorClass(retryable=False, billed=False),
        "auth": ErrorClass(retryable=True, billed=False, pauses="account"),
        "quota": ErrorClass(retryable=True, billed=False, pauses="account"),
        "invalid_output": ErrorClass(retryable=True, billed=True),
        "unknown": ErrorClass(retryable=False, billed=True),
    }
)
# The table's first column, for readers that need only it.
RETRYABLE: Mapping[AiErrorCode, bool] = MappingProxyType({code: c.retryable for code, c in ERROR_CLASSES.items()})

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
    max_tokens: int | None = None  # the output cap: params.maxTokens, or the task type's default

    @classmethod
    def from_payload(
        cls,
        task_type: str,
        payload: Mapping[str, Any],
        *,
        attempt_no: int,
        model: str | None = None,
        max_tokens: int | None = None,
    ) -> AiRequest:
        """`model` and `max_tokens`: what the task was created with (its payload's, or the defaults then), which its
        worst cost and its model's rate limits count; the payload's when not given."""
        params = MappingProxyType(dict(payload.get("params") or {}))
        asked = params.get("maxTokens")
        return cls(
            task_type=task_type,
            prompt=str(payload.get("prompt", "")),
            context=payload.get("context"),
            model=model or payload.get("model"),
            params=params,
            attempt_no=attempt_no,
            max_tokens=max_tokens or (asked if isinstance(asked, int) and not isinstance(asked, bool) else None),
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
    # How long the answer is, in tokens (before maxTokens cuts it): its cost can be made what a test needs.
    output_tokens: int | None = Field(default=None, ge=1, le=128_000, alias="outputTokens")
    # The answer itself, word for word (an extract's JSON that a test needs, say).
    answer: str | None = Field(default=None, max_length=100_000)


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
    provider: str | None = None  # whose price list it comes from


@dataclasses.dataclass(frozen=True, slots=True)
class PriceTable:
    """Prices per model as of `effective_date`. An unknown model has no price (None), never a guess."""

    effective_date: date
    prices: Mapping[str, ModelPrice]

    def known_name(self, model: str) -> str | None:
        """The priced name `model` stands for: itself, else the longest known name it is a dated snapshot of.

        Only a date or version suffix may follow the known name: gpt-4.1-nano is not priced as gpt-4.1.
        """
        name = model.strip().lower()
        if name in self.prices:
            return name
        candidates = [
            known for known in self.prices if name.startswith(known) and _SNAPSHOT_SUFFIX.fullmatch(name[len(known) :])
        ]
        return max(candidates, key=len) if candidates else None

    def key(self, model: str) -> str:
        """The model's canonical name, the one place names are mapped: its known (priced) name, so that a dated
        snapshot or another casing shares its limits, pauses, spend and price; else the name lowercased."""
        return self.known_name(model) or model.strip().lower()

    def price_of(self, model: str) -> ModelPrice | None:
        known = self.known_name(model)
        return self.prices[known] if known is not None else None

    def worst_cost(self, model: str, *, input_tokens: int, max_output_tokens: int) -> Decimal | None:
        """The most one call can cost: every input token at the full input rate, and every output token the call
        may produce; None when the model has no price."""
        return self.cost(model, Usage(tokens_in=input_tokens, tokens_out=max_output_tokens), round_up=True)

    def cost(self, model: str, usage: Usage, *, round_up: bool = False) -> Decimal | None:
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
        return total.quantize(_COST_QUANTUM, rounding=ROUND_UP if round_up else ROUND_HALF_UP)

    @classmethod
    def of(cls, prices: Mapping[str, ModelPrice], *, effective_date: date) -> PriceTable:
        return cls(effective_date, MappingProxyType({name.strip().lower(): p for name, p in prices.items()}))

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


# A call sends more than the task's prompt and context: a system prompt (with the schema, for extract) and the
# chat format's framing. This covers both.
INPUT_OVERHEAD_TOKENS = 300


def input_tokens_at_most(payload: Mapping[str, Any]) -> int:
    """An upper bound on a call's input tokens: the UTF-8 bytes of what it sends (a token of a byte-level BPE
    tokenizer stands for at least one byte) plus the framing. Worst costs and budgets rest on it, so it must never be
    below what a provider counts; it is about four times the usual count for English text."""
    parts = [str(payload.get("prompt", ""))]
    for value in (payload.get("context"), (payload.get("params") or {}).get("schema")):
        if value is not None:
            parts.append(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False))
    return sum(len(part.encode()) for part in parts) + INPUT_OVERHEAD_TOKENS


# What a call sends besides its prompt, context and schema, in characters: the system prompt and the chat format's
# framing (adapters/openai_provider.py's prompts are under 200 characters).
RATE_FRAMING_CHARS = 240


def rate_limit_tokens(payload: Mapping[str, Any], max_output_tokens: int) -> int:
    """What one call counts against its model's tokens per minute, as OpenAI's limiter (and Azure OpenAI's) counts
    it: about a token per 4 characters sent, plus the output cap. Unlike `input_tokens_at_most` this is an estimate,
    not a bound: a low one costs at worst a 429, which pauses the model; the window is settled with the real usage
    when the call ends."""
    parts = [str(payload.get("prompt", ""))]
    for value in (payload.get("context"), (payload.get("params") or {}).get("schema")):
        if value is not None:
            parts.append(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False))
    chars = sum(len(part) for part in parts) + RATE_FRAMING_CHARS
    return -(-chars // 4) + max_output_tokens


# The fake provider's model has a price, so that costs and budgets can be exercised without a real one.
FAKE_MODEL_PRICE = ModelPrice(Decimal("0.50"), Decimal("1.50"))
