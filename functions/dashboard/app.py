"""The dashboard: GET / (the page) and GET /assets/{name} without a key; POST /api/v1/websocket-tickets with one."""

from __future__ import annotations

from http import HTTPStatus
from pathlib import Path
from typing import Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from aitasks import bootstrap
from aitasks.http import problems, web
from aitasks.http.context import tenant
from aitasks.http.middleware import require_json
from aitasks.http.models import TicketView
from aitasks.http.openapi import responses

logger = Logger()
bootstrap.structured_logs(logger)
tracer = Tracer()
app = APIGatewayRestResolver(enable_validation=True)
app.use([require_json, bootstrap.database_deadline])
problems.install(app)
STATIC = Path(__file__).parent / "static"


def _file(found: tuple[str, str] | None) -> Response[str]:
    if found is None:
        return problems.problem(app, HTTPStatus.NOT_FOUND, "not-found", "no such file")
    content_type, text = found
    return Response(200, content_type, text, web.security_headers(bootstrap.websocket_url()))


@app.get("/", include_in_schema=False)
def page() -> Response[str]:
    # The page's links are relative to .../v1/: called as .../v1, it sends the browser to .../v1/ first.
    location = web.slash_redirect(app.current_event.request_context.path)
    if location:
        return Response(308, "text/plain", "", {"Location": location})
    return _file(web.page(STATIC))


@app.get("/assets/<name>", include_in_schema=False)
def asset(name: str) -> Response[str]:
    return _file(web.asset(STATIC, name))


@app.post(
    "/api/v1/websocket-tickets",
    operation_id="createWebSocketTicket",
    tags=["live updates"],
    summary="A single-use ticket (valid 60 s) that opens the live-updates WebSocket for the tenant",
    description="Connect to `url?ticket=<ticket>` within 60 s: the socket then receives the tenant's task events "
    "as they happen. The ticket opens one connection; the API key itself never goes into a URL.",
    responses=responses(201, TicketView, 401, 415, 429, 503, description="Created"),
)
def websocket_ticket() -> Response[TicketView]:
    ticket = bootstrap.issue_ticket()(tenant(app))
    return Response(
        201, "application/json", TicketView.of(ticket, bootstrap.websocket_url()), {"Cache-Control": "no-store"}
    )


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, clear_state=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
