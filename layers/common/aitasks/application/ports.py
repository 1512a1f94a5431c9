"""The capabilities the use cases need, as small protocols. Adapters implement them."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import TYPE_CHECKING, Protocol
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from aitasks.domain.errors import AitasksError
from aitasks.domain.task import TaskStatus
from aitasks.domain.task_types import REGISTRY

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from datetime import datetime
    from typing import Any

    from aitasks.application.ai import ModelPrice, PriceTable
    from aitasks.domain.task import Task, TenantId
    from aitasks.domain.tenant import Tier


@dataclasses.dataclass(frozen=True, slots=True)
class TaskFilter:
    """Which tasks a listing shows: any of these statuses and any of these types."""

    statuses: frozenset[TaskStatus] = frozenset(TaskStatus)
    types: frozenset[str] = frozenset(REGISTRY)


@dataclasses.dataclass(frozen=True, slots=True)
class AttemptRecord:
    attempt_no: int
    status: str
    model: str | None
    tokens_in: int | None
    tokens_out: int | None
    cost: Decimal | None
    latency_ms: int | None
    error_code: str | None
    error_detail: str | None
    started_at: datetime
    ended_at: datetime | None
    cost_estimated: bool = False  # the cost could not be known: the attempt was charged what it held


@dataclasses.dataclass(frozen=True, slots=True)
class ArtifactRecord:
    id: UUID
    kind: str
    uri: str | None
    content: str | None
    created_at: datetime


@dataclasses.dataclass(frozen=True, slots=True)
class EventRecord:
    """One step of a task's state history: an outbox row (published or not)."""

    id: UUID
    seq: int
    event_type: str
    status: str | None
    attempt_no: int
    occurred_at: datetime


class TaskRepository(Protocol):
    """Tasks and their attempts. Every status change is one guarded statement that also writes its outbox rows."""

    def add(self, task: Task) -> Task | None:
        """Store a newly submitted task with its task.created and task.queued events; None, storing nothing, when
        its tenant's month has already spent or holds its whole budget, or the tenant has a budget and the task's
        model no price."""
        ...

    def get(self, tenant_id: TenantId, task_id: UUID) -> Task | None:
        """The tenant's task, or None (also when it belongs to another tenant)."""
        ...

    def claim_due(self, *, limit: int, locked_by: str, lease_until: datetime, now: datetime) -> list[Task]:
        """Lease up to `limit` of the best due tasks (fair share across tenants, then priority, then age, each
        tenant within its cap, each model within its rate limits, each tenant within its budget) and open their next
        attempts, in one statement. The tasks it had to hold back for a limit come back too, still queued, with
        `deferred_until` and `deferred_for` set; the claimed ones are running and `locked_by` the caller."""
        ...

    def finish_runs(self, runs: Sequence[FinishedRun], *, locked_by: str, now: datetime) -> list[Task]:
        """End leased runs with their outcomes (attempt, totals, artifact, event), all in one statement; each is
        fenced by (task id, locked_by, attempt): a run whose lease was lost changes nothing and is not returned."""
        ...

    def extend_leases(
        self, runs: Sequence[tuple[UUID, int]], *, locked_by: str, lease_until: datetime
    ) -> dict[tuple[UUID, int], Lease]:
        """Renew the leases of these (task id, attempt) runs that `locked_by` still holds, keyed by (task id,
        attempt); a run missing from the answer lost its lease (taken over or finished). It never waits for a lock:
        a run whose row another statement holds (its finish, a cancel request) is answered held but renewed by the
        next call only."""
        ...

    def wake_freed(self, freed: Mapping[TenantId, int], *, now: datetime) -> list[Task]:
        """For each tenant, up to as many of its next due tasks as it freed slots (and its cap admits now), marked
        as woken: the caller sends them wake-ups."""
        ...

    def abandon_expired(self, task_ids: Sequence[UUID], *, now: datetime) -> list[Task]:
        """Close runs whose lease expired (attempt abandoned; task failed, dead-lettered or cancelled)."""
        ...

    def expired_leases(self, *, now: datetime, limit: int) -> list[UUID]: ...

    def redispatch_due(self, *, now: datetime, due_before: datetime, limit: int) -> list[Task]:
        """Due tasks whose last wake-up is older than `due_before` and whose tenant is below its cap, marked as
        dispatched now."""
        ...

    def redrive(
        self,
        *,
        now: datetime,
        limit: int,
        task_id: UUID | None = None,
        tenant_id: TenantId | None = None,
        types: Sequence[str] | None = None,
        since: datetime | None = None,
    ) -> list[Task]:
        """Dead letters back to queued with a new attempt budget (history kept), with their task.queued events."""
        ...

    def dead_letters(
        self, *, limit: int, types: Sequence[str] | None = None, since: datetime | None = None
    ) -> list[Task]: ...

    def get_by_id(self, task_id: UUID) -> Task | None:
        """A task whoever its tenant: only for the executor and operators, never for a request."""
        ...

    def find_by_idempotency_key(self, tenant_id: TenantId, key: str) -> Task | None: ...

    def cancel(self, tenant_id: TenantId, task_id: UUID, *, now: datetime) -> Task | None:
        """Cancel a task that is not running yet (with its task.cancelled event); None when it is not such a task."""
        ...

    def request_cancel(self, tenant_id: TenantId, task_id: UUID, *, now: datetime) -> Task | None:
        """Record a cancel request on a running task (its executor ends the run); None when it is not running."""
        ...


