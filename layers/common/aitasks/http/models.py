"""The REST contract's bodies (camelCase JSON), as pydantic models."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any, Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, field_validator
from pydantic.alias_generators import to_camel

from aitasks.application.tasks import NewTask
from aitasks.domain.task import DEFAULT_MAX_ATTEMPTS, DEFAULT_PRIORITY, MAX_ATTEMPTS_CEILING, TaskStatus, WaitingFor
from aitasks.domain.task_types import payload_size
from aitasks.http import examples

if TYPE_CHECKING:
    from aitasks.application.limits import Usage
    from aitasks.application.live import Ticket
    from aitasks.application.ports import ArtifactRecord, AttemptRecord, EventRecord
    from aitasks.domain.task import Task

# The registered task types (domain/task_types.py REGISTRY; a test keeps the two equal), spelled out so the
# OpenAPI document lists them.
TaskType = Literal["chat", "summarize", "extract"]
MAX_SCHEDULE_AHEAD = timedelta(days=365)
# A list's items carry payloads up to this size: a page of 100 stays under 2 MB (Lambda answers at most 6 MB).
LIST_PAYLOAD_MAX_BYTES = 16 * 1024

# USD as a fixed-point decimal string ("0.00000450", never "4.5E-6" or a float).
Money = Annotated[Decimal, PlainSerializer(lambda value: format(value, "f"), return_type=str, when_used="json")]


class CamelModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class TaskPayload(CamelModel):
    """What the model is asked: the prompt, its context, and optional model and parameters."""

    # Strict: JSON types as the schema says them (no false read as 0, no 1 read as "1").
    model_config = ConfigDict(extra="forbid", strict=True)

    prompt: str = Field(min_length=1, description="the instruction; required and non-empty")
    context: str | dict[str, Any] | None = Field(default=None, description="material the prompt refers to")
    model: str | None = Field(default=None, min_length=1, max_length=200, description="a model name")
    params: dict[str, Any] | None = Field(default=None, description="provider parameters (temperature, maxTokens)")


def _rfc3339_text(value: object) -> object:
    # Lax pydantic would read a number as epoch seconds; the contract says an RFC 3339 string.
    if not isinstance(value, str | datetime):
        raise ValueError("must be an RFC 3339 date-time string")
    return value


class CreateTaskRequest(CamelModel):
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": examples.CREATE_TASK})

    type: TaskType = Field(description="a registered task type")
    priority: int = Field(default=DEFAULT_PRIORITY, ge=0, le=9, description="0 is the most urgent")
    payload: TaskPayload
    scheduled_at: Annotated[AwareDatetime, BeforeValidator(_rfc3339_text)] | None = Field(
        default=None,
        strict=False,  # parsed from its string (strict would want a datetime object); _rfc3339_text refuses numbers
        description="RFC 3339 time with offset, at most 365 days ahead; a past time runs now",
    )
    max_attempts: int = Field(default=DEFAULT_MAX_ATTEMPTS, ge=1, le=MAX_ATTEMPTS_CEILING)
    max_cost_usd: Decimal | None = Field(
        default=None,
        strict=False,  # a JSON number or a decimal string
        gt=0,
        le=100_000,
        decimal_places=8,
        description="USD: once the task's attempts have cost this much, a failed attempt is not retried",
    )

    @field_validator("scheduled_at")
    @classmethod
    def _not_too_far(cls, value: datetime | None) -> datetime | None:
        if value is not None and value - datetime.now(UTC) > MAX_SCHEDULE_AHEAD:
            raise ValueError("must be at most 365 days ahead")
        return value

    def to_new_task(self) -> NewTask:
        return NewTask(
            type=self.type,
            payload=self.payload.model_dump(mode="json", by_alias=True, exclude_none=True),
            priority=self.priority,
            max_attempts=self.max_attempts,
            scheduled_at=self.scheduled_at,
            max_cost_usd=self.max_cost_usd,
        )


class TaskView(CamelModel):
    model_config = ConfigDict(json_schema_extra={"examples": [examples.TASK]})

    id: UUID
    type: str
    priority: int
    status: TaskStatus
    waiting_for: WaitingFor | None = Field(
        description="why a queued task is not running now: its scheduled time (schedule), its retry time (retry), "
        "its tenant's concurrency cap (concurrency), its model's rate limit or a provider's pause (rate_limit), its "
        "tenant's monthly budget (budget); null when it only waits for a free executor, or is not waiting"
    )
    model: str | None = Field(description="the model it runs on: payload.model, else the deployment's default")
    payload: dict[str, Any] | None = Field(
        description=f"what the task asks; null in a list's items when it takes over {LIST_PAYLOAD_MAX_BYTES // 1024} "
        "KiB (GET the task for it), so that a page stays small"
    )
    payload_bytes: int = Field(description="the payload's size as compact JSON")
    scheduled_at: datetime | None
    attempt_count: int
    max_attempts: int
    last_error: str | None
    cancel_requested: bool
    created_at: datetime
    updated_at: datetime
    tokens_in: int = Field(description="input tokens over all attempts")
    tokens_out: int = Field(description="output tokens over all attempts")
    cost: Money | None = Field(description="USD over all attempts; null while no attempt has a known price")
    max_cost_usd: Money | None = Field(description="no retry once the attempts have cost this much")

    @classmethod
    def of(cls, task: Task, *, in_list: bool = False) -> TaskView:
        size = payload_size(task.payload)
        return cls(
            id=task.id,
            type=task.type,
            priority=task.priority,
            status=task.status,
            waiting_for=task.waiting_for,
            model=task.model,
            payload=None if in_list and size > LIST_PAYLOAD_MAX_BYTES else dict(task.payload),
            payload_bytes=size,
            scheduled_at=task.scheduled_at,
            attempt_count=task.attempt_count,
            max_attempts=task.max_attempts,
            last_error=task.last_error,
            cancel_requested=task.cancel_requested_at is not None,
            created_at=task.created_at,
            updated_at=task.updated_at,
            tokens_in=task.tokens_in,
            tokens_out=task.tokens_out,
            cost=task.cost,
            max_cost_usd=task.max_cost_usd,
        )

    def json_body(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


class AttemptView(CamelModel):
    model_config = ConfigDict(json_schema_extra={"examples": [examples.ATTEMPT]})

    attempt_no: int
    status: str
    model: str | None
    tokens_in: int | None
    tokens_out: int | None
    cost: Money | None
    cost_estimated: bool = Field(
        default=False,
        description="the cost could not be known (no usage reported, or no price): the attempt was charged what it "
        "held, the most it could cost",
    )
    latency_ms: int | None
    error_code: str | None
    error_detail: str | None
    started_at: datetime
    ended_at: datetime | None

    @classmethod
    def of(cls, a: AttemptRecord) -> AttemptView:
        return cls.model_validate(a, from_attributes=True)


class ArtifactView(CamelModel):
    model_config = ConfigDict(json_schema_extra={"examples": [examples.ARTIFACT]})

    id: UUID
    kind: Literal["text", "json", "file", "link"]
    content: str | None
    uri: str | None
    created_at: datetime

    @classmethod
    def of(cls, a: ArtifactRecord) -> ArtifactView:
        return cls.model_validate(a, from_attributes=True)


class EventView(CamelModel):
    """One step of the task's state history (the events it published, docs/events)."""

    model_config = ConfigDict(json_schema_extra={"examples": [examples.EVENT]})

    id: UUID = Field(description="the event's eventId")
    seq: int = Field(description="grows with each event of the task (not consecutive): the events' order")
    event_type: str = Field(description="task.created, task.queued, task.started, ...")
    status: str | None = Field(description="the task's status after the event")
    attempt_no: int
    occurred_at: datetime

    @classmethod
    def of(cls, e: EventRecord) -> EventView:
        return cls.model_validate(e, from_attributes=True)


