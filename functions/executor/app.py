"""The executor: consumes the work queue (partial batch responses) and runs each named task.

PLACEHOLDER run until the executor issue lands: see aitasks.application.tasks.RunTask.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import ValidationError

from aitasks import bootstrap
from aitasks.application.ports import WakeUp

logger = Logger()
tracer = Tracer()
processor = BatchProcessor(event_type=EventType.SQS)


def record_handler(record: SQSRecord, lambda_context: LambdaContext) -> None:
    try:
        wake = WakeUp.model_validate_json(record.body)
    except ValidationError:
        # It can never succeed: acknowledge it instead of letting it cycle to the DLQ.
        logger.error("malformed work message dropped", extra={"message_id": record.message_id})
        return
    logger.append_keys(task_id=str(wake.task_id), attempt=wake.attempt)
    bootstrap.run_task()(wake.task_id, invocation_id=f"{lambda_context.aws_request_id}/{record.message_id}")


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
