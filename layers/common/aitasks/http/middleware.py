"""Checks that run before a route: JSON bodies only."""

from __future__ import annotations

from http import HTTPStatus
from typing import TYPE_CHECKING

from aitasks.http.problems import problem

if TYPE_CHECKING:
    from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
    from aws_lambda_powertools.event_handler.middlewares import NextMiddleware


def require_json(app: APIGatewayRestResolver, next_middleware: NextMiddleware) -> Response[str]:
    """A request that carries a body must say it is JSON (415 otherwise), before any validation runs."""
    event = app.current_event
    if event.body:
        content_type = (event.headers.get("content-type") or "").split(";")[0].strip().lower()
        if content_type != "application/json" and not content_type.endswith("+json"):
            return problem(
                app,
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                f"send the body as application/json, not {content_type or 'without a Content-Type'}",
            )
    return next_middleware(app)
