"""The executor: consumes the work queue (partial batch responses) and runs each named task to one outcome."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import ValidationError

from aitasks import bootstrap
from aitasks.application.ports import WakeUp

logger = Logger()
tracer = bootstrap.tracer()
metrics = Metrics()
processor = BatchProcessor(event_type=EventType.SQS)


def record_handler(record: SQSRecord, lambda_context: LambdaContext) -> None:
    try:
        wake = WakeUp.model_validate_json(record.body)
    except ValidationError:
        # It can never succeed: acknowledge it instead of letting it cycle to the DLQ.
        logger.error("malformed work message dropped", extra={"message_id": record.message_id})
        return
    logger.append_keys(task_id=str(wake.task_id), attempt=wake.attempt)
    report = bootstrap.run_task()(
        wake.task_id,
        invocation_id=f"{lambda_context.aws_request_id}/{record.message_id}",
        receipt_handle=record.receipt_handle,
    )
    if report is None:
        return
    outcome = report.outcome
    logger.info(
        "run ended",
        extra={
            "status": report.task.status,
            "attempt": report.attempt_no,
            "model": outcome.model,
            "error_code": outcome.error_code,
        },
    )
    with single_metric(name="Attempts", unit=MetricUnit.Count, value=1) as metric:
        metric.add_dimension(name="outcome", value=outcome.attempt_status)
    metrics.add_metric(name="TokensIn", unit=MetricUnit.Count, value=outcome.tokens_in or 0)
    metrics.add_metric(name="TokensOut", unit=MetricUnit.Count, value=outcome.tokens_out or 0)
    metrics.add_metric(name="CostUSD", unit=MetricUnit.NoUnit, value=float(outcome.cost or 0))
    metrics.add_metric(name="ModelLatency", unit=MetricUnit.Milliseconds, value=outcome.latency_ms or 0)
    metrics.add_metric(name="QueueToStartDelay", unit=MetricUnit.Milliseconds, value=report.queue_delay_ms)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    response = process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
    bootstrap.publish_events_soon()
    return response
