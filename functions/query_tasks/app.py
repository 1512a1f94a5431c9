"""GET /api/v1/tasks, /tasks/{id}, /tasks/{id}/attempts, /artifacts, /events; /usage; /health; /openapi.json."""

from __future__ import annotations

import json
from importlib import resources
from typing import Annotated, Any
from uuid import UUID

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.openapi.params import Query
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from aitasks import bootstrap
from aitasks.http import problems
from aitasks.http.context import STATUS_LIST, TYPE_LIST, task_filter, tenant
from aitasks.http.models import ArtifactView, AttemptView, EventView, TaskView, UsageView, dump
from aitasks.http.openapi import responses
from aitasks.http.paging import link_header

logger = Logger()
bootstrap.structured_logs(logger)
tracer = bootstrap.tracer()
app = APIGatewayRestResolver(enable_validation=True)
app.use([bootstrap.database_deadline])
problems.install(app)


@app.get(
    "/api/v1/health", summary="Liveness (no authentication)", security=[{}], responses=responses(200, dict[str, str])
)
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/api/v1/openapi.json", summary="This API's OpenAPI document", responses=responses(200, dict[str, Any], 401))
def openapi() -> dict[str, Any]:
    return json.loads(resources.files("aitasks.http").joinpath("openapi.json").read_text())  # type: ignore[no-any-return]


@app.get(
    "/api/v1/tasks",
    summary="List the tenant's tasks, newest first (X-Total-Count, Link)",
    responses=responses(200, list[TaskView], 401, 422, 429, 503),
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


@app.get("/api/v1/tasks/<task_id>", summary="One task", responses=responses(200, TaskView, 401, 404, 422, 429, 503))
def get_task(task_id: UUID) -> TaskView:
    return TaskView.of(bootstrap.get_task()(tenant(app), task_id))


@app.get(
    "/api/v1/tasks/<task_id>/attempts",
    summary="The task's attempts, in order",
    responses=responses(200, list[AttemptView], 401, 404, 422, 429, 503),
)
def get_attempts(task_id: UUID) -> list[AttemptView]:
    return [AttemptView.of(a) for a in bootstrap.get_attempts()(tenant(app), task_id)]


@app.get(
    "/api/v1/tasks/<task_id>/artifacts",
    summary="The task's outputs",
    responses=responses(200, list[ArtifactView], 401, 404, 422, 429, 503),
)
def get_artifacts(task_id: UUID) -> list[ArtifactView]:
    return [ArtifactView.of(a) for a in bootstrap.get_artifacts()(tenant(app), task_id)]


@app.get(
    "/api/v1/tasks/<task_id>/events",
    summary="The task's state history: the events it published, in order (kept 7 days after publication)",
    responses=responses(200, list[EventView], 401, 404, 422, 429, 503),
)
def get_events(task_id: UUID) -> list[EventView]:
    return [EventView.of(e) for e in bootstrap.get_history()(tenant(app), task_id)]


@app.get(
    "/api/v1/usage",
    summary="The tenant's month: budget, spent and held per model, concurrency, running and queued tasks",
    responses=responses(200, UsageView, 401, 429, 503),
)
def get_usage() -> UsageView:
    return UsageView.of(bootstrap.get_usage()(tenant(app)))


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, clear_state=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
