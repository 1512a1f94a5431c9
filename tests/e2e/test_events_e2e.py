"""Through the local stack: a task scheduled past SQS's 15-minute-free range runs after its time (MiniStack fires
the EventBridge Scheduler schedule), and a subscriber's EventBridge rule receives its events, schema-valid."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin

import boto3
import pytest
import requests
from jsonschema import Draft202012Validator

from aitasks_cli.local_stack import STACK
from tests.e2e.conftest import ENDPOINT

if TYPE_CHECKING:
    from tests.e2e.conftest import Stack

SCHEMAS = Path(__file__).parents[2] / "docs" / "events"


def client(service: str) -> Any:
    return boto3.session.Session(
        aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1"
    ).client(service, endpoint_url=ENDPOINT)


@pytest.fixture
def subscriber(stack: Stack) -> Any:
    """An SQS queue subscribed with a rule to every task event on the stack's bus."""
    outputs = {
        o["OutputKey"]: o["OutputValue"]
        for o in client("cloudformation").describe_stacks(StackName=STACK)["Stacks"][0]["Outputs"]
    }
    sqs, events = client("sqs"), client("events")
    name = f"e2e-subscriber-{int(time.time())}"
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name=name, EventBusName=outputs["EventBusName"], EventPattern=json.dumps({"source": ["aitasks"]}))
    events.put_targets(Rule=name, EventBusName=outputs["EventBusName"], Targets=[{"Id": "q", "Arn": arn}])
    yield sqs, url
    events.remove_targets(Rule=name, EventBusName=outputs["EventBusName"], Ids=["q"])
    events.delete_rule(Name=name, EventBusName=outputs["EventBusName"])
    sqs.delete_queue(QueueUrl=url)


def test_a_task_scheduled_70_seconds_ahead_runs_after_its_time_and_announces_itself(stack: Stack, subscriber) -> None:
    sqs, queue_url = subscriber
    at = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=70)
    created = requests.post(
        f"{stack.url}/tasks",
        json={"type": "chat", "payload": {"prompt": "later"}, "scheduledAt": at.isoformat()},
        headers=stack.headers(),
        timeout=30,
    )
    assert created.status_code == 202, created.text
    location = urljoin(created.url, created.headers["Location"])
    task_id = created.json()["id"]
    # More than a minute ahead: woken by an EventBridge Scheduler schedule, not an SQS delay (local threshold 60 s).
    schedule = client("scheduler").get_schedule(Name=f"task-{task_id}", GroupName=f"{STACK}-wakeups")
    assert schedule["ScheduleExpression"] == f"at({at:%Y-%m-%dT%H:%M:%S})"

    deadline = time.monotonic() + 240
    while (task := requests.get(location, headers=stack.headers(), timeout=10).json())["status"] != "succeeded":
        assert time.monotonic() < deadline, task
        assert datetime.now(UTC) >= at or task["status"] == "queued", task  # nothing runs before its time
        time.sleep(2)
    [attempt] = requests.get(f"{location}/attempts", headers=stack.headers(), timeout=10).json()
    assert datetime.fromisoformat(attempt["startedAt"]) >= at

    wanted = {"task.created", "task.queued", "task.started", "task.succeeded"}
    seen: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + 120  # the scheduled relay runs every minute; handlers publish at once
    while not wanted <= set(seen) and time.monotonic() < deadline:
        for message in sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=2).get(
            "Messages", []
        ):
            event = json.loads(message["Body"])
            if event["detail"]["taskId"] == task_id:
                seen[event["detail-type"]] = event
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    assert wanted <= set(seen), sorted(seen)
    for detail_type, event in seen.items():
        assert event["source"] == "aitasks"
        schema = json.loads((SCHEMAS / f"{detail_type}.json").read_text())
        Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER).validate(event["detail"])
