"""Every minute: publish the outbox rows that handlers did not get to publish right away (crash, timeout)."""

from __future__ import annotations

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
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, int]:
    relay = bootstrap.relay_outbox()
    if relay is None:
        logger.warning("EVENT_BUS_NAME is not set: nothing to publish to")
        return {"published": 0}
    # Leave the function a margin to commit before its own timeout.
    published = relay(budget_s=max(1.0, context.get_remaining_time_in_millis() / 1000 - 10))
    backlog = relay.backlog()
    metrics.add_metric(name="EventsPublished", unit=MetricUnit.Count, value=published)
    metrics.add_metric(name="OutboxBacklog", unit=MetricUnit.Count, value=backlog)
    logger.info("outbox relayed", extra={"published": published, "backlog": backlog})
    return {"published": published, "backlog": backlog}
