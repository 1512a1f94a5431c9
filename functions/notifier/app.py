"""Every task event on the bus (an EventBridge rule): pushed to the open dashboard connections of its tenant."""

from __future__ import annotations

import dataclasses

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.data_classes import EventBridgeEvent, event_source
from aws_lambda_powertools.utilities.typing import LambdaContext

from aitasks import bootstrap

logger = Logger()
tracer = Tracer()


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@event_source(data_class=EventBridgeEvent)
def lambda_handler(event: EventBridgeEvent, context: LambdaContext) -> dict[str, int]:
    report = bootstrap.notify()(event.detail_type, event.detail)
    logger.info(
        "notified",
        extra={"event": event.detail_type, "task_id": event.detail.get("taskId"), **dataclasses.asdict(report)},
    )
    return dataclasses.asdict(report)
