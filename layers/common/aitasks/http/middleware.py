"""Middlewares: JSON bodies only (before a route); ETags and 304s for conditional GETs (after it)."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.event_handler import Response

from aitasks.http.problems import unsupported_media_type

if TYPE_CHECKING:
    from aws_lambda_powertools.event_handler import APIGatewayRestResolver
    from aws_lambda_powertools.event_handler.middlewares import NextMiddleware


def require_json(app: APIGatewayRestResolver, next_middleware: NextMiddleware) -> Response[str]:
    """A request that carries a body must say it is JSON (415 otherwise). Powertools' request validation runs
    before middlewares, so problems.install makes the same check when validation fails first."""
    return unsupported_media_type(app) or next_middleware(app)


def conditional_get(app: APIGatewayRestResolver, next_middleware: NextMiddleware) -> Response[Any]:
    """A 200 gets an ETag, a hash of the exact body sent; a request whose If-None-Match names it gets a 304 with no
    body instead. A route middleware runs outside Powertools' response validation, so the 304 is never validated
    against the route's model, and the tag is made from the body as validated and serialised."""
    response = next_middleware(app)
    if response.status_code != 200:
        return response
    body = response.body if isinstance(response.body, str) else json.dumps(response.body, separators=(",", ":"))
    tag = f'"{hashlib.sha256(body.encode()).hexdigest()[:32]}"'
    # no-cache: a client may keep the body, but asks again (with If-None-Match) before it uses it.
    headers = {"ETag": tag, "Cache-Control": "no-cache"}
    if _matches(app.current_event.headers.get("If-None-Match"), tag):
        return Response(304, None, "", headers)  # "": an emulator (MiniStack) fails on a null body
    response.body = body
    response.headers.update(headers)
    return response


def _matches(if_none_match: str | None, tag: str) -> bool:
    """RFC 9110 13.1.2: `*` or a list of tags, compared weakly (a W/ prefix does not matter)."""
    if not if_none_match:
        return False
    sent = [candidate.strip().removeprefix("W/") for candidate in if_none_match.split(",")]
    return "*" in sent or tag in sent
