"""RFC 9457 problem responses: the one table that maps error types to HTTP, installed on every resolver."""

from __future__ import annotations

import functools
import json
import logging
import re
from http import HTTPStatus
from importlib import resources
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)

from aitasks.domain.errors import (
    BudgetExceededError,
    DependencyUnavailableError,
    IdempotencyKeyReusedError,
    IllegalTransitionError,
    InvalidTaskError,
    PayloadTooLargeError,
    RequestInProgressError,
    TaskNotFoundError,
    UnauthorizedError,
)

if TYPE_CHECKING:
    from aws_lambda_powertools.event_handler import APIGatewayRestResolver

PROBLEM_BASE = "https://aitasks.dev/problems/"
PROBLEM_JSON = "application/problem+json"

logger = logging.getLogger(__name__)


def _trace_id(app: APIGatewayRestResolver) -> str:
    try:
        return str(app.lambda_context.aws_request_id)
    except AttributeError:  # called without a Lambda context (a unit test invoking the resolver directly)
        return str(app.current_event.request_context.request_id or "")


def problem(
    app: APIGatewayRestResolver,
    status: HTTPStatus,
    slug: str,
    detail: str,
    *,
    errors: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
    extensions: dict[str, Any] | None = None,
) -> Response[str]:
    trace_id = _trace_id(app)
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + slug,
        "title": status.phrase,
        "status": int(status),
        "detail": detail,
        "instance": app.current_event.path,
        "traceId": trace_id,
    }
    if errors is not None:
        body["errors"] = errors
    body.update(extensions or {})
    return Response(
        status_code=int(status),
        content_type=PROBLEM_JSON,
        body=json.dumps(body),
        headers={"X-Trace-Id": trace_id, **(headers or {})},
    )


