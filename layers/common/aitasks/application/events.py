"""Publishing the outbox: every state change is announced at least once (never zero times)."""

from __future__ import annotations

import dataclasses
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aitasks.application.ports import EventPublisher, Outbox, OutboxEvent

logger = logging.getLogger(__name__)

SOURCE = "aitasks"
MAX_ENTRIES_PER_PUT = 10  # EventBridge PutEvents takes at most 10 entries


def detail(event: OutboxEvent) -> dict[str, Any]:
    """The event's detail, as docs/events/<detail-type>.json describes it."""
    return {
        "eventId": str(event.id),
        "seq": event.seq,
        "taskId": str(event.task_id),
        "tenantId": event.tenant_id,
        "type": event.payload.get("type"),
        "status": event.payload.get("status"),
        "attemptNo": event.payload.get("attemptNo", 0),
        "occurredAt": event.occurred_at.isoformat().replace("+00:00", "Z"),
    }


@dataclasses.dataclass(frozen=True, slots=True)
class RelayOutbox:
    """Publish unpublished outbox rows in claimed batches until none are left or the time budget is spent.

    A crash between publishing and marking republishes those rows next time: at least once, and subscribers drop
    duplicates by eventId. Relays may run side by side: each batch is claimed with FOR UPDATE SKIP LOCKED.
    """

    outbox: Outbox
    publisher: EventPublisher
    batch_size: int = 100

    def __call__(self, *, budget_s: float = 10.0, max_batches: int | None = None) -> int:
        deadline = time.monotonic() + budget_s
        published, batches = 0, 0
        while time.monotonic() < deadline and (max_batches is None or batches < max_batches):
            marked = self.outbox.publish_pending(self.batch_size, self.publisher.publish)
            published += marked
            batches += 1
            if marked < self.batch_size:
                break
        return published

    def backlog(self, *, older_than_s: int = 120) -> int:
        """Events older than `older_than_s` still unpublished: more than zero for long means the relay is failing."""
        return self.outbox.backlog(before=datetime.now(UTC) - timedelta(seconds=older_than_s))
