"""The task and its lifecycle: one transition table shared by the code, the SQL guards and the docs."""

from __future__ import annotations

import dataclasses
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal, NewType
from uuid import UUID, uuid4

from aitasks.domain.errors import IllegalTransitionError

if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import datetime
    from decimal import Decimal

TenantId = NewType("TenantId", str)

# Why a queued (or failed) task is not running now; the database derives it (task_waiting_for, migration 0009).
WaitingFor = Literal["schedule", "retry", "concurrency", "rate_limit", "budget"]

DEFAULT_PRIORITY = 5
DEFAULT_MAX_ATTEMPTS = 3
MAX_ATTEMPTS_CEILING = 10


class TaskStatus(StrEnum):
    CREATED = "created"
    QUEUED = "queued"
    RESERVED = "reserved"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    DEAD_LETTER = "dead_letter"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


S = TaskStatus
TERMINAL: frozenset[TaskStatus] = frozenset({S.SUCCEEDED, S.CANCELLED, S.DEAD_LETTER})

# The lifecycle of DESIGN.md, plus an operator's redrive of a dead letter (dead_letter -> queued, with a new
# attempt budget). Every guarded UPDATE in adapters/sql/tasks.sql names, in its WHERE, exactly the
# sources this table allows for its target (tests/unit/test_sql_guards.py checks that they agree).
TRANSITIONS: Mapping[TaskStatus, frozenset[TaskStatus]] = {
    S.CREATED: frozenset({S.QUEUED, S.CANCELLED, S.DEAD_LETTER}),
    S.QUEUED: frozenset({S.RESERVED, S.CANCELLED, S.DEAD_LETTER}),
    S.RESERVED: frozenset({S.RUNNING, S.CANCELLED, S.DEAD_LETTER}),
    S.RUNNING: frozenset({S.SUCCEEDED, S.FAILED, S.DEAD_LETTER, S.CANCELLED}),
    S.FAILED: frozenset({S.QUEUED, S.CANCELLED, S.DEAD_LETTER}),
    S.SUCCEEDED: frozenset(),
    S.CANCELLED: frozenset(),
    S.DEAD_LETTER: frozenset({S.QUEUED}),  # only by redrive: nothing automatic leaves a terminal status
}

# The EventBridge detail-type announced when a task enters a status. `reserved` announces nothing: a claim passes
# through it in the same statement that starts the run, and `task.started` says it.
EVENT_FOR_STATUS: Mapping[TaskStatus, str] = {
    S.CREATED: "task.created",
    S.QUEUED: "task.queued",
    S.RUNNING: "task.started",
    S.SUCCEEDED: "task.succeeded",
    S.FAILED: "task.failed",
    S.CANCELLED: "task.cancelled",
    S.DEAD_LETTER: "task.dead_lettered",
}


def can_transition(current: TaskStatus, target: TaskStatus) -> bool:
    return target in TRANSITIONS[current]


def sources_of(target: TaskStatus) -> frozenset[TaskStatus]:
    """Every status from which `target` may be entered: what a guarded UPDATE names in its WHERE."""
    return frozenset(source for source, targets in TRANSITIONS.items() if target in targets)


def require_path(task_id: UUID | None, current: TaskStatus, *path: TaskStatus) -> None:
    """Raise unless every step of `path`, starting from `current`, is an allowed transition."""
    for target in path:
        if not can_transition(current, target):
            raise IllegalTransitionError(task_id, current, target)
        current = target


@dataclasses.dataclass(frozen=True, slots=True)
class Task:
    id: UUID
    tenant_id: TenantId
    type: str
    priority: int
    status: TaskStatus
    payload: Mapping[str, Any]
    max_attempts: int
    created_at: datetime
    updated_at: datetime
    available_at: datetime
    scheduled_at: datetime | None = None
    idempotency_key: str | None = None
    attempt_count: int = 0
    locked_by: str | None = None
    locked_until: datetime | None = None
    last_error: str | None = None
    cancel_requested_at: datetime | None = None
    # Usage over all attempts, kept by the executor.
    tokens_in: int = 0
    tokens_out: int = 0
    cost: Decimal | None = None
    # Attempts numbered after budget_from make up the current budget (a redrive starts a new one).
    budget_from: int = 0
    redrive_count: int = 0
    # What one attempt may use, fixed at creation: the model asked for, at most this many input tokens, at most this
    # many output tokens, so at most worst_cost USD (None: the model has no price); and the task's own cost ceiling.
    model: str | None = None
    input_tokens: int | None = None
    max_output_tokens: int | None = None
    worst_cost: Decimal | None = None
    max_cost_usd: Decimal | None = None
    # The model's canonical name (limits, pauses, spend and prices are keyed by it; '' when none is named), and what one
    # call counts against the model's tokens per minute, as its provider counts them.
    model_key: str = ""
    rate_tokens: int | None = None
    # Only on a claim's answer, never stored: a task of a model that needs a wake-up (rate_limit), to wake then, with
    # as many slots as the model will have room for.
    deferred_until: datetime | None = None
    deferred_for: str | None = None
    wake_slots: int | None = None
    # Why a queued or failed task is not running now, derived by the database when the task is read; None when it
    # only waits for an executor, or is not waiting.
    waiting_for: WaitingFor | None = None

    @property
    def attempts_in_budget(self) -> int:
        return self.attempt_count - self.budget_from

    @classmethod
    def submit(
        cls,
        *,
        tenant_id: TenantId,
        type: str,
        payload: Mapping[str, Any],
        now: datetime,
        priority: int = DEFAULT_PRIORITY,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        scheduled_at: datetime | None = None,
        idempotency_key: str | None = None,
        model: str | None = None,
        input_tokens: int | None = None,
        max_output_tokens: int | None = None,
        worst_cost: Decimal | None = None,
        max_cost_usd: Decimal | None = None,
        model_key: str | None = None,
        rate_tokens: int | None = None,
    ) -> Task:
        """A new task, accepted and queued: it is runnable from `scheduled_at` (or now)."""
        if not 1 <= max_attempts <= MAX_ATTEMPTS_CEILING:
            raise ValueError(f"max_attempts must be within 1..{MAX_ATTEMPTS_CEILING}")
        require_path(None, S.CREATED, S.QUEUED)
        return cls(
            id=uuid4(),
            tenant_id=tenant_id,
            type=type,
            priority=priority,
            status=S.QUEUED,
            payload=payload,
            max_attempts=max_attempts,
            created_at=now,
            updated_at=now,
            available_at=max(now, scheduled_at) if scheduled_at else now,
            scheduled_at=scheduled_at,
            idempotency_key=idempotency_key,
            model=model,
            input_tokens=input_tokens,
            max_output_tokens=max_output_tokens,
            worst_cost=worst_cost,
            max_cost_usd=max_cost_usd,
            model_key=model_key if model_key is not None else (model or "").strip().lower(),
            rate_tokens=rate_tokens if rate_tokens is not None else (input_tokens or 0) + (max_output_tokens or 0),
        )

    def transition(self, target: TaskStatus, now: datetime, **changes: Any) -> Task:
        """The task after moving to `target`; raises IllegalTransitionError if the table forbids it."""
        require_path(self.id, self.status, target)
        return dataclasses.replace(self, status=target, updated_at=now, **changes)

    @property
    def terminal(self) -> bool:
        return self.status.terminal
