"""Publishing task events to the stack's EventBridge bus."""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any

from aitasks.application.events import MAX_ENTRIES_PER_PUT, SOURCE, detail

if TYPE_CHECKING:
    from uuid import UUID

    from aitasks.application.ports import OutboxEvent

logger = logging.getLogger(__name__)


class EventBridgePublisher:
    """PutEvents in chunks of 10; entries that fail (FailedEntryCount) are retried alone, a few times, and the
    ones still failing are left unpublished for the next relay run."""

    def __init__(
        self, bus_name: str, client: Any = None, *, tries: int = 3, backoff_s: float = 0.2, timeout_s: float = 5
    ) -> None:
        self._bus = bus_name
        if client is None:
            import boto3
            from botocore.config import Config

            # Our own tries count the attempts: botocore's retries are off.
            config = Config(
                connect_timeout=min(2, timeout_s),
                read_timeout=timeout_s,
                retries={"max_attempts": 1, "mode": "standard"},
            )
            client = boto3.client("events", config=config)
        self._client = client
        self._tries = tries
        self._backoff_s = backoff_s

    def publish(self, events: list[OutboxEvent]) -> set[UUID]:
        published: set[UUID] = set()
        for start in range(0, len(events), MAX_ENTRIES_PER_PUT):
            published |= self._put(events[start : start + MAX_ENTRIES_PER_PUT])
        return published

    def _put(self, chunk: list[OutboxEvent]) -> set[UUID]:
        pending, published = list(chunk), set()
        for attempt in range(self._tries):
            if attempt:
                time.sleep(self._backoff_s * 2 ** (attempt - 1))
            try:
                response = self._client.put_events(Entries=[self._entry(e) for e in pending])
            except Exception:
                logger.warning("PutEvents failed", exc_info=True, extra={"entries": len(pending)})
                continue
            failed = []
            for event, result in zip(pending, response["Entries"], strict=True):
                if result.get("EventId") and not result.get("ErrorCode"):
                    published.add(event.id)
                else:
                    failed.append(event)
            if response.get("FailedEntryCount", 0) and failed:
                logger.warning("PutEvents rejected entries", extra={"failed": len(failed)})
            pending = failed
            if not pending:
                break
        return published

    def _entry(self, event: OutboxEvent) -> dict[str, Any]:
        return {
            "Source": SOURCE,
            "DetailType": event.event_type,
            "Detail": json.dumps(detail(event)),
            "EventBusName": self._bus,
            "Time": event.occurred_at,
            "Resources": [],
        }