class TaskQueries(Protocol):
    """The read side: straight from storage to views, no domain logic."""

    def list_tasks(
        self, tenant_id: TenantId, filters: TaskFilter, *, offset: int, limit: int
    ) -> tuple[list[Task], int]:
        """One page of the tenant's tasks, newest first, and the total count matching the filter."""
        ...

    def attempts(self, tenant_id: TenantId, task_id: UUID) -> list[AttemptRecord] | None:
        """The task's attempts in order; None when the tenant has no such task."""
        ...

    def artifacts(self, tenant_id: TenantId, task_id: UUID) -> list[ArtifactRecord] | None:
        """The task's artifacts, oldest first; None when the tenant has no such task."""
        ...

    def history(self, tenant_id: TenantId, task_id: UUID) -> list[EventRecord] | None:
        """The task's events in the order they were written; None when the tenant has no such task."""
        ...


@dataclasses.dataclass(frozen=True, slots=True)
class Principal:
    """Who an API key acts for: its tenant, and the usage plan key of the tenant's tier (None until attached)."""

    tenant_id: TenantId
    usage_key: str | None


class ApiKeyRepository(Protocol):
    """API keys, stored as SHA-256 hashes."""

    def add(self, *, tenant_id: TenantId, name: str, key_hash: bytes, now: datetime) -> UUID: ...

    def principal_for(self, key_hash: bytes) -> Principal | None:
        """The tenant owning an active (not revoked) key with this hash, and its usage plan key."""
        ...

    def revoke(self, key_id: UUID, *, now: datetime) -> bool: ...


@dataclasses.dataclass(frozen=True, slots=True)
class TenantPlan:
    """A tenant's tier and the API Gateway API key (id and value) that attaches it to the tier's usage plan."""

    tenant_id: TenantId
    tier: Tier
    usage_key_id: str
    usage_key: str


class TenantRepository(Protocol):
    def get(self, tenant_id: TenantId) -> TenantPlan | None: ...

    def save(self, plan: TenantPlan, *, now: datetime) -> None: ...


@dataclasses.dataclass(frozen=True, slots=True)
class TenantLimits:
    """A tenant's limits as the claim applies them, and its work now."""

    tenant_id: TenantId
    tier: Tier | None  # None: no tier yet (the standard tier's defaults apply)
    max_concurrency: int  # what the claim enforces: the override, else the tier's default
    max_concurrency_override: int | None
    running: int
    queued: int  # queued or failed, whether due or not
    monthly_budget_usd: Decimal | None = None  # what the claim enforces: the override, else the tier's; None: none
    budget_override: Decimal | None = None
    spent_usd: Decimal = Decimal(0)  # this month
    reserved_usd: Decimal = Decimal(0)  # held by running attempts
    weight: float = 1.0  # its share of a scarce model against the others': the override, else the tier's
    weight_override: Decimal | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class ModelSpend:
    """A tenant's month on one model."""

    model: str
    spent_usd: Decimal
    reserved_usd: Decimal
    tokens_in: int
    tokens_out: int
    attempts: int


