"""Use cases on tasks. Each receives its dependencies; none fetches its own."""

from __future__ import annotations

import dataclasses
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import ValidationError

from aitasks.application.ai import FakeParams, input_tokens_at_most, rate_limit_tokens
from aitasks.domain.errors import (
    BudgetExceededError,
    IdempotencyKeyReusedError,
    IdempotencyKeyTakenError,
    IllegalTransitionError,
    InvalidTaskError,
    TaskNotFoundError,
)
from aitasks.domain.task import DEFAULT_MAX_ATTEMPTS, DEFAULT_PRIORITY, Task, TaskStatus, TenantId
from aitasks.domain.task_types import max_output_tokens, validate_task

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from decimal import Decimal
    from uuid import UUID

    from aitasks.application.dispatch import Dispatcher
    from aitasks.application.limits import ModelCatalog
    from aitasks.application.ports import (
        ArtifactRecord,
        AttemptRecord,
        EventRecord,
        LimitsRepository,
        TaskFilter,
        TaskQueries,
        TaskRepository,
    )

logger = logging.getLogger(__name__)
T = TypeVar("T")


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclasses.dataclass(frozen=True, slots=True)
class NewTask:
    """What a client asks for; already validated at the edge."""

    type: str
    payload: Mapping[str, Any]
    priority: int = DEFAULT_PRIORITY
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    scheduled_at: datetime | None = None
    max_cost_usd: Decimal | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class CreateTask:
    """Store the task (with its events) and then wake an executor.

    The task's model is the one it asks for if the deployment allows it (else a 422), or the default; the most one
    attempt may cost is fixed now, from the model's price, an upper bound of its input tokens and its output cap.
    A tenant whose month has spent or holds its whole budget gets BudgetExceededError (402), and nothing is stored.

    The message is sent after the commit: if the send fails the task is still stored, and the sweeper
    re-dispatches due tasks that have no live message. With an Idempotency-Key, the unique (tenant, key) index is
    the backstop behind the idempotency records: a retry that finds the task already stored returns it (and wakes
    an executor again, harmlessly) if it asked for the same thing, and refuses otherwise.
    """

    tasks: TaskRepository
    dispatch: Dispatcher
    models: ModelCatalog
    limits: LimitsRepository
    allow_fake: bool = False
    clock: Callable[[], datetime] = utc_now

    def __call__(self, tenant_id: TenantId, new: NewTask, idempotency_key: str | None = None) -> Task:
        validate_task(new.type, new.payload)
        self._check_fake(new.payload)
        model = self.models.resolve(new.payload.get("model"))
        input_tokens, output_tokens = input_tokens_at_most(new.payload), max_output_tokens(new.type, new.payload)
        worst = self.models.prices.worst_cost(model, input_tokens=input_tokens, max_output_tokens=output_tokens)
        model_key, rate_tokens = self.models.prices.key(model), rate_limit_tokens(new.payload, output_tokens)
        now = self.clock()
        submitted = Task.submit(
            tenant_id=tenant_id,
            type=new.type,
            payload=new.payload,
            priority=new.priority,
            max_attempts=new.max_attempts,
            scheduled_at=new.scheduled_at,
            idempotency_key=idempotency_key,
            now=now,
            model=model,
            input_tokens=input_tokens,
            max_output_tokens=output_tokens,
            worst_cost=worst,
            max_cost_usd=new.max_cost_usd,
            model_key=model_key,
            rate_tokens=rate_tokens,
        )
        try:
            task = self.tasks.add(submitted)
        except IdempotencyKeyTakenError:
            assert idempotency_key is not None  # only a keyed task can collide
            task = self._same_request(tenant_id, idempotency_key, new)
        if task is None:
            raise self._refusal(submitted, worst, now)
        self._wake(task, now)
        return task

    def _refusal(self, task: Task, worst: Decimal | None, now: datetime) -> Exception:
        """Why the store refused the task: a call larger than its model's tokens per minute, an unpriced model for a
        tenant with a budget, or the budget used up."""
        from aitasks.application.limits import period_bounds

        tpm = self.limits.model_tpm(task.model_key)
        if tpm is not None and task.rate_tokens is not None and task.rate_tokens > tpm:
            message = (
                f"one call of this task counts {task.rate_tokens} tokens against {task.model!r}'s limit of {tpm} "
                "tokens a minute, so it could never run; shorten the input or lower params.maxTokens"
            )
            return InvalidTaskError([("payload", message)])
        limits = self.limits.limits(task.tenant_id, now=now)
        if worst is None and limits.monthly_budget_usd is not None:
            message = (
                f"{task.model!r} has no price, and a tenant with a budget can only use priced models "
                "(its cost could not be held against the budget)"
            )
            return InvalidTaskError([("payload.model", message)])
        budget = limits.monthly_budget_usd if limits.monthly_budget_usd is not None else limits.spent_usd
        return BudgetExceededError(budget, limits.spent_usd, limits.reserved_usd, period_bounds(now)[1])

    def _check_fake(self, payload: Mapping[str, Any]) -> None:
        """params.fake scripts the fake provider; with a real one it would be silently ignored, so it is refused."""
        fake = (payload.get("params") or {}).get("fake")
        if fake is None:
            return
        if not self.allow_fake:
            raise InvalidTaskError([("payload.params.fake", "only the fake provider takes this; it is not in use")])
        try:
            FakeParams.model_validate(fake)
        except ValidationError as exc:
            errors = [("payload.params.fake." + ".".join(str(p) for p in e["loc"]), e["msg"]) for e in exc.errors()]
            raise InvalidTaskError([(f.rstrip("."), m) for f, m in errors]) from exc

    def _same_request(self, tenant_id: TenantId, key: str, new: NewTask) -> Task:
        existing = self.tasks.find_by_idempotency_key(tenant_id, key)
        if existing is None:  # pragma: no cover - the key was taken a moment ago and tasks are not deleted so fast
            raise IdempotencyKeyReusedError("the Idempotency-Key is in use")
        asked = (new.type, new.priority, dict(new.payload), new.max_attempts, new.scheduled_at, new.max_cost_usd)
        stored = (
            existing.type,
            existing.priority,
            dict(existing.payload),
            existing.max_attempts,
            existing.scheduled_at,
            existing.max_cost_usd,
        )
        if asked != stored:
            raise IdempotencyKeyReusedError("the Idempotency-Key was used for a different request")
        return existing

    def _wake(self, task: Task, now: datetime) -> None:
        if task.status is TaskStatus.QUEUED:
            self.dispatch(task, now=now)