def unsupported_media_type(app: APIGatewayRestResolver) -> Response[str] | None:
    """A 415 problem when the request has a body that does not say it is JSON; None when it is fine."""
    event = app.current_event
    if not event.body:
        return None
    content_type = (event.headers.get("content-type") or "").split(";")[0].strip().lower()
    if content_type == "application/json" or content_type.endswith("+json"):
        return None
    detail = f"send the body as application/json, not {content_type or 'without a Content-Type'}"
    return problem(app, HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type", detail)


@functools.cache
def _route_table() -> list[tuple[re.Pattern[str], list[str]]]:
    """(path pattern, methods) of every route of the API, from the OpenAPI document the routes generated."""
    document = json.loads(resources.files("aitasks.http").joinpath("openapi.json").read_text())
    table = []
    for path, operations in document["paths"].items():
        pattern = re.sub(r"\\{[^/]+\\}", "[^/]+", re.escape(path))
        table.append((re.compile(f"^{pattern}$"), sorted(m.upper() for m in operations)))
    return table


def allowed_methods(path: str) -> list[str]:
    """The methods the API answers on `path`; empty when no route has that path."""
    return next((methods for pattern, methods in _route_table() if pattern.match(path)), [])


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    # Powertools reports ("body", "payload", "prompt"); clients want "payload.prompt".
    parts = [str(p) for p in loc]
    if parts and parts[0] in {"body", "query", "path", "header"}:
        parts = parts[1:] or parts
    return ".".join(parts)


def install(app: APIGatewayRestResolver) -> None:
    """Map every error the API can raise to a problem response; docs/api.md lists the problem types."""

    @app.exception_handler(RequestValidationError)
    def _invalid(exc: RequestValidationError) -> Response[str]:
        # Powertools validates before any middleware runs, so the media type is judged here first.
        wrong_type = unsupported_media_type(app)
        if wrong_type is not None:
            return wrong_type
        errors = list(exc.errors())
        if any(e.get("type") == "json_invalid" for e in errors):
            return problem(app, HTTPStatus.BAD_REQUEST, "malformed-json", "the request body is not valid JSON")
        fields = [{"field": _field(e.get("loc", ())), "message": str(e.get("msg", "invalid"))} for e in errors]
        return problem(app, HTTPStatus.UNPROCESSABLE_ENTITY, "validation", "the request is not valid", errors=fields)

    @app.exception_handler(RecursionError)
    def _too_deep(exc: RecursionError) -> Response[str]:
        # Only parsing a body nested thousands of levels deep recurses this far (the payload's own limit is 32).
        field = {"field": "body", "message": "JSON nested too deeply"}
        return problem(app, HTTPStatus.UNPROCESSABLE_ENTITY, "validation", "the request is not valid", errors=[field])

    @app.exception_handler(RequestUnsupportedContentType)
    def _media_type(exc: RequestUnsupportedContentType) -> Response[str]:
        wrong_type = unsupported_media_type(app)
        return wrong_type or problem(app, HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type", str(exc))

    @app.exception_handler(InvalidTaskError)
    def _invalid_task(exc: InvalidTaskError) -> Response[str]:
        fields = [{"field": field, "message": message} for field, message in exc.errors]
        return problem(app, HTTPStatus.UNPROCESSABLE_ENTITY, "validation", "the task is not valid", errors=fields)

    @app.exception_handler(PayloadTooLargeError)
    def _too_large(exc: PayloadTooLargeError) -> Response[str]:
        return problem(app, HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "too-large", str(exc))

    @app.exception_handler(BudgetExceededError)
    def _budget(exc: BudgetExceededError) -> Response[str]:
        money = {"budgetUsd": exc.budget, "spentUsd": exc.spent, "reservedUsd": exc.reserved}
        return problem(
            app,
            HTTPStatus.PAYMENT_REQUIRED,
            "budget-exceeded",
            str(exc),
            extensions={
                **{name: format(value, "f") for name, value in money.items()},
                "periodEnd": exc.period_end.isoformat().replace("+00:00", "Z"),
            },
        )

    @app.exception_handler(IdempotencyKeyReusedError)
    def _key_reused(exc: IdempotencyKeyReusedError) -> Response[str]:
        return problem(app, HTTPStatus.UNPROCESSABLE_ENTITY, "idempotency-key-reused", str(exc))

    @app.exception_handler(RequestInProgressError)
    def _in_progress(exc: RequestInProgressError) -> Response[str]:
        return problem(app, HTTPStatus.CONFLICT, "request-in-progress", str(exc), headers={"Retry-After": "1"})

    @app.exception_handler(TaskNotFoundError)
    def _not_found(exc: TaskNotFoundError) -> Response[str]:
        return problem(app, HTTPStatus.NOT_FOUND, "task-not-found", f"no task {exc.task_id}")

    @app.exception_handler(IllegalTransitionError)
    def _conflict(exc: IllegalTransitionError) -> Response[str]:
        return problem(
            app, HTTPStatus.CONFLICT, "invalid-state", f"the task is {exc.current}; it cannot become {exc.target}"
        )

    @app.exception_handler(UnauthorizedError)
    def _unauthorized(exc: UnauthorizedError) -> Response[str]:
        # The gateway's authorizer lets no request through without a tenant: one that arrives is a misconfiguration.
        logger.warning("a request came without the authorizer's tenant")
        return problem(app, HTTPStatus.UNAUTHORIZED, "unauthorized", str(exc))

    @app.exception_handler(DependencyUnavailableError)
    def _unavailable(exc: DependencyUnavailableError) -> Response[str]:
        logger.warning("dependency unavailable", extra={"dependency": exc.dependency}, exc_info=exc)
        return problem(
            app,
            HTTPStatus.SERVICE_UNAVAILABLE,
            "unavailable",
            f"the {exc.dependency} is unavailable; retry later",
            headers={"Retry-After": str(exc.retry_after_s)},
        )

    @app.not_found
    def _no_route(exc: Exception) -> Response[str]:
        allowed = allowed_methods(app.current_event.path)
        # A path that looks like a route with an allowed method came through the fallback only because the gateway
        # could not match it (odd characters in a path parameter): that is an unknown resource, not a wrong verb.
        if allowed and app.current_event.http_method not in allowed:
            return problem(
                app,
                HTTPStatus.METHOD_NOT_ALLOWED,
                "method-not-allowed",
                f"{app.current_event.http_method} is not allowed here; use {', '.join(allowed)}",
                headers={"Allow": ", ".join(allowed)},
            )
        return problem(app, HTTPStatus.NOT_FOUND, "not-found", "no such resource")

    @app.exception_handler(Exception)
    def _bug(exc: Exception) -> Response[str]:
        # Powertools parses form and multipart bodies before any of our code runs, and can fail on a malformed
        # one (a multipart type without its boundary): a body that is not JSON is the client's 415, not our 500.
        wrong_type = unsupported_media_type(app)
        if wrong_type is not None:
            return wrong_type
        logger.exception("unhandled error")
        return problem(app, HTTPStatus.INTERNAL_SERVER_ERROR, "internal", "an unexpected error occurred")
