"""POST /api/v1/tasks/{id}/cancel.

NOT IMPLEMENTED YET: cancellation comes with the REST API issue. Until then the route answers a 501 problem.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from aitasks.http import problems

logger = Logger()
tracer = Tracer()
app = APIGatewayRestResolver(enable_validation=True)
problems.install(app)


@app.post("/api/v1/tasks/<task_id>/cancel")
def cancel_task(task_id: str) -> Response[str]:
    return problems.problem(app, HTTPStatus.NOT_IMPLEMENTED, "not-implemented", "cancellation is not available yet")


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
