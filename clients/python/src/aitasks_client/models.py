"""The API's resources as pydantic models: Python names outside, the API's camelCase on the wire.

Each model mirrors a schema of the API's OpenAPI document (named in its docstring); a test checks that the two
have the same fields, requiredness, types and enumerations. What a newer API adds is kept, not refused: fields
(`extra="allow"`, in `model_extra`) and enumeration values (a status this client does not know is a member of
its own, `TaskStatus("paused")`), so an older client keeps working against a newer API.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

__all__ = [
    "TERMINAL",
    "Artifact",
    "ArtifactKind",
    "Attempt",
    "Event",
    "FieldError",
    "ModelUsage",
    "Period",
    "Problem",
    "Task",
    "TaskStatus",
    "Ticket",
    "Usage",
    "WaitingFor",
]


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow", frozen=True)


class _OpenEnum(StrEnum):
    """An enumeration that takes values it does not know (a newer API's) as members of their own, not errors."""

    @classmethod
    def _missing_(cls, value: object) -> _OpenEnum | None:
        if not isinstance(value, str):
            return None
        member = str.__new__(cls, value)
        member._name_ = value.upper()
        member._value_ = value
        return member


class TaskStatus(_OpenEnum):
    """TaskStatus."""

    CREATED = "created"
    QUEUED = "queued"
    RESERVED = "reserved"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # an attempt failed; the task waits for its retry
    CANCELLED = "cancelled"
    DEAD_LETTER = "dead_letter"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({TaskStatus.SUCCEEDED, TaskStatus.CANCELLED, TaskStatus.DEAD_LETTER})


class WaitingFor(_OpenEnum):
    """Why a queued task is not running now."""

    SCHEDULE = "schedule"
    RETRY = "retry"
    CONCURRENCY = "concurrency"
    RATE_LIMIT = "rate_limit"
    BUDGET = "budget"


class ArtifactKind(_OpenEnum):
    TEXT = "text"
    JSON = "json"
    FILE = "file"
    LINK = "link"


class Task(_Model):
    """TaskView: a task as the API shows it."""

    id: UUID
    type: str
    priority: int
    status: TaskStatus
    waiting_for: WaitingFor | None = Field(description="why a queued task is not running now")
    model: str | None
    payload: dict[str, Any] | None = Field(description="null in list items whose payload is large")
    payload_bytes: int
    scheduled_at: datetime | None
    attempt_count: int
    max_attempts: int
    last_error: str | None
    cancel_requested: bool
    created_at: datetime
    updated_at: datetime
    tokens_in: int
    tokens_out: int
    cost: Decimal | None = Field(description="USD over all attempts; None while no attempt has a known price")
    max_cost_usd: Decimal | None

    @property
    def done(self) -> bool:
        """Whether the task has reached its end (succeeded, cancelled or dead-lettered)."""
        return self.status in TERMINAL


class Attempt(_Model):
    """AttemptView: one call of the model for a task."""

    attempt_no: int
    status: str
    model: str | None
    tokens_in: int | None
    tokens_out: int | None
    cost: Decimal | None
    cost_estimated: bool = False  # no usage or no price: charged what it held, the most it could cost
    latency_ms: int | None
    error_code: str | None
    error_detail: str | None
    started_at: datetime
    ended_at: datetime | None


class Artifact(_Model):
    """ArtifactView: an output of a task."""

    id: UUID
    kind: ArtifactKind
    content: str | None
    uri: str | None
    created_at: datetime


class Event(_Model):
    """EventView: one event of a task's history; `seq` orders them."""

    id: UUID
    seq: int
    event_type: str
    status: str | None
    attempt_no: int
    occurred_at: datetime


class Period(_Model):
    """PeriodView: the month a budget counts."""

    start: datetime
    end: datetime


class ModelUsage(_Model):
    """ModelUsageView: one model's share of the month's spend."""

    model: str
    spent_usd: Decimal
    reserved_usd: Decimal
    tokens_in: int
    tokens_out: int
    attempts: int


class Usage(_Model):
    """UsageView: the calling tenant's month: budget, spend, concurrency."""

    period: Period
    budget_usd: Decimal | None
    spent_usd: Decimal
    reserved_usd: Decimal
    max_concurrency: int
    running: int
    queued: int
    by_model: list[ModelUsage]


class Ticket(_Model):
    """TicketView: a single-use ticket that opens the live-updates WebSocket."""

    ticket: str
    url: str
    expires_at: datetime


class FieldError(_Model):
    """FieldError: one invalid field of a request."""

    field: str
    message: str


class Problem(_Model):
    """Problem: an RFC 9457 problem document, as every error response carries it.

    API Gateway's own answers (`{"message": ...}`) are turned into one with type `about:blank`; problem types add
    members (a 402's `budgetUsd`, `spentUsd`, `reservedUsd`, `periodEnd`), kept as extra fields."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str = ""
    instance: str = ""
    trace_id: str = ""
    errors: list[FieldError] | None = None
