"""Live updates for the dashboard: tickets that open a WebSocket, its connections, and the notifier that pushes
each task event to the open connections of the event's tenant, and of no other tenant."""

from __future__ import annotations

import dataclasses
import json
import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from aitasks.application.ports import ConnectionGoneError
from aitasks.application.tasks import utc_now
from aitasks.domain.apikey import hash_api_key, new_ticket
from aitasks.domain.errors import UnauthorizedError
from aitasks.domain.task import TenantId

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from datetime import datetime

    from aitasks.application.ports import ConnectionRegistry, MessagePusher, TicketStore

logger = logging.getLogger(__name__)

TICKET_TTL_S = 60


@dataclasses.dataclass(frozen=True, slots=True)
class Ticket:
    value: str
    expires_at: datetime


@dataclasses.dataclass(frozen=True, slots=True)
class IssueTicket:
    """A single-use ticket for the tenant's next WebSocket connection (the browser cannot send its key there)."""

    tickets: TicketStore
    ttl_s: int = TICKET_TTL_S
    clock: Callable[[], datetime] = utc_now

    def __call__(self, tenant_id: TenantId) -> Ticket:
        value, expires_at = new_ticket(), self.clock() + timedelta(seconds=self.ttl_s)
        self.tickets.add(ticket_hash=hash_api_key(value), tenant_id=tenant_id, expires_at=expires_at)
        return Ticket(value, expires_at)


@dataclasses.dataclass(frozen=True, slots=True)
class RedeemTicket:
    """$connect: the ticket's tenant, or UnauthorizedError. A ticket opens one connection only."""

    tickets: TicketStore
    clock: Callable[[], datetime] = utc_now

    def __call__(self, ticket: str | None) -> TenantId:
        tenant_id = self.tickets.redeem(hash_api_key(ticket), now=self.clock()) if ticket else None
        if tenant_id is None:
            raise UnauthorizedError("a valid, unused WebSocket ticket is required")
        return tenant_id


@dataclasses.dataclass(frozen=True, slots=True)
class Connect:
    connections: ConnectionRegistry
    clock: Callable[[], datetime] = utc_now

    def __call__(self, connection_id: str, tenant_id: TenantId) -> None:
        self.connections.add(connection_id, tenant_id, now=self.clock())


@dataclasses.dataclass(frozen=True, slots=True)
class Disconnect:
    connections: ConnectionRegistry

    def __call__(self, connection_id: str) -> None:
        self.connections.remove(connection_id)


@dataclasses.dataclass(frozen=True, slots=True)
class NotifyReport:
    sent: int
    gone: int
    failed: int


@dataclasses.dataclass(frozen=True, slots=True)
class Notify:
    """Push one task event to every open connection of the event's tenant; drop the connections that are gone.

    The recipients come from `detail.tenantId` and nothing else: a connection is registered with the tenant its
    ticket named, so a tenant never receives another tenant's events. A push that fails otherwise is logged
    and skipped (live updates are best effort; the page also polls when its socket is down).
    """

    connections: ConnectionRegistry
    pusher: MessagePusher

    def __call__(self, detail_type: str, detail: Mapping[str, Any]) -> NotifyReport:
        tenant = detail.get("tenantId")
        if not isinstance(tenant, str) or not tenant:
            logger.warning("event without a tenant dropped", extra={"detail_type": detail_type})
            return NotifyReport(0, 0, 0)
        message = json.dumps({"event": detail_type, "detail": dict(detail)}).encode()
        sent = gone = failed = 0
        for connection_id in self.connections.of_tenant(TenantId(tenant)):
            try:
                self.pusher.push(connection_id, message)
                sent += 1
            except ConnectionGoneError:
                self.connections.remove(connection_id)
                gone += 1
            except Exception:
                logger.warning("push failed", exc_info=True, extra={"connection_id": connection_id})
                failed += 1
        return NotifyReport(sent, gone, failed)
