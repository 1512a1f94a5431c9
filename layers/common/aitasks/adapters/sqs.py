"""The work queue on SQS: a message body is a WakeUp; its group is the tenant (SQS fair queues)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

    from aitasks.application.ports import WakeUp

# The group of a wake-up that names no tenant.
DEFAULT_GROUP = "aitasks"


class SqsWorkQueue:
    def __init__(self, queue_url: str, client: SQSClient | Any = None) -> None:
        self._queue_url = queue_url
        if client is None:
            import boto3

            client = boto3.client("sqs")
        self._client = client

    def send(self, wake: WakeUp, *, delay_s: int = 0) -> None:
        # On a standard queue a message group makes it a fair queue: SQS keeps the dwell time of a tenant with few
        # messages low while another has a backlog (the executor still picks the work; this only orders wake-ups).
        self._client.send_message(
            QueueUrl=self._queue_url,
            MessageBody=wake.body(),
            DelaySeconds=delay_s,
            MessageGroupId=wake.tenant_id or DEFAULT_GROUP,
        )

    def change_visibility(self, receipt_handle: str, seconds: int) -> None:
        self._client.change_message_visibility(
            QueueUrl=self._queue_url, ReceiptHandle=receipt_handle, VisibilityTimeout=max(0, min(seconds, 43_200))
        )
