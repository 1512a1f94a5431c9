"""POST /api/v1/tasks: accept a task, store it with its events, wake an executor."""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.openapi.params import Header
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from aitasks import bootstrap
from aitasks.http import problems
from aitasks.http.context import task_location, tenant
from aitasks.http.models import CreateTaskRequest, TaskView

logger = Logger()
tracer = Tracer()
app = APIGatewayRestResolver(enable_validation=True)
problems.install(app)


@app.post("/api/v1/tasks")
def create_task(
    request: CreateTaskRequest,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)] = None,
) -> Response[dict[str, Any]]:
    task = bootstrap.create_task()(tenant(app), request.to_new_task(), idempotency_key)
    logger.append_keys(task_id=str(task.id))
    logger.info("task accepted", extra={"type": task.type, "prompt_length": len(request.payload.prompt)})
    return Response(202, "application/json", TaskView.of(task).json_body(), {"Location": task_location(task.id)})


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
