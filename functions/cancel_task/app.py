"""Commands on a task: POST /api/v1/tasks/{id}/cancel and POST /api/v1/tasks/{id}/retry."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from aitasks import bootstrap
from aitasks.http import problems
from aitasks.http.context import tenant
from aitasks.http.middleware import require_json
from aitasks.http.models import TaskView
from aitasks.http.openapi import responses

logger = Logger()
bootstrap.structured_logs(logger)
tracer = bootstrap.tracer()
app = APIGatewayRestResolver(enable_validation=True)
app.use([require_json, bootstrap.database_deadline])
problems.install(app)


@app.post(
    "/api/v1/tasks/<task_id>/cancel",
    operation_id="cancelTask",
    tags=["tasks"],
    summary="Cancel a task (a running one is asked to stop)",
    description="A task that is not running is cancelled at once; a running one gets `cancelRequested: true` and "
    "its executor ends the run. Cancelling a cancelled task returns it; a succeeded or dead-lettered one is 409.",
    responses=responses(202, TaskView, 401, 404, 409, 415, 422, 429, 503, description="Accepted"),
)
def cancel_task(task_id: UUID) -> Response[TaskView]:
    tenant_id = tenant(app)
    logger.append_keys(tenant_id=tenant_id, task_id=str(task_id))
    task = bootstrap.cancel_task()(tenant_id, task_id)
    bootstrap.publish_events_soon()
    logger.info("cancel requested", extra={"status": task.status})
    return Response(202, "application/json", TaskView.of(task))


@app.post(
    "/api/v1/tasks/<task_id>/retry",
    operation_id="retryTask",
    tags=["tasks"],
    summary="Retry a dead-lettered task with a new attempt budget (its history is kept)",
    description="Queues a task in `dead_letter` again with a new attempt budget; its attempts and events so "
    "far are kept. A task in any other status is 409.",
    responses=responses(202, TaskView, 401, 404, 409, 415, 422, 429, 503, description="Accepted"),
)
def retry_task(task_id: UUID) -> Response[TaskView]:
    tenant_id = tenant(app)
    logger.append_keys(tenant_id=tenant_id, task_id=str(task_id))
    task = bootstrap.redrive_task()(tenant_id, task_id)
    bootstrap.publish_events_soon()
    logger.info("redriven", extra={"redrive_count": task.redrive_count})
    return Response(202, "application/json", TaskView.of(task))


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, clear_state=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