class LimitsRepository(Protocol):
    """Per-tenant limits (stored in Postgres, read by the claim statement) and what the tenant's month used."""

    def set_max_concurrency(self, tenant_id: TenantId, value: int | None, *, now: datetime) -> None:
        """Override the tenant's cap (0 pauses it); None goes back to its tier's default."""
        ...

    def set_monthly_budget(self, tenant_id: TenantId, usd: Decimal | None, *, now: datetime) -> None:
        """Override the tenant's monthly budget; None goes back to its tier's (none by default). Work the old budget
        held back may run again."""
        ...

    def set_weight(self, tenant_id: TenantId, weight: Decimal | None, *, now: datetime) -> None:
        """Override the tenant's weight, its share of a scarce model against the others'; None goes back to its
        tier's."""
        ...

    def model_tpm(self, model_key: str) -> int | None:
        """The tokens a minute the model allows (None: no limit)."""
        ...

    def limits(self, tenant_id: TenantId, *, now: datetime) -> TenantLimits: ...

    def spend_by_model(self, tenant_id: TenantId, *, now: datetime) -> list[ModelSpend]: ...


@dataclasses.dataclass(frozen=True, slots=True)
class ModelStatus:
    """A model as the claim sees it: its price, its limits, whether a 429 paused it, its last 60 s."""

    model: str
    provider: str | None
    input_per_m: Decimal | None
    output_per_m: Decimal | None
    rpm: int | None
    tpm: int | None
    paused_until: datetime | None
    calls: int
    tokens: int


class ModelRepository(Protocol):
    """Models: their prices (USD per 1M tokens) and their rate limits, shared by every executor."""

    def price_table(self) -> PriceTable:
        """Every model's price (a cached copy, read again after a few minutes)."""
        ...

    def save_prices(self, prices: Mapping[str, tuple[str, ModelPrice, str]], *, now: datetime) -> int:
        """Store these prices (model -> provider, price, source) and forget every other model's; how many stored."""
        ...

    def set_limits(self, model: str, *, rpm: int | None, tpm: int | None, now: datetime) -> str:
        """Set the limits of the model `model` stands for (a snapshot or another casing maps to its canonical name,
        which is returned); what claims found blocked under the old limits is judged afresh."""
        ...

    def resume(self, model: str, *, now: datetime) -> str | None:
        """Lift the model's pause now (its canonical name, or None if it has no limits row)."""
        ...

    def due_tasks(self, model: str, *, now: datetime, limit: int) -> list[Task]:
        """One due task of each tenant waiting on the model (at most `limit`): what to wake after a change."""
        ...

    def models(self, *, now: datetime) -> list[ModelStatus]: ...


class UsageKeyNotFoundError(AitasksError, LookupError):
    """API Gateway has no API key with this id."""


class UsagePlanConflictError(AitasksError):
    """The key could not be put in the tier's plan: it is in another plan of the stage (a concurrent change)."""


class UsagePlans(Protocol):
    """The stack's usage plans, one per tier (API Gateway)."""

    def create_key(self, tenant_id: TenantId) -> tuple[str, str]:
        """A new API Gateway API key for the tenant: its id and its value."""
        ...

    def attach(self, key_id: str, tier: Tier) -> None:
        """Put the key in the tier's usage plan and take it out of every other tier's (idempotent).

        Raises UsageKeyNotFoundError when API Gateway has no such key.
        """
        ...


@dataclasses.dataclass(frozen=True, slots=True)
class OutboxEvent:
    id: UUID
    task_id: UUID
    tenant_id: str
    event_type: str
    payload: Mapping[str, Any]
    occurred_at: datetime
    seq: int  # grows with each event of the task


class Outbox(Protocol):
    """The outbox rows that state changes wrote, awaiting publication."""

    def publish_pending(self, limit: int, publish: Callable[[list[OutboxEvent]], set[UUID]]) -> int:
        """Claim up to `limit` unpublished rows no other relay holds, hand them to `publish`, mark the ids it
        returns as published, all in one transaction; return how many were marked."""
        ...

    def backlog(self, *, before: datetime) -> int:
        """How many rows that occurred before `before` are still unpublished."""
        ...


class EventPublisher(Protocol):
    def publish(self, events: list[OutboxEvent]) -> set[UUID]:
        """Publish events; return the ids of those the bus accepted (the others stay for a later try)."""
        ...


class Scheduler(Protocol):
    """One-time wake-ups further ahead than a queue's delay allows, one per task."""

    def schedule(self, task_id: UUID, wake: WakeUp, *, at: datetime) -> None: ...

    def unschedule(self, task_id: UUID) -> None:
        """Remove the task's pending wake-up, if any (best effort)."""
        ...


