"""The REST contract's bodies (camelCase JSON), as pydantic models."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from aitasks.application.tasks import NewTask
from aitasks.domain.task import DEFAULT_MAX_ATTEMPTS, DEFAULT_PRIORITY, MAX_ATTEMPTS_CEILING, TaskStatus

if TYPE_CHECKING:
    from aitasks.domain.task import Task

TaskType = Literal["chat", "summarize", "extract"]


class CamelModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class TaskPayload(CamelModel):
    """What the model is asked: the prompt, its context, and optional model and parameters."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, description="the instruction; required and non-empty")
    context: str | dict[str, Any] | None = Field(default=None, description="material the prompt refers to")
    model: str | None = Field(default=None, min_length=1, max_length=200, description="a model name")
    params: dict[str, Any] | None = Field(default=None, description="provider parameters (temperature, maxTokens)")


class CreateTaskRequest(CamelModel):
    model_config = ConfigDict(extra="forbid")

    type: TaskType = Field(description="a registered task type")
    priority: int = Field(default=DEFAULT_PRIORITY, ge=0, le=9, description="0 is the most urgent")
    payload: TaskPayload
    scheduled_at: AwareDatetime | None = Field(default=None, description="RFC 3339 time with offset")
    max_attempts: int = Field(default=DEFAULT_MAX_ATTEMPTS, ge=1, le=MAX_ATTEMPTS_CEILING)

    def to_new_task(self) -> NewTask:
        return NewTask(
            type=self.type,
            payload=self.payload.model_dump(mode="json", by_alias=True, exclude_none=True),
            priority=self.priority,
            max_attempts=self.max_attempts,
            scheduled_at=self.scheduled_at,
        )


class TaskView(CamelModel):
    id: UUID
    type: str
    priority: int
    status: TaskStatus
    payload: dict[str, Any]
    scheduled_at: datetime | None
    attempt_count: int
    max_attempts: int
    last_error: str | None
    cancel_requested: bool
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, task: Task) -> TaskView:
        return cls(
            id=task.id,
            type=task.type,
            priority=task.priority,
            status=task.status,
            payload=dict(task.payload),
            scheduled_at=task.scheduled_at,
            attempt_count=task.attempt_count,
            max_attempts=task.max_attempts,
            last_error=task.last_error,
            cancel_requested=task.cancel_requested_at is not None,
            created_at=task.created_at,
            updated_at=task.updated_at,
        )

    def json_body(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)
