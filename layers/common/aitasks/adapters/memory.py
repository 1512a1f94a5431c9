"""In-memory fakes of the ports, for unit tests. The contract tests run them beside the Postgres adapters, so
they cannot drift from the real thing."""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import TYPE_CHECKING
from uuid import UUID, uuid4

from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyItemAlreadyExistsError,
    IdempotencyItemNotFoundError,
)
from aws_lambda_powertools.utilities.idempotency.persistence.base import BasePersistenceLayer

from aitasks.application.ports import (
    ArtifactRecord,
    AttemptRecord,
    ConnectionGoneError,
    EventRecord,
    Lease,
    Principal,
    UsageKeyNotFoundError,
)
from aitasks.domain.errors import IdempotencyKeyTakenError
from aitasks.domain.task import EVENT_FOR_STATUS, Task, TaskStatus, TenantId, sources_of

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import DataRecord

    from aitasks.application.ports import OutboxEvent, RunOutcome, TaskFilter, TenantPlan
    from aitasks.domain.tenant import Tier


@dataclasses.dataclass(frozen=True, slots=True)
class RecordedEvent:
    task_id: UUID
    event_type: str
    attempt_no: int
    status: TaskStatus
    occurred_at: datetime
    id: UUID = dataclasses.field(default_factory=uuid4)


@dataclasses.dataclass(frozen=True, slots=True)
class RecordedAttempt:
    task_id: UUID
    attempt_no: int
    status: str


