"""Consumes the work queue's DLQ: a wake-up that kept failing. It is no verdict on a task (attempts in Postgres
catch poison tasks): a task whose run died is closed, and waiting work gets a new wake-up."""

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
bootstrap.structured_logs(logger)
processor = BatchProcessor(event_type=EventType.SQS)


def record_handler(record: SQSRecord) -> None:
    try:
        wake = WakeUp.model_validate_json(record.body)
    except ValidationError:
        logger.error("malformed message on the DLQ dropped", extra={"message_id": record.message_id})
        return
    task = bootstrap.rescue_wakeup()(wake)
    logger.warning(
        "a wake-up reached the DLQ",
        extra={
            "task_id": str(wake.task_id),
            "status": task.status if task else None,
            "receive_count": record.attributes.approximate_receive_count,
        },
    )


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    response = process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
    bootstrap.publish_events_soon()
    return response
