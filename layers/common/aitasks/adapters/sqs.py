"""The work queue on SQS: a message body is a WakeUp, naming a task and the attempt it was sent for."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aitasks.application.ports import WakeUp

if TYPE_CHECKING:
    from uuid import UUID

    from mypy_boto3_sqs import SQSClient


class SqsWorkQueue:
    def __init__(self, queue_url: str, client: SQSClient | Any = None) -> None:
        self._queue_url = queue_url
        if client is None:
            import boto3

            client = boto3.client("sqs")
        self._client = client

    def send(self, task_id: UUID, *, attempt_no: int, delay_s: int = 0) -> None:
        body = WakeUp(task_id=task_id, attempt=attempt_no).model_dump_json(by_alias=True)
        self._client.send_message(QueueUrl=self._queue_url, MessageBody=body, DelaySeconds=delay_s)

    def extend_visibility(self, receipt_handle: str, seconds: int) -> None:
        self._client.change_message_visibility(
            QueueUrl=self._queue_url, ReceiptHandle=receipt_handle, VisibilityTimeout=min(seconds, 43_200)
        )