class InMemoryTaskRepository:
    def __init__(self) -> None:
        self.tasks: dict[UUID, Task] = {}
        self.attempts_log: list[RecordedAttempt] = []
        self.artifacts_log: list[tuple[UUID, str, str]] = []
        self.dispatched: dict[UUID, datetime] = {}
        self.events: list[RecordedEvent] = []
        self._lock = threading.Lock()

    def _event(self, task: Task, status: TaskStatus) -> None:
        event = RecordedEvent(task.id, EVENT_FOR_STATUS[status], task.attempt_count, status, task.updated_at)
        self.events.append(event)

    def add(self, task: Task) -> Task:
        with self._lock:
            if task.idempotency_key is not None and any(
                t.tenant_id == task.tenant_id and t.idempotency_key == task.idempotency_key for t in self.tasks.values()
            ):
                raise IdempotencyKeyTakenError
            self.tasks[task.id] = task
            self.dispatched[task.id] = task.created_at
            self._event(task, TaskStatus.CREATED)
            self._event(task, TaskStatus.QUEUED)
            return task

    def get(self, tenant_id: TenantId, task_id: UUID) -> Task | None:
        task = self.tasks.get(task_id)
        return task if task is not None and task.tenant_id == tenant_id else None

    def claim(self, task_id: UUID, *, locked_by: str, lease_until: datetime, now: datetime) -> Task | None:
        with self._lock:
            task = self.tasks.get(task_id)
            runnable = (TaskStatus.QUEUED, TaskStatus.FAILED)
            if task is None or task.status not in runnable or task.available_at > now or task.cancel_requested_at:
                return None
            claimed = dataclasses.replace(
                task,
                status=TaskStatus.RUNNING,
                locked_by=locked_by,
                locked_until=lease_until,
                attempt_count=task.attempt_count + 1,
                updated_at=now,
            )
            self.tasks[task_id] = claimed
            self.attempts_log.append(RecordedAttempt(task_id, claimed.attempt_count, "running"))
            self._event(claimed, TaskStatus.RUNNING)
            return claimed

    def finish(
        self, task_id: UUID, outcome: RunOutcome, *, locked_by: str, attempt_no: int, now: datetime
    ) -> Task | None:
        with self._lock:
            task = self.tasks.get(task_id)
            if (
                task is None
                or task.status is not TaskStatus.RUNNING
                or task.locked_by != locked_by
                or task.attempt_count != attempt_no
            ):
                return None
            status = outcome.status
            if status is TaskStatus.FAILED and task.cancel_requested_at is not None:
                status = TaskStatus.CANCELLED
            done = task.transition(
                status,
                now,
                locked_by=None,
                locked_until=None,
                last_error=outcome.last_error,
                available_at=outcome.available_at or task.available_at,
                tokens_in=task.tokens_in + (outcome.tokens_in or 0),
                tokens_out=task.tokens_out + (outcome.tokens_out or 0),
                cost=task.cost if outcome.cost is None else (task.cost or 0) + outcome.cost,
            )
            self.tasks[task_id] = done
            if done.status is TaskStatus.FAILED:
                self.dispatched[task_id] = now
            self._close_attempt(task_id, outcome.attempt_status, attempt_no)
            if outcome.artifact is not None:
                self.artifacts_log.append((task_id, outcome.artifact.kind, outcome.artifact.content))
            self._event(done, status)
            return done

    def _close_attempt(self, task_id: UUID, status: str, attempt_no: int | None = None) -> None:
        self.attempts_log = [
            dataclasses.replace(a, status=status)
            if a.task_id == task_id and a.status == "running" and attempt_no in (None, a.attempt_no)
            else a
            for a in self.attempts_log
        ]

    def extend_lease(self, task_id: UUID, *, locked_by: str, attempt_no: int, lease_until: datetime) -> Lease | None:
        with self._lock:
            task = self.tasks.get(task_id)
            if task is None or task.status is not TaskStatus.RUNNING or task.locked_by != locked_by:
                return None
            if task.attempt_count != attempt_no:
                return None
            self.tasks[task_id] = dataclasses.replace(task, locked_until=lease_until)
            return Lease(cancel_requested=task.cancel_requested_at is not None)

    def abandon_expired(self, task_ids: Sequence[UUID], *, now: datetime) -> list[Task]:
        closed: list[Task] = []
        with self._lock:
            for task_id in task_ids:
                task = self.tasks.get(task_id)
                expired = task is not None and task.locked_until is not None and task.locked_until < now
                if task is None or task.status is not TaskStatus.RUNNING or not expired:
                    continue
                if task.cancel_requested_at is not None:
                    status = TaskStatus.CANCELLED
                elif task.attempts_in_budget >= task.max_attempts:
                    status = TaskStatus.DEAD_LETTER
                else:
                    status = TaskStatus.FAILED
                done = task.transition(
                    status,
                    now,
                    locked_by=None,
                    locked_until=None,
                    available_at=now,
                    last_error="lease_expired: the run stopped renewing its lease (timeout or crash)",
                )
                self.tasks[task_id] = done
                self.dispatched[task_id] = now
                self._close_attempt(task_id, "abandoned")
                self._event(done, status)
                closed.append(done)
        return closed

    def expired_leases(self, *, now: datetime, limit: int) -> list[UUID]:
        running = [
            t for t in self.tasks.values() if t.status is TaskStatus.RUNNING and t.locked_until and t.locked_until < now
        ]
        return [t.id for t in sorted(running, key=lambda t: t.locked_until or now)][:limit]

    def redispatch_due(self, *, now: datetime, due_before: datetime, limit: int) -> list[Task]:
        with self._lock:
            due = [
                t
                for t in sorted(self.tasks.values(), key=lambda t: t.available_at)
                if t.status in (TaskStatus.QUEUED, TaskStatus.FAILED)
                and t.available_at <= due_before
                and (self.dispatched.get(t.id) is None or self.dispatched[t.id] <= due_before)
            ][:limit]
            for task in due:
                self.dispatched[task.id] = now
            return due

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
        with self._lock:
            chosen = [
                t
                for t in self.tasks.values()
                if t.status is TaskStatus.DEAD_LETTER
                and task_id in (None, t.id)
                and tenant_id in (None, t.tenant_id)
                and (not types or t.type in types)
                and (since is None or t.updated_at >= since)
            ][:limit]
            redriven = []
            for task in chosen:
                again = task.transition(
                    TaskStatus.QUEUED,
                    now,
                    budget_from=task.attempt_count,
                    redrive_count=task.redrive_count + 1,
                    last_error=None,
                    cancel_requested_at=None,
                    available_at=now,
                )
                self.tasks[task.id] = again
                self.dispatched[task.id] = now
                self._event(again, TaskStatus.QUEUED)
                redriven.append(again)
            return redriven

    def dead_letters(
        self, *, limit: int, types: Sequence[str] | None = None, since: datetime | None = None
    ) -> list[Task]:
        return [
            t
            for t in self.tasks.values()
            if t.status is TaskStatus.DEAD_LETTER
            and (not types or t.type in types)
            and (since is None or t.updated_at >= since)
        ][:limit]

    def dead_letter(self, task_id: UUID, *, attempt_no: int, reason: str, now: datetime) -> Task | None:
        with self._lock:
            task = self.tasks.get(task_id)
            if task is None or task.terminal:
                return None
            live = task.status is TaskStatus.RUNNING and task.locked_until is not None and task.locked_until >= now
            stale = task.status in (TaskStatus.QUEUED, TaskStatus.FAILED) and task.attempt_count >= attempt_no
            if live or stale:
                return None
            dead = task.transition(TaskStatus.DEAD_LETTER, now, last_error=reason, locked_by=None, locked_until=None)
            self.tasks[task_id] = dead
            self._close_attempt(task_id, "abandoned")
            self._event(dead, TaskStatus.DEAD_LETTER)
            return dead

    def get_by_id(self, task_id: UUID) -> Task | None:
        return self.tasks.get(task_id)

    def find_by_idempotency_key(self, tenant_id: TenantId, key: str) -> Task | None:
        return next((t for t in self.tasks.values() if (t.tenant_id, t.idempotency_key) == (tenant_id, key)), None)

    def cancel(self, tenant_id: TenantId, task_id: UUID, *, now: datetime) -> Task | None:
        with self._lock:
            task = self.get(tenant_id, task_id)
            if task is None or task.status not in sources_of(TaskStatus.CANCELLED) - {TaskStatus.RUNNING}:
                return None
            done = task.transition(
                TaskStatus.CANCELLED,
                now,
                cancel_requested_at=task.cancel_requested_at or now,
                locked_by=None,
                locked_until=None,
            )
            self.tasks[task_id] = done
            self._event(done, TaskStatus.CANCELLED)
            return done

    def request_cancel(self, tenant_id: TenantId, task_id: UUID, *, now: datetime) -> Task | None:
        with self._lock:
            task = self.get(tenant_id, task_id)
            if task is None or task.status is not TaskStatus.RUNNING:
                return None
            asked = dataclasses.replace(task, cancel_requested_at=task.cancel_requested_at or now, updated_at=now)
            self.tasks[task_id] = asked
            return asked

    def list_tasks(
        self, tenant_id: TenantId, filters: TaskFilter, *, offset: int, limit: int
    ) -> tuple[list[Task], int]:
        matching = sorted(
            (
                t
                for t in self.tasks.values()
                if t.tenant_id == tenant_id and t.status in filters.statuses and t.type in filters.types
            ),
            key=lambda t: (t.created_at, t.id),
            reverse=True,
        )
        return matching[offset : offset + limit], len(matching)

    def attempts(self, tenant_id: TenantId, task_id: UUID) -> list[AttemptRecord] | None:
        task = self.get(tenant_id, task_id)
        if task is None:
            return None
        return [
            AttemptRecord(a.attempt_no, a.status, None, None, None, None, None, None, None, task.updated_at, None)
            for a in sorted(self.attempts_of(task_id), key=lambda a: a.attempt_no)
        ]

    def attempts_of(self, task_id: UUID) -> list[RecordedAttempt]:
        return [a for a in self.attempts_log if a.task_id == task_id]

    def artifacts(self, tenant_id: TenantId, task_id: UUID) -> list[ArtifactRecord] | None:
        task = self.get(tenant_id, task_id)
        if task is None:
            return None
        return [
            ArtifactRecord(uuid4(), kind, None, content, task.updated_at)
            for tid, kind, content in self.artifacts_log
            if tid == task_id
        ]

    def history(self, tenant_id: TenantId, task_id: UUID) -> list[EventRecord] | None:
        if self.get(tenant_id, task_id) is None:
            return None
        return [
            EventRecord(e.id, e.event_type, e.status.value, e.attempt_no, e.occurred_at)
            for e in self.events
            if e.task_id == task_id
        ]


