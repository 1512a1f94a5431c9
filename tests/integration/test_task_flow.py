"""Create -> SQS -> executor through the real handlers, on real PostgreSQL and moto's SQS."""

from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING

import boto3
import pytest
from moto import mock_aws

from aitasks import bootstrap
from aitasks.adapters.postgres import ConnectionProvider, connect, database_url_from_secret
from aitasks.adapters.sqs import SqsWorkQueue
from aitasks.domain.errors import DependencyUnavailableError
from tests.conftest import LambdaContext, load_handler, rest_event, sqs_event

if TYPE_CHECKING:
    from collections.abc import Iterator

BODY = {"type": "summarize", "payload": {"prompt": "Summarise", "context": "a long text"}, "priority": 1}


@pytest.fixture
def queue_url(wired, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        url = sqs.create_queue(QueueName="work")["QueueUrl"]
        monkeypatch.setattr(bootstrap, "work_queue", lambda: SqsWorkQueue(url, sqs))
        yield url


def receive_all(url: str) -> list[str]:
    return [m["Body"] for m in receive(url)]


def receive(url: str) -> list[dict]:
    sqs = boto3.client("sqs", region_name="us-east-1")
    answer = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, MessageSystemAttributeNames=["All"])
    return answer.get("Messages", [])


def test_a_created_task_is_stored_queued_and_run_once_despite_redelivery(queue_url, db) -> None:
    response = load_handler("create_task").lambda_handler(
        rest_event("POST", "/api/v1/tasks", body=BODY), LambdaContext()
    )
    assert response["statusCode"] == 202
    created = json.loads(response["body"])
    task_id = created["id"]
    [received] = receive(queue_url)
    message = received["Body"]
    # a wake-up for the tenant's due work, naming the task; its message group is the tenant (SQS fair queues)
    assert json.loads(message) == {"tenantId": "tenant-a", "taskId": task_id, "at": json.loads(message)["at"]}
    assert received["Attributes"]["MessageGroupId"] == "tenant-a"

    # The same message delivered to four executors at once: exactly one runs it.
    results: list[dict] = []
    barrier = threading.Barrier(4)

    def deliver(i: int) -> None:
        barrier.wait()
        handler = load_handler("executor", environment=f"-env{i}").lambda_handler
        results.append(handler(sqs_event(message), LambdaContext(aws_request_id=f"req-{i}")))

    threads = [threading.Thread(target=deliver, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [{"batchItemFailures": []}] * 4

    with connect_to(db) as conn:
        task = conn.execute("SELECT status, attempt_count FROM tasks WHERE id = %s", (task_id,)).fetchone()
        attempts = conn.execute(
            "SELECT attempt_no, status FROM task_attempts WHERE task_id = %s", (task_id,)
        ).fetchall()
        events = [
            r["event_type"]
            for r in conn.execute(
                "SELECT event_type FROM outbox_messages WHERE task_id = %s ORDER BY occurred_at", (task_id,)
            )
        ]
    assert task == {"status": "succeeded", "attempt_count": 1}
    assert attempts == [{"attempt_no": 1, "status": "succeeded"}]
    assert sorted(events) == sorted(["task.created", "task.queued", "task.started", "task.succeeded"])

    got = load_handler("query_tasks").lambda_handler(rest_event("GET", f"/api/v1/tasks/{task_id}"), LambdaContext())
    assert (got["statusCode"], json.loads(got["body"])["status"]) == (200, "succeeded")


def test_a_scheduled_task_is_sent_with_a_delay(queue_url) -> None:
    from datetime import UTC, datetime, timedelta

    at = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    response = load_handler("create_task").lambda_handler(
        rest_event("POST", "/api/v1/tasks", body={**BODY, "scheduledAt": at}), LambdaContext()
    )
    assert response["statusCode"] == 202
    assert receive_all(queue_url) == []  # delayed: not visible yet


def connect_to(db: ConnectionProvider):
    return connect(db._url())


def test_a_broken_connection_is_replaced_on_next_use(db: ConnectionProvider) -> None:
    first = db()
    pid = first.execute("SELECT pg_backend_pid() AS pid").fetchone()["pid"]
    with connect_to(db) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    with pytest.raises(Exception):  # noqa: B017 - the first use after the kill fails and marks it broken
        first.execute("SELECT 1")
    second = db()
    assert second is not first
    assert second.execute("SELECT 1 AS one").fetchone() == {"one": 1}


def test_an_unreachable_database_is_a_dependency_error() -> None:
    provider = ConnectionProvider(lambda: "postgresql://postgres@127.0.0.1:1/x?connect_timeout=1")
    with pytest.raises(DependencyUnavailableError):
        provider()


def test_the_database_url_comes_from_an_rds_format_secret() -> None:
    with mock_aws():
        sm = boto3.client("secretsmanager", region_name="us-east-1")
        arn = sm.create_secret(
            Name="db",
            SecretString=json.dumps(
                {
                    "engine": "postgres",
                    "host": "db.internal",
                    "port": 6432,
                    "username": "app",
                    "password": "p@ss w'rd",
                    "dbname": "aitasks",
                }
            ),
        )["ARN"]
        url = database_url_from_secret(arn, max_age_s=0)
    from psycopg.conninfo import conninfo_to_dict

    assert conninfo_to_dict(url) == {
        "host": "db.internal",
        "port": "6432",
        "user": "app",
        "password": "p@ss w'rd",
        "dbname": "aitasks",
        "sslmode": "require",
    }


def test_an_rds_managed_secret_takes_host_and_database_from_the_settings() -> None:
    with mock_aws():
        sm = boto3.client("secretsmanager", region_name="us-east-1")
        arn = sm.create_secret(Name="rds!cluster", SecretString=json.dumps({"username": "aitasks", "password": "pw"}))[
            "ARN"
        ]
        url = database_url_from_secret(arn, max_age_s=0, host="proxy.internal", dbname="aitasks")
    from psycopg.conninfo import conninfo_to_dict

    assert conninfo_to_dict(url) == {
        "host": "proxy.internal",
        "port": "5432",
        "user": "aitasks",
        "password": "pw",
        "dbname": "aitasks",
        "sslmode": "require",
    }