@dataclasses.dataclass(frozen=True, slots=True)
class GetTask:
    tasks: TaskRepository

    def __call__(self, tenant_id: TenantId, task_id: UUID) -> Task:
        task = self.tasks.get(tenant_id, task_id)
        if task is None:
            raise TaskNotFoundError(task_id)
        return task


@dataclasses.dataclass(frozen=True, slots=True)
class CancelTask:
    """Cancel at once a task that is not running yet; ask a running one to stop (its executor finishes it).

    Cancelling a cancelled task returns it unchanged; cancelling a succeeded or dead-lettered one is a conflict.
    """

    tasks: TaskRepository
    dispatch: Dispatcher
    clock: Callable[[], datetime] = utc_now

    def __call__(self, tenant_id: TenantId, task_id: UUID) -> Task:
        # Two tries: the task may start running between the first guarded UPDATE and the second.
        status = TaskStatus.CREATED
        for _ in range(2):
            now = self.clock()
            task = self.tasks.cancel(tenant_id, task_id, now=now)
            if task is not None:
                self.dispatch.cancel(task, now=now)
                return task
            task = self.tasks.request_cancel(tenant_id, task_id, now=now)
            if task is not None:
                return task
            current = self.tasks.get(tenant_id, task_id)
            if current is None:
                raise TaskNotFoundError(task_id)
            if current.status is TaskStatus.CANCELLED:
                return current
            status = current.status
            if current.terminal:
                break
        raise IllegalTransitionError(task_id, status, TaskStatus.CANCELLED)


@dataclasses.dataclass(frozen=True, slots=True)
class Page:
    tasks: list[Task]
    total: int
    page: int
    page_size: int

    @property
    def has_next(self) -> bool:
        return self.page * self.page_size < self.total

    @property
    def has_prev(self) -> bool:
        return self.page > 1


@dataclasses.dataclass(frozen=True, slots=True)
class ListTasks:
    queries: TaskQueries

    def __call__(self, tenant_id: TenantId, filters: TaskFilter, *, page: int, page_size: int) -> Page:
        tasks, total = self.queries.list_tasks(tenant_id, filters, offset=(page - 1) * page_size, limit=page_size)
        return Page(tasks, total, page, page_size)


def _owned(found: list[T] | None, task_id: UUID) -> list[T]:
    """A task's records, or TaskNotFoundError when the read found no such task for the tenant."""
    if found is None:
        raise TaskNotFoundError(task_id)
    return found


@dataclasses.dataclass(frozen=True, slots=True)
class GetAttempts:
    queries: TaskQueries

    def __call__(self, tenant_id: TenantId, task_id: UUID) -> list[AttemptRecord]:
        return _owned(self.queries.attempts(tenant_id, task_id), task_id)


@dataclasses.dataclass(frozen=True, slots=True)
class GetArtifacts:
    queries: TaskQueries

    def __call__(self, tenant_id: TenantId, task_id: UUID) -> list[ArtifactRecord]:
        return _owned(self.queries.artifacts(tenant_id, task_id), task_id)


@dataclasses.dataclass(frozen=True, slots=True)
class GetHistory:
    queries: TaskQueries

    def __call__(self, tenant_id: TenantId, task_id: UUID) -> list[EventRecord]:
        return _owned(self.queries.history(tenant_id, task_id), task_id)