class InMemoryApiKeyRepository:
    def __init__(self, tenants: InMemoryTenantRepository | None = None) -> None:
        self.keys: dict[UUID, tuple[TenantId, bytes, bool]] = {}
        self.tenants = tenants or InMemoryTenantRepository()

    def add(self, *, tenant_id: TenantId, name: str, key_hash: bytes, now: datetime) -> UUID:
        key_id = uuid4()
        self.keys[key_id] = (tenant_id, key_hash, False)
        return key_id

    def principal_for(self, key_hash: bytes) -> Principal | None:
        tenant = next((t for t, h, revoked in self.keys.values() if h == key_hash and not revoked), None)
        if tenant is None:
            return None
        plan = self.tenants.get(tenant)
        return Principal(tenant, plan.usage_key if plan else None)

    def revoke(self, key_id: UUID, *, now: datetime) -> bool:
        entry = self.keys.get(key_id)
        if entry is None or entry[2]:
            return False
        self.keys[key_id] = (entry[0], entry[1], True)
        return True


class InMemoryTenantRepository:
    def __init__(self) -> None:
        self.plans: dict[TenantId, TenantPlan] = {}

    def get(self, tenant_id: TenantId) -> TenantPlan | None:
        return self.plans.get(tenant_id)

    def save(self, plan: TenantPlan, *, now: datetime) -> None:
        self.plans[plan.tenant_id] = plan


