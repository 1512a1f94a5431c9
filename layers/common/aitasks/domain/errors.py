"""One root error with typed subclasses. The domain knows nothing of HTTP: http/problems.py maps these."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datetime import datetime
    from decimal import Decimal
    from uuid import UUID


class AitasksError(Exception):
    """Root of every error this package raises on purpose."""


class IllegalTransitionError(AitasksError):
    """A status change that the lifecycle table does not allow (or that lost a race to another actor)."""

    def __init__(self, task_id: UUID | None, current: str, target: str) -> None:
        super().__init__(f"task {task_id}: cannot go from {current} to {target}")
        self.task_id = task_id
        self.current = current
        self.target = target


class TaskNotFoundError(AitasksError):
    """No such task for this tenant (another tenant's task is 'not found' too)."""

    def __init__(self, task_id: UUID) -> None:
        super().__init__(f"task {task_id} not found")
        self.task_id = task_id


class UnauthorizedError(AitasksError):
    """Missing, unknown or revoked credentials."""


class DependencyUnavailableError(AitasksError):
    """A dependency (the database, a queue) cannot be reached right now; the caller may retry later."""

    def __init__(self, dependency: str, retry_after_s: int = 5) -> None:
        super().__init__(f"{dependency} is unavailable")
        self.dependency = dependency
        self.retry_after_s = retry_after_s


class MigrationError(AitasksError):
    """The schema migrations cannot be applied as they are."""


class InvalidTaskError(AitasksError):
    """The task breaks a rule of its type; `errors` are (field, message) pairs in the API's field names."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{field}: {message}" for field, message in errors))
        self.errors = errors


class PayloadTooLargeError(AitasksError):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"the payload takes {size} bytes as JSON; the limit is {limit}")
        self.size = size
        self.limit = limit


class IdempotencyKeyReusedError(AitasksError):
    """The Idempotency-Key was already used by this tenant for a different request."""


class RequestInProgressError(AitasksError):
    """A request with the same Idempotency-Key is still being processed."""


class IdempotencyKeyTakenError(AitasksError):
    """The store already holds a task with this tenant's Idempotency-Key (the unique index's backstop)."""


class BudgetExceededError(AitasksError):
    """The tenant's month has spent, or holds for running attempts, its whole budget (USD)."""

    def __init__(self, budget: Decimal, spent: Decimal, reserved: Decimal, period_end: datetime) -> None:
        super().__init__(
            f"this month's budget of ${budget:f} is used up: ${spent:f} spent and ${reserved:f} held by running tasks"
        )
        self.budget = budget
        self.spent = spent
        self.reserved = reserved
        self.period_end = period_end
