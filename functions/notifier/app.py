"""Task events from the bus, in batches through the live-updates queue: each pushed to the open dashboard
connections of its tenant."""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes import EventBridgeEvent
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from aitasks import bootstrap

logger = Logger()
bootstrap.structured_logs(logger)
tracer = Tracer()
processor = BatchProcessor(event_type=EventType.SQS)


def record_handler(record: SQSRecord) -> None:
    try:
        event = EventBridgeEvent(json.loads(record.body))
        detail_type, detail = event.detail_type, event.detail
    except (ValueError, KeyError, TypeError):
        logger.error("malformed live-update message dropped", extra={"message_id": record.message_id})
        return
    report = bootstrap.notify()(detail_type, detail)
    logger.info("notified", extra={"event": detail_type, "task_id": detail.get("taskId"), "sent": report.sent})


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
