"""What handlers read from a request: the tenant (only ever from the authorizer), filters; and Location."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aitasks.application.ports import TaskFilter
from aitasks.domain.errors import InvalidTaskError, UnauthorizedError
from aitasks.domain.task import TaskStatus, TenantId
from aitasks.domain.task_types import REGISTRY

if TYPE_CHECKING:
    from uuid import UUID

    from aws_lambda_powertools.event_handler import APIGatewayRestResolver

TENANT_KEY = "tenantId"


def _comma_list(values: list[str]) -> str:
    one = "|".join(values)
    return f"^({one})(,({one}))*$"


# The query values the listing accepts, as patterns the OpenAPI document shows.
STATUS_LIST = _comma_list([s.value for s in TaskStatus])
TYPE_LIST = _comma_list(list(REGISTRY))


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


def task_filter(status: str | None, type_: str | None) -> TaskFilter:
    """The listing filter from `status=a,b` and `type=c` query values; an unknown value is a 422."""
    errors: list[tuple[str, str]] = []
    statuses: frozenset[TaskStatus] = frozenset(TaskStatus)
    types: frozenset[str] = frozenset(REGISTRY)
    if status:
        asked = {s.strip() for s in status.split(",") if s.strip()}
        unknown = sorted(asked - {s.value for s in TaskStatus})
        if unknown:
            errors.append(("status", f"unknown status {', '.join(unknown)}; one of {', '.join(TaskStatus)}"))
        statuses = frozenset(TaskStatus(s) for s in asked if s not in unknown)
    if type_:
        asked = {t.strip() for t in type_.split(",") if t.strip()}
        unknown = sorted(asked - set(REGISTRY))
        if unknown:
            errors.append(("type", f"unknown type {', '.join(unknown)}; one of {', '.join(sorted(REGISTRY))}"))
        types = frozenset(asked)
    if errors:
        raise InvalidTaskError(errors)
    return TaskFilter(statuses=statuses, types=types)