class InMemoryUsagePlans:
    """API Gateway's usage plans: key id -> (value, the tiers whose plans hold it)."""

    def __init__(self) -> None:
        self.keys: dict[str, tuple[str, set[Tier]]] = {}

    def create_key(self, tenant_id: TenantId) -> tuple[str, str]:
        key_id, value = f"key-{uuid4().hex[:10]}", f"usage-{uuid4().hex}"
        self.keys[key_id] = (value, set())
        return key_id, value

    def attach(self, key_id: str, tier: Tier) -> None:
        if key_id not in self.keys:
            raise UsageKeyNotFoundError(key_id)
        self.keys[key_id] = (self.keys[key_id][0], {tier})


@dataclasses.dataclass(frozen=True, slots=True)
class SentMessage:
    task_id: UUID
    attempt_no: int
    delay_s: int


class InMemoryWorkQueue:
    def __init__(self) -> None:
        self.sent: list[SentMessage] = []
        self.extended: list[tuple[str, int]] = []

    def send(self, task_id: UUID, *, attempt_no: int, delay_s: int = 0) -> None:
        self.sent.append(SentMessage(task_id, attempt_no, delay_s))

    def extend_visibility(self, receipt_handle: str, seconds: int) -> None:
        self.extended.append((receipt_handle, seconds))


class InMemoryIdempotencyStore(BasePersistenceLayer):
    """The Powertools idempotency records in a dict, with the Postgres store's take-over rules."""

    def __init__(self) -> None:
        super().__init__()
        self.records: dict[str, DataRecord] = {}
        self._lock = threading.Lock()

    def _get_record(self, idempotency_key: str) -> DataRecord:
        try:
            return self.records[idempotency_key]
        except KeyError:
            raise IdempotencyItemNotFoundError from None

    def _put_record(self, data_record: DataRecord) -> None:
        now = time.time()
        with self._lock:
            old = self.records.get(data_record.idempotency_key)
            free = (
                old is None
                or (old.expiry_timestamp or 0) < now
                or (old._status == "INPROGRESS" and (old.in_progress_expiry_timestamp or 0) < now * 1000)
            )
            if free:
                self.records[data_record.idempotency_key] = data_record
                return
        assert old is not None
        self._validate_payload(data_payload=data_record, stored_data_record=old)
        raise IdempotencyItemAlreadyExistsError(old_data_record=old)

    def _update_record(self, data_record: DataRecord) -> None:
        with self._lock:
            self.records[data_record.idempotency_key] = data_record

    def _delete_record(self, data_record: DataRecord) -> None:
        with self._lock:
            self.records.pop(data_record.idempotency_key, None)


