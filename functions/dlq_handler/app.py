"""Consumes the work queue's DLQ: a message that kept failing means its task is dead (reason `dlq`)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import ValidationError

from aitasks import bootstrap
from aitasks.application.ports import WakeUp

logger = Logger()
processor = BatchProcessor(event_type=EventType.SQS)


def record_handler(record: SQSRecord) -> None:
    try:
        wake = WakeUp.model_validate_json(record.body)
    except ValidationError:
        logger.error("malformed message on the DLQ dropped", extra={"message_id": record.message_id})
        return
    receive_count = record.attributes.approximate_receive_count
    task = bootstrap.dead_letter_task()(
        wake.task_id, attempt_no=wake.attempt, receive_count=int(receive_count) if receive_count else None
    )
    logger.info("dead-lettered" if task else "finished, or a stale message", extra={"task_id": str(wake.task_id)})


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    response = process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
    bootstrap.publish_events_soon()
    return response
