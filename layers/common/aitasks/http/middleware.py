"""Checks that run before a route: JSON bodies only."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aitasks.http.problems import unsupported_media_type

if TYPE_CHECKING:
    from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
    from aws_lambda_powertools.event_handler.middlewares import NextMiddleware


def require_json(app: APIGatewayRestResolver, next_middleware: NextMiddleware) -> Response[str]:
    """A request that carries a body must say it is JSON (415 otherwise). Powertools' request validation runs
    before middlewares, so problems.install makes the same check when validation fails first."""
    return unsupported_media_type(app) or next_middleware(app)