class InMemoryEventPublisher:
    """Records what it publishes; `reject` names event types it refuses (as a PutEvents partial failure would)."""

    def __init__(self, reject: set[str] | None = None) -> None:
        self.published: list[OutboxEvent] = []
        self.reject = reject or set()

    def publish(self, events: list[OutboxEvent]) -> set[UUID]:
        accepted = [e for e in events if e.event_type not in self.reject]
        self.published.extend(accepted)
        return {e.id for e in accepted}


class InMemoryScheduler:
    def __init__(self) -> None:
        self.schedules: dict[UUID, tuple[int, datetime]] = {}

    def schedule(self, task_id: UUID, *, attempt_no: int, at: datetime) -> None:
        self.schedules[task_id] = (attempt_no, at)

    def unschedule(self, task_id: UUID) -> None:
        self.schedules.pop(task_id, None)


class InMemoryRetention:
    """Retention over the in-memory repository (events and keys here are not kept, so there is nothing to prune)."""

    def __init__(self, tasks: InMemoryTaskRepository) -> None:
        self._tasks = tasks

    def prune_finished(self, *, cutoff: datetime, limit: int) -> int:
        old = [t.id for t in self._tasks.tasks.values() if t.terminal and t.updated_at < cutoff][:limit]
        for task_id in old:
            del self._tasks.tasks[task_id]
        return len(old)

    def prune_published(self, *, cutoff: datetime, limit: int) -> int:
        return 0

    def prune_expired_keys(self, *, now: datetime, limit: int) -> int:
        return 0

    def prune_expired_tickets(self, *, now: datetime, limit: int) -> int:
        return 0

    def prune_stale_connections(self, *, cutoff: datetime, limit: int) -> int:
        return 0


class InMemoryTicketStore:
    def __init__(self) -> None:
        self.tickets: dict[bytes, tuple[TenantId, datetime]] = {}

    def add(self, *, ticket_hash: bytes, tenant_id: TenantId, expires_at: datetime) -> None:
        self.tickets[ticket_hash] = (tenant_id, expires_at)

    def redeem(self, ticket_hash: bytes, *, now: datetime) -> TenantId | None:
        found = self.tickets.pop(ticket_hash, None)
        return found[0] if found is not None and found[1] > now else None


class InMemoryConnectionRegistry:
    def __init__(self) -> None:
        self.connections: dict[str, TenantId] = {}

    def add(self, connection_id: str, tenant_id: TenantId, *, now: datetime) -> None:
        self.connections[connection_id] = tenant_id

    def remove(self, connection_id: str) -> bool:
        return self.connections.pop(connection_id, None) is not None

    def of_tenant(self, tenant_id: TenantId) -> list[str]:
        return [c for c, t in self.connections.items() if t == tenant_id]


class InMemoryPusher:
    """Records what was pushed to which connection; connections in `gone` are closed (GoneException)."""

    def __init__(self, gone: set[str] | None = None, broken: set[str] | None = None) -> None:
        self.gone = set(gone or ())
        self.broken = set(broken or ())
        self.pushed: list[tuple[str, bytes]] = []

    def push(self, connection_id: str, message: bytes) -> None:
        if connection_id in self.gone:
            raise ConnectionGoneError(connection_id)
        if connection_id in self.broken:
            raise RuntimeError("the management API failed")
        self.pushed.append((connection_id, message))
