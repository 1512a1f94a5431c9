"""The executor: its SQS batch is a set of wake-ups; it claims the best due work for as many runs, runs them at once
and answers with the wake-ups it hands back (partial batch response)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from aws_lambda_powertools.utilities.data_classes import SQSEvent
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import ValidationError

from aitasks import bootstrap
from aitasks.application.executor import BatchReport
from aitasks.application.ports import Delivery, WakeUp

logger = Logger()
bootstrap.structured_logs(logger)
tracer = bootstrap.tracer()
metrics = Metrics()


def deliveries(event: SQSEvent) -> list[Delivery]:
    found = []
    for record in event.records:
        try:
            found.append(Delivery(record.message_id, record.receipt_handle, WakeUp.model_validate_json(record.body)))
        except ValidationError:
            # It can never succeed: acknowledged instead of cycling to the DLQ.
            logger.error("malformed work message dropped", extra={"message_id": record.message_id})
    return found


def publish_metrics(report: BatchReport) -> None:
    """Attempts by outcome and token and cost totals once per invocation (dashboards sum them); latencies one value
    per run (their percentiles matter)."""
    outcomes: Counter[str] = Counter()
    totals: Counter[str] = Counter()
    for run in report.runs:
        outcome = run.outcome
        logger.info(
            "run ended",
            extra={
                "task_id": str(run.task.id),
                "status": run.task.status,
                "attempt": run.attempt_no,
                "model": outcome.model,
                "error_code": outcome.error_code,
            },
        )
        outcomes[outcome.attempt_status] += 1
        totals.update(TokensIn=outcome.tokens_in or 0, TokensOut=outcome.tokens_out or 0)
        totals["CostUSD"] += float(outcome.cost or 0)
        metrics.add_metric(name="ModelLatency", unit=MetricUnit.Milliseconds, value=outcome.latency_ms or 0)
        metrics.add_metric(name="QueueToStartDelay", unit=MetricUnit.Milliseconds, value=run.queue_delay_ms)
    for status, count in outcomes.items():
        with single_metric(name="Attempts", unit=MetricUnit.Count, value=count) as metric:
            metric.add_dimension(name="outcome", value=status)
    for name, value in totals.items():
        metrics.add_metric(name=name, unit=MetricUnit.NoUnit if name == "CostUSD" else MetricUnit.Count, value=value)
    metrics.add_metric(name="Claimed", unit=MetricUnit.Count, value=report.claimed)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    report = bootstrap.execute()(
        deliveries(SQSEvent(event)),
        invocation_id=context.aws_request_id,
        remaining_s=lambda: context.get_remaining_time_in_millis() / 1000,
    )
    publish_metrics(report)
    bootstrap.publish_events_soon()
    return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in report.handed_back]}
