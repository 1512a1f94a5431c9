"""The capabilities the use cases need, as small protocols. Adapters implement them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from datetime import datetime

    from aitasks.domain.task import Task, TenantId


class TaskRepository(Protocol):
    """Tasks and their attempts. Every status change is one guarded statement that also writes its outbox rows."""

    def add(self, task: Task) -> Task:
        """Store a newly submitted task with its task.created and task.queued events."""
        ...

    def get(self, tenant_id: TenantId, task_id: UUID) -> Task | None:
        """The tenant's task, or None (also when it belongs to another tenant)."""
        ...

    def claim(self, task_id: UUID, *, locked_by: str, lease_until: datetime, now: datetime) -> Task | None:
        """Lease a runnable task (queued, or failed and due) and open its next attempt; None when not runnable."""
        ...

    def succeed(self, task_id: UUID, *, locked_by: str, attempt_no: int, now: datetime) -> Task | None:
        """Finish the leased run as succeeded; fenced by (task id, locked_by, attempt): None when the lease is lost."""
        ...


class ApiKeyRepository(Protocol):
    """API keys, stored as SHA-256 hashes."""

    def add(self, *, tenant_id: TenantId, name: str, key_hash: bytes, now: datetime) -> UUID: ...

    def tenant_for(self, key_hash: bytes) -> TenantId | None:
        """The tenant owning an active (not revoked) key with this hash."""
        ...

    def revoke(self, key_id: UUID, *, now: datetime) -> bool: ...


class WorkQueue(Protocol):
    """Wake-up calls for the executor. A message only names a task; Postgres stays the source of truth."""

    def send(self, task_id: UUID, *, attempt_no: int, delay_s: int = 0) -> None: ...


class WakeUp(BaseModel):
    """The body of a work-queue message. Postgres holds the task; this only says which one to look at."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)

    task_id: UUID = Field(alias="taskId")
    attempt: int = Field(ge=1)
