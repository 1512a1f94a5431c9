"""Every minute: free expired leases (and again every few seconds of the minute), re-send lost wake-ups, prune when
retention is on."""

from __future__ import annotations

import dataclasses
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from aitasks import bootstrap

logger = Logger()
bootstrap.structured_logs(logger)
tracer = bootstrap.tracer()
metrics = Metrics()


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    report = bootstrap.sweep()(remaining_s=lambda: context.get_remaining_time_in_millis() / 1000)
    metrics.add_metric(name="LeasesFreed", unit=MetricUnit.Count, value=report.leases_freed)
    metrics.add_metric(name="WakeUpsResent", unit=MetricUnit.Count, value=report.redispatched)
    bootstrap.publish_events_soon()
    logger.info("swept", extra=dataclasses.asdict(report))
    return dataclasses.asdict(report)
