"""Use cases on tasks. Each receives its dependencies; none fetches its own."""

from __future__ import annotations

import dataclasses
import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from aitasks.domain.errors import TaskNotFoundError
from aitasks.domain.task import DEFAULT_MAX_ATTEMPTS, DEFAULT_PRIORITY, Task, TenantId

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from uuid import UUID

    from aitasks.application.ports import TaskRepository, WorkQueue

logger = logging.getLogger(__name__)

# SQS DelaySeconds can postpone a message by at most 15 minutes.
MAX_QUEUE_DELAY_S = 900


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


@dataclasses.dataclass(frozen=True, slots=True)
class CreateTask:
    """Store the task (with its events) and then wake an executor. The message is sent after the commit: if the
    send fails the task is still stored, and the sweeper re-dispatches due tasks that have no live message."""

    tasks: TaskRepository
    queue: WorkQueue
    clock: Callable[[], datetime] = utc_now

    def __call__(self, tenant_id: TenantId, new: NewTask, idempotency_key: str | None = None) -> Task:
        now = self.clock()
        task = self.tasks.add(
            Task.submit(
                tenant_id=tenant_id,
                type=new.type,
                payload=new.payload,
                priority=new.priority,
                max_attempts=new.max_attempts,
                scheduled_at=new.scheduled_at,
                idempotency_key=idempotency_key,
                now=now,
            )
        )
        delay = max(0, min(MAX_QUEUE_DELAY_S, int((task.available_at - now).total_seconds())))
        try:
            self.queue.send(task.id, attempt_no=task.attempt_count + 1, delay_s=delay)
        except Exception:
            logger.exception("task stored but its wake-up message was not sent", extra={"task_id": str(task.id)})
        return task


@dataclasses.dataclass(frozen=True, slots=True)
class GetTask:
    tasks: TaskRepository

    def __call__(self, tenant_id: TenantId, task_id: UUID) -> Task:
        task = self.tasks.get(tenant_id, task_id)
        if task is None:
            raise TaskNotFoundError(task_id)
        return task


@dataclasses.dataclass(frozen=True, slots=True)
class RunTask:
    """Claim the task named by a wake-up message and run it to an outcome.

    PLACEHOLDER until the executor issue lands: after the claim it marks the attempt succeeded without calling a
    model, so the lifecycle can be seen end to end. No model, tokens, cost or artifact is recorded.
    """

    tasks: TaskRepository
    lease_s: int
    clock: Callable[[], datetime] = utc_now

    def __call__(self, task_id: UUID, *, invocation_id: str) -> Task | None:
        now = self.clock()
        claimed = self.tasks.claim(
            task_id, locked_by=invocation_id, lease_until=now + timedelta(seconds=self.lease_s), now=now
        )
        if claimed is None:
            logger.info(
                "nothing to run: task is not runnable (duplicate, finished or cancelled)",
                extra={"task_id": str(task_id)},
            )
            return None
        return self.tasks.succeed(task_id, locked_by=invocation_id, attempt_no=claimed.attempt_count, now=self.clock())
