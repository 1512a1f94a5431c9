"""The work queue the operator commands send wake-ups to: the queue of the stack whose database they changed.

In order: a URL given (`--work-queue-url`, AITASKS_WORK_QUEUE_URL, WORK_QUEUE_URL); the local stack's, when the
database is the one `make run` wrote to .local/database_url (its stack's WorkQueueUrl output, read from MiniStack);
the WorkQueueUrl output of the stack `--stack` or AITASKS_STACK names (CloudFormation, your AWS credentials); else
none, and the sweeper sends the wake-ups.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aitasks.adapters.sqs import SqsWorkQueue
from aitasks.adapters.usage_plans import stack_outputs

if TYPE_CHECKING:
    from pathlib import Path

OUTPUT = "WorkQueueUrl"
# A wake-up is worth a few seconds at most: an unreachable queue fails fast, and the sweeper sends it later.
_TIMEOUTS: dict[str, Any] = {
    "connect_timeout": 2,
    "read_timeout": 5,
    "retries": {"max_attempts": 2, "mode": "standard"},
}
# sqs.<region>.amazonaws.com, <region>.queue.amazonaws.com (legacy), sqs.<region>.api.aws (dual-stack)
_REGION = re.compile(r"^(?:sqs\.)?([a-z]{2}(?:-[a-z]+)+-\d+)\.")


@dataclass(frozen=True, slots=True)
class QueueAddress:
    url: str
    source: str  # which queue it is, for the messages
    endpoint: str | None = None  # MiniStack's, for the local stack's queue


def locate(url: str | None, *, stack: str | None, database_url: str, local_dir: Path) -> QueueAddress | None:
    """Where to send wake-ups for work in `database_url`'s database; None when nothing says. Reading a stack's
    outputs may raise botocore's errors (or KeyError: the stack has no such output)."""
    if url:
        return QueueAddress(url, "the work queue given")
    local = _local_endpoint(database_url, local_dir)
    if local is not None:
        from aitasks_cli.local_stack import STACK

        return QueueAddress(
            stack_outputs(STACK, _local_client("cloudformation", local))[OUTPUT], "the local stack's work queue", local
        )
    if stack:
        return QueueAddress(stack_outputs(stack)[OUTPUT], f"the work queue of stack {stack}")
    return None


def open_queue(address: QueueAddress) -> SqsWorkQueue:
    """The queue, with a client that gives up within seconds, sent to the host in its URL (signed for the region the
    URL names, else your default region)."""
    if address.endpoint is not None:
        return SqsWorkQueue(address.url, _local_client("sqs", address.endpoint))
    import boto3
    from botocore.config import Config

    parts = urlsplit(address.url)
    found = _REGION.match(parts.hostname or "")
    region = found.group(1) if found else boto3.session.Session().region_name or "us-east-1"
    client = boto3.client(
        "sqs", region_name=region, endpoint_url=f"{parts.scheme}://{parts.netloc}", config=Config(**_TIMEOUTS)
    )
    return SqsWorkQueue(address.url, client)


def _local_client(service: str, endpoint: str) -> Any:
    """A client for MiniStack (its fixed local credentials), as quick to give up as the queue's."""
    import boto3
    from botocore.config import Config

    from aitasks_cli.local_stack import REGION

    session = boto3.session.Session(aws_access_key_id="test", aws_secret_access_key="test", region_name=REGION)
    return session.client(service, endpoint_url=endpoint, config=Config(**_TIMEOUTS))  # type: ignore[call-overload]


def _local_endpoint(database_url: str, local_dir: Path) -> str | None:
    """MiniStack's endpoint, when the database is the local stack's (and the stack wrote where its API is)."""
    saved, api = local_dir / "database_url", local_dir / "api_url"
    if not (saved.is_file() and api.is_file()) or saved.read_text().strip() != database_url.strip():
        return None
    parts = urlsplit(api.read_text().strip())
    return f"{parts.scheme}://{parts.netloc}"