class PeriodView(CamelModel):
    start: datetime
    end: datetime = Field(description="the next month's first instant (UTC): the budget starts afresh")


class ModelUsageView(CamelModel):
    model: str
    spent_usd: Money
    reserved_usd: Money = Field(description="held by running attempts: the most each can cost")
    tokens_in: int
    tokens_out: int
    attempts: int


class UsageView(CamelModel):
    """The calling tenant's month: its budget, what it spent and holds, per model; its concurrency and its work."""

    model_config = ConfigDict(json_schema_extra={"examples": [examples.USAGE]})

    period: PeriodView
    budget_usd: Money | None = Field(description="the monthly budget; null: none")
    spent_usd: Money = Field(description="what this month's ended attempts cost")
    reserved_usd: Money = Field(description="held by running attempts (the most each can cost)")
    max_concurrency: int
    running: int
    queued: int = Field(description="queued or failed and waiting for a retry, due or not")
    by_model: list[ModelUsageView]

    @classmethod
    def of(cls, usage: Usage) -> UsageView:
        return cls(
            period=PeriodView(start=usage.period_start, end=usage.period_end),
            budget_usd=usage.budget_usd,
            spent_usd=usage.spent_usd,
            reserved_usd=usage.reserved_usd,
            max_concurrency=usage.max_concurrency,
            running=usage.running,
            queued=usage.queued,
            by_model=[ModelUsageView.model_validate(m, from_attributes=True) for m in usage.by_model],
        )


class TicketView(CamelModel):
    """A single-use ticket that opens the live-updates WebSocket: connect to `url?ticket=<ticket>`."""

    model_config = ConfigDict(json_schema_extra={"examples": [examples.TICKET]})

    ticket: str
    url: str = Field(description="the WebSocket stage to connect to")
    expires_at: datetime

    @classmethod
    def of(cls, ticket: Ticket, url: str) -> TicketView:
        return cls(ticket=ticket.value, url=url, expires_at=ticket.expires_at)


def dump(
    models: list[TaskView] | list[AttemptView] | list[ArtifactView] | list[EventView],
) -> list[dict[str, Any]]:
    return [m.model_dump(mode="json", by_alias=True) for m in models]
