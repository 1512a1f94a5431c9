"""POST /api/v1/tasks: accept a task, store it with its events, wake an executor. Idempotency-Key aware."""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.openapi.params import Header
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from aws_lambda_powertools.utilities.typing import LambdaContext

from aitasks import bootstrap
from aitasks.domain.errors import InvalidTaskError
from aitasks.domain.task_types import json_problems
from aitasks.http import problems
from aitasks.http.context import task_location, tenant
from aitasks.http.middleware import require_json
from aitasks.http.models import CreateTaskRequest, TaskView
from aitasks.http.openapi import LOCATION, responses

logger = Logger()
bootstrap.structured_logs(logger)
tracer = bootstrap.tracer()
app = APIGatewayRestResolver(enable_validation=True)
app.use([require_json, bootstrap.database_deadline])
problems.install(app)


@app.post(
    "/api/v1/tasks",
    operation_id="createTask",
    tags=["tasks"],
    summary="Submit a task",
    description="Stores the task and queues it (now, or at `scheduledAt`); answers 202 with the task and its "
    "`Location`. Send an `Idempotency-Key` to make retries safe: the same key with the same body answers the first "
    "response again (`Idempotent-Replayed: true`), with another body 422, while the first is in flight 409.",
    responses=responses(
        202, TaskView, 400, 401, 409, 413, 415, 422, 429, 503, description="Accepted", headers=LOCATION
    ),
)
def create_task(
    request: CreateTaskRequest,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=255,
            description="any unique string (a UUID); kept 24 hours per tenant",
            examples=["3f1c9a4e-6d2b-4c8f-9e0a-5b7d1c2e4f60"],
        ),
    ] = None,
) -> Response[TaskView]:
    tenant_id = tenant(app)
    logger.append_keys(tenant_id=tenant_id)
    # The body as sent: pydantic would have replaced a lone surrogate in a key without a word.
    bad_text = json_problems(app.current_event.json_body, "")
    if bad_text:
        raise InvalidTaskError(bad_text)

    def create() -> dict[str, Any]:
        return TaskView.of(bootstrap.create_task()(tenant_id, request.to_new_task(), idempotency_key)).json_body()

    body, replayed = bootstrap.idempotently(
        create,
        scope="create_task",
        tenant_id=tenant_id,
        key=idempotency_key,
        payload=app.current_event.json_body,
        lambda_context=app.lambda_context,
    )
    bootstrap.publish_events_soon()
    if not replayed:
        with single_metric(name="TasksCreated", unit=MetricUnit.Count, value=1) as metric:
            metric.add_dimension(name="type", value=request.type)
    logger.info(
        "task accepted",
        extra={"task_id": body["id"], "replayed": replayed, "prompt_length": len(request.payload.prompt)},
    )
    headers = {"Location": task_location(body["id"])}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return Response(202, "application/json", TaskView.model_validate(body), headers)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, clear_state=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
