"""GET /api/v1/tasks, /tasks/{id}, /tasks/{id}/attempts, /artifacts, /events; /usage; /health; /openapi.json, /docs."""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Annotated, Any
from uuid import UUID

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.openapi.params import Header, Query
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from aitasks import bootstrap
from aitasks.http import problems, web
from aitasks.http.context import STATUS_LIST, TYPE_LIST, task_filter, tenant
from aitasks.http.middleware import conditional_get
from aitasks.http.models import ArtifactView, AttemptView, EventView, TaskView, UsageView, dump
from aitasks.http.openapi import IF_NONE_MATCH, PAGE_HEADERS, responses
from aitasks.http.paging import link_header

logger = Logger()
bootstrap.structured_logs(logger)
tracer = bootstrap.tracer()
app = APIGatewayRestResolver(enable_validation=True)
app.use([bootstrap.database_deadline])
problems.install(app)


@app.get(
    "/api/v1/health",
    operation_id="getHealth",
    tags=["meta"],
    summary="Liveness (no authentication)",
    description="Answers 200 while the function runs; it does not touch the database.",
    security=[{}],
    responses=responses(200, dict[str, str]),
)
def health() -> dict[str, str]:
    return {"status": "ok"}


@functools.cache
def _document() -> dict[str, Any]:
    """The checked-in document, read and parsed once per environment (it changes only with a deploy)."""
    return json.loads(resources.files("aitasks.http").joinpath("openapi.json").read_text())  # type: ignore[no-any-return]


@app.get(
    "/openapi.json",
    operation_id="getOpenApiDocument",
    tags=["meta"],
    summary="This API's OpenAPI document (no authentication)",
    description="The OpenAPI 3.1 document of every route of the API, as docs/openapi.json; Swagger UI over it is "
    "at `/docs`. With an `ETag`: send it back in `If-None-Match` for a 304.",
    security=[{}],
    responses=responses(200, dict[str, Any], etag=True),
    middlewares=[conditional_get],
)
def openapi() -> dict[str, Any]:
    return _document()


@app.get(
    "/api/v1/openapi.json",
    operation_id="getOpenApiDocumentWithKey",
    tags=["meta"],
    summary="The same OpenAPI document, under the API's prefix and behind the key",
    description="Kept for clients that read it here; `/openapi.json` serves the same document without a key.",
    deprecated=True,
    responses=responses(200, dict[str, Any], 401, etag=True),
    middlewares=[conditional_get],
)
def openapi_with_key() -> dict[str, Any]:
    return _document()


@app.get("/docs", include_in_schema=False, middlewares=[conditional_get])
def docs() -> Response[str]:
    page, headers = web.api_docs(_document())
    return Response(200, "text/html; charset=utf-8", page, headers)


@app.get(
    "/api/v1/tasks",
    operation_id="listTasks",
    tags=["tasks"],
    summary="List the tenant's tasks, newest first (X-Total-Count, Link)",
    description="A page of the tenant's tasks, filtered by status and type. `X-Total-Count` counts every match; "
    "`Link` has `next` and `prev`. An item's payload over 16 KiB is null (GET the task for it).",
    responses=responses(200, list[TaskView], 401, 422, 429, 503, headers=PAGE_HEADERS),
)
def list_tasks(
    status: Annotated[str | None, Query(description="comma-separated statuses", pattern=STATUS_LIST)] = None,
    type: Annotated[str | None, Query(description="comma-separated task types", pattern=TYPE_LIST)] = None,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    page_size: Annotated[int, Query(alias="pageSize", ge=1, le=100)] = 20,
) -> Response[list[TaskView]]:
    found = bootstrap.list_tasks()(tenant(app), task_filter(status, type), page=page, page_size=page_size)
    headers = {"X-Total-Count": str(found.total)}
    link = link_header(found, app.current_event.query_string_parameters or {})
    if link:
        headers["Link"] = link
    return Response(200, "application/json", dump([TaskView.of(t, in_list=True) for t in found.tasks]), headers)


@app.get(
    "/api/v1/tasks/<task_id>",
    operation_id="getTask",
    tags=["tasks"],
    summary="One task",
    description="The task as it is now: status, why it waits, attempts so far, tokens and cost. With an `ETag`: "
    "poll with `If-None-Match` and an unchanged task answers 304 with no body.",
    responses=responses(200, TaskView, 401, 404, 422, 429, 503, etag=True),
    middlewares=[conditional_get],
)
def get_task(
    task_id: UUID,
    # Declared for the document; conditional_get answers it once the task's body is made.
    if_none_match: Annotated[str | None, Header(alias="If-None-Match", description=IF_NONE_MATCH)] = None,
) -> TaskView:
    return TaskView.of(bootstrap.get_task()(tenant(app), task_id))


@app.get(
    "/api/v1/tasks/<task_id>/attempts",
    operation_id="listTaskAttempts",
    tags=["tasks"],
    summary="The task's attempts, in order",
    description="One entry per model call: its model, tokens, cost, latency and, when it failed, its error.",
    responses=responses(200, list[AttemptView], 401, 404, 422, 429, 503),
)
def get_attempts(task_id: UUID) -> list[AttemptView]:
    return [AttemptView.of(a) for a in bootstrap.get_attempts()(tenant(app), task_id)]


@app.get(
    "/api/v1/tasks/<task_id>/artifacts",
    operation_id="listTaskArtifacts",
    tags=["tasks"],
    summary="The task's outputs",
    description="What the task produced, oldest first: text or JSON content, or a file or link by its URI.",
    responses=responses(200, list[ArtifactView], 401, 404, 422, 429, 503),
)
def get_artifacts(task_id: UUID) -> list[ArtifactView]:
    return [ArtifactView.of(a) for a in bootstrap.get_artifacts()(tenant(app), task_id)]


@app.get(
    "/api/v1/tasks/<task_id>/events",
    operation_id="listTaskEvents",
    tags=["tasks"],
    summary="The task's state history: the events it published, in order (kept 7 days after publication)",
    description="The task's domain events (task.created, task.queued, task.started, ...) ordered by `seq`, as "
    "EventBridge subscribers and the live-updates WebSocket receive them.",
    responses=responses(200, list[EventView], 401, 404, 422, 429, 503),
)
def get_events(task_id: UUID) -> list[EventView]:
    return [EventView.of(e) for e in bootstrap.get_history()(tenant(app), task_id)]


@app.get(
    "/api/v1/usage",
    operation_id="getUsage",
    tags=["usage"],
    summary="The tenant's month: budget, spent and held per model, concurrency, running and queued tasks",
    description="Spent is what ended attempts cost this calendar month (UTC); held is what running attempts may "
    "cost at most. A task whose worst case does not fit the budget waits (`waitingFor: budget`).",
    responses=responses(200, UsageView, 401, 429, 503),
)
def get_usage() -> UsageView:
    return UsageView.of(bootstrap.get_usage()(tenant(app)))


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, clear_state=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