class Retention(Protocol):
    """Deleting what is no longer needed, in bounded batches; each returns how many rows it deleted."""

    def prune_finished(self, *, cutoff: datetime, limit: int) -> int: ...

    def prune_published(self, *, cutoff: datetime, limit: int) -> int: ...

    def prune_expired_keys(self, *, now: datetime, limit: int) -> int: ...

    def prune_expired_tickets(self, *, now: datetime, limit: int) -> int: ...

    def prune_stale_connections(self, *, cutoff: datetime, limit: int) -> int: ...

    def prune_model_calls(self, *, cutoff: datetime, limit: int) -> int: ...


class TicketStore(Protocol):
    """Short-lived, single-use tickets that open a WebSocket for a tenant, stored as hashes."""

    def add(self, *, ticket_hash: bytes, tenant_id: TenantId, expires_at: datetime) -> None: ...

    def redeem(self, ticket_hash: bytes, *, now: datetime) -> TenantId | None:
        """The ticket's tenant, once: the ticket is used up; None when unknown, used or expired."""
        ...


class ConnectionRegistry(Protocol):
    """The open WebSocket connections and the tenant each belongs to."""

    def add(self, connection_id: str, tenant_id: TenantId, *, now: datetime) -> None: ...

    def remove(self, connection_id: str) -> bool: ...

    def of_tenant(self, tenant_id: TenantId) -> list[str]:
        """The connection ids of this tenant, and of no other."""
        ...


class ConnectionGoneError(LookupError):
    """The WebSocket connection is closed (API Gateway's 410 GoneException)."""


class MessagePusher(Protocol):
    """Sends a message down an open WebSocket connection (API Gateway's @connections)."""

    def push(self, connection_id: str, message: bytes) -> None:
        """Raises ConnectionGoneError when the connection is closed; other failures raise as they are."""
        ...


class WorkQueue(Protocol):
    """Wake-up calls for the executor. A message only says that there is due work; Postgres decides what runs."""

    def send(self, wake: WakeUp, *, delay_s: int = 0) -> None: ...

    def change_visibility(self, receipt_handle: str, seconds: int) -> None:
        """Make a received message visible to consumers again in `seconds` (0: at once)."""
        ...


@dataclasses.dataclass(frozen=True, slots=True)
class Lease:
    """A run's lease, still held: whether a cancel of its task was requested."""

    cancel_requested: bool


@dataclasses.dataclass(frozen=True, slots=True)
class FinishedRun:
    """A run to end: its task, the attempt it ran, and how it went."""

    task_id: UUID
    attempt_no: int
    outcome: RunOutcome


@dataclasses.dataclass(frozen=True, slots=True)
class Artifact:
    kind: str
    content: str


@dataclasses.dataclass(frozen=True, slots=True)
class RunOutcome:
    """How a run ended: the task's new status, the attempt's record, what it produced.

    `charge_held` (with no `cost`): the call may have been billed without us knowing how much (cancelled
    mid-call, timed out, cut off, an error not known to be free, an answer that cannot be priced), so the tenant is
    charged what the attempt held - the worst it could cost - and that is its recorded cost, marked estimated.
    `pause_until`: no call of the task's model starts before it, whoever's (a provider's 429 with a wait, a quota
    or auth error)."""

    status: TaskStatus
    attempt_status: str
    model: str | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    cost: Decimal | None = None
    latency_ms: int | None = None
    error_code: str | None = None
    error_detail: str | None = None
    artifact: Artifact | None = None
    available_at: datetime | None = None  # a failed task: when it may run again
    charge_held: bool = False
    pause_until: datetime | None = None

    @property
    def last_error(self) -> str | None:
        if self.error_code is None:
            return None
        return f"{self.error_code}: {self.error_detail}" if self.error_detail else self.error_code


class WakeUp(BaseModel):
    """The body of a work-queue message: there is due work (from `at`, when given). Postgres holds the tasks and the
    executor claims the best of them, whichever tenant; the tenant and task named here are only hints (the
    message's group, and what the DLQ handler looks at). Old messages ({taskId, attempt}) still parse."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)

    tenant_id: str | None = Field(default=None, alias="tenantId", min_length=1, max_length=200)
    task_id: UUID | None = Field(default=None, alias="taskId")
    at: AwareDatetime | None = Field(default=None, description="the due time it was sent for")
    slots: int | None = Field(default=None, ge=1, le=10, description="runs the claim it causes may start (default 1)")

    def body(self) -> str:
        return self.model_dump_json(by_alias=True, exclude_none=True)


@dataclasses.dataclass(frozen=True, slots=True)
class Delivery:
    """A wake-up as the executor received it: the queue's message id and receipt handle, and its body."""

    message_id: str
    receipt_handle: str
    wake: WakeUp
