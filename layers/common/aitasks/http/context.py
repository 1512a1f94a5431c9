"""What a handler reads from the request: the tenant (only ever from the authorizer) and the Location header."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aitasks.domain.errors import UnauthorizedError
from aitasks.domain.task import TenantId

if TYPE_CHECKING:
    from uuid import UUID

    from aws_lambda_powertools.event_handler import APIGatewayRestResolver

TENANT_KEY = "tenantId"


def tenant(app: APIGatewayRestResolver) -> TenantId:
    """The tenant the Lambda authorizer put in requestContext.authorizer; nothing in the request can choose it."""
    value = app.current_event.request_context.authorizer.get(TENANT_KEY)
    if not isinstance(value, str) or not value:
        raise UnauthorizedError("no tenant in the authorizer context")
    return TenantId(value)


def task_location(task_id: UUID) -> str:
    """A relative reference: against POST .../api/v1/tasks it resolves to .../api/v1/tasks/{id}, stage included,
    whatever host and stage prefix the client called (API Gateway does not tell the handler its base path)."""
    return f"tasks/{task_id}"
