"""The executor: consumes the work queue (partial batch responses) and runs each named task to one outcome."""

from __future__ import annotations

from collections import Counter
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
# This invocation's attempts by outcome and its token and cost totals, published once per batch (dashboards sum
# them); latencies stay one value per run (their percentiles matter).
outcomes: Counter[str] = Counter()
totals: Counter[str] = Counter()


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
    outcomes[outcome.attempt_status] += 1
    totals.update(TokensIn=outcome.tokens_in or 0, TokensOut=outcome.tokens_out or 0, CostUSD=float(outcome.cost or 0))
    metrics.add_metric(name="ModelLatency", unit=MetricUnit.Milliseconds, value=outcome.latency_ms or 0)
    metrics.add_metric(name="QueueToStartDelay", unit=MetricUnit.Milliseconds, value=report.queue_delay_ms)


def publish_batch_metrics() -> None:
    for status, count in outcomes.items():
        with single_metric(name="Attempts", unit=MetricUnit.Count, value=count) as metric:
            metric.add_dimension(name="outcome", value=status)
    if outcomes:
        metrics.add_metric(name="TokensIn", unit=MetricUnit.Count, value=totals["TokensIn"])
        metrics.add_metric(name="TokensOut", unit=MetricUnit.Count, value=totals["TokensOut"])
        metrics.add_metric(name="CostUSD", unit=MetricUnit.NoUnit, value=totals["CostUSD"])
    outcomes.clear()
    totals.clear()


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        response = process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )
    finally:
        publish_batch_metrics()
    bootstrap.publish_events_soon()
    return response
