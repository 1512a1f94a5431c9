"""GET /api/v1/tasks/{id} and GET /api/v1/health."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.event_handler import APIGatewayRestResolver
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from aitasks import bootstrap
from aitasks.http import problems
from aitasks.http.context import tenant
from aitasks.http.models import TaskView

logger = Logger()
tracer = Tracer()
app = APIGatewayRestResolver(enable_validation=True)
problems.install(app)


@app.get("/api/v1/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/api/v1/tasks/<task_id>")
def get_task(task_id: UUID) -> dict[str, Any]:
    return TaskView.of(bootstrap.get_task()(tenant(app), task_id)).json_body()


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
