"""In-memory fakes of what we do not own: AWS services (SQS, EventBridge, Scheduler, API Gateway). Everything that
lives in PostgreSQL is tested against PostgreSQL, never against a Python twin; the model has its own fake provider
(adapters/fake_provider.py, which `AI_PROVIDER=fake` deploys too)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING
from uuid import UUID, uuid4

from aitasks.application.ports import ConnectionGoneError, UsageKeyNotFoundError

if TYPE_CHECKING:
    from datetime import datetime

    from aitasks.application.ports import OutboxEvent, WakeUp
    from aitasks.domain.task import TenantId
    from aitasks.domain.tenant import Tier


@dataclasses.dataclass(frozen=True, slots=True)
class SentMessage:
    wake: WakeUp
    delay_s: int

    @property
    def task_id(self) -> UUID | None:
        return self.wake.task_id

    @property
    def tenant_id(self) -> str | None:
        return self.wake.tenant_id


class InMemoryWorkQueue:
    """SQS: what was sent (with its delay), and the visibility changes asked of received messages."""

    def __init__(self) -> None:
        self.sent: list[SentMessage] = []
        self.visibility: list[tuple[str, int]] = []

    def send(self, wake: WakeUp, *, delay_s: int = 0) -> None:
        self.sent.append(SentMessage(wake, delay_s))

    def change_visibility(self, receipt_handle: str, seconds: int) -> None:
        self.visibility.append((receipt_handle, seconds))


class InMemoryScheduler:
    """EventBridge Scheduler: one schedule per task."""

    def __init__(self) -> None:
        self.schedules: dict[UUID, tuple[WakeUp, datetime]] = {}

    def schedule(self, task_id: UUID, wake: WakeUp, *, at: datetime) -> None:
        self.schedules[task_id] = (wake, at)

    def unschedule(self, task_id: UUID) -> None:
        self.schedules.pop(task_id, None)


class InMemoryEventPublisher:
    """EventBridge: records what it publishes; `reject` names event types it refuses (a PutEvents partial
    failure)."""

    def __init__(self, reject: set[str] | None = None) -> None:
        self.published: list[OutboxEvent] = []
        self.reject = reject or set()

    def publish(self, events: list[OutboxEvent]) -> set[UUID]:
        accepted = [e for e in events if e.event_type not in self.reject]
        self.published.extend(accepted)
        return {e.id for e in accepted}


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


class InMemoryPusher:
    """API Gateway's @connections: records what was pushed where; connections in `gone` are closed (410
    GoneException), those in `broken` fail otherwise."""

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
