"""The executor on PostgreSQL: outcomes, retries, dead letters, cancellation, takeover and concurrency.

Model calls go through the fake provider or, where the wire matters, the real `openai` SDK against the
OpenAI-compatible stub on 127.0.0.1.
"""

from __future__ import annotations

import json
import queue
import random
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest

from aitasks import bootstrap
from aitasks.adapters.fake_provider import FakeAiProvider
from aitasks.adapters.memory import InMemoryWorkQueue
from aitasks.adapters.openai_provider import OpenAiProvider
from aitasks.adapters.postgres import ConnectionProvider, PostgresTaskRepository
from aitasks.application.ai import DEFAULT_PRICES
from aitasks.application.dispatch import Dispatcher
from aitasks.application.executor import RunTask
from aitasks.domain.retry import RetryPolicy
from aitasks.domain.task import Task, TaskStatus, TenantId
from tests.conftest import LambdaContext, load_handler, sqs_event
from tests.support.openai_stub import OpenAiStub, ok, rate_limited, slow

T = TenantId("tenant-a")


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def submit(
    repo: PostgresTaskRepository,
    payload: dict[str, Any],
    *,
    type: str = "chat",
    max_attempts: int = 3,
    now: datetime | None = None,
) -> Task:
    return repo.add(
        Task.submit(tenant_id=T, type=type, payload=payload, now=now or datetime.now(UTC), max_attempts=max_attempts)
    )


def runner(
    db: ConnectionProvider,
    provider: Any = None,
    *,
    clock: Any = None,
    lease_s: int = 150,
    heartbeat_s: float = 30,
    queue_: InMemoryWorkQueue | None = None,
) -> RunTask:
    queue_ = queue_ or InMemoryWorkQueue()
    return RunTask(
        PostgresTaskRepository(db),
        queue_,
        Dispatcher(queue_),
        provider or FakeAiProvider(),
        DEFAULT_PRICES,
        RetryPolicy(),
        lease_s=lease_s,
        heartbeat_s=heartbeat_s,
        ai_timeout_s=20,
        clock=clock or (lambda: datetime.now(UTC)),
    )


def attempts(db: ConnectionProvider, task_id: UUID) -> list[dict[str, Any]]:
    return (
        db()
        .execute(
            "SELECT attempt_no, status, model, tokens_in, tokens_out, cost, error_code FROM task_attempts"
            " WHERE task_id = %s ORDER BY attempt_no",
            (task_id,),
        )
        .fetchall()
    )


def artifacts(db: ConnectionProvider, task_id: UUID) -> list[dict[str, Any]]:
    return db().execute("SELECT kind, content FROM task_artifacts WHERE task_id = %s", (task_id,)).fetchall()


def test_a_chat_task_succeeds_with_its_attempt_usage_cost_and_artifact(db) -> None:
    repo = PostgresTaskRepository(db)
    task = submit(repo, {"prompt": "Say hello to the team"})
    report = runner(db)(task.id, invocation_id="run-1")
    assert report is not None and report.task.status is TaskStatus.SUCCEEDED
    [attempt] = attempts(db, task.id)
    assert (attempt["status"], attempt["model"], attempt["error_code"]) == ("succeeded", "fake-echo-1", None)
    assert attempt["tokens_in"] > 0 and attempt["tokens_out"] > 0
    assert attempt["cost"] == 0  # the fake model is priced at zero, not unknown
    assert artifacts(db, task.id) == [{"kind": "text", "content": report.outcome.artifact.content}]
    stored = repo.get(T, task.id)
    assert (stored.tokens_in, stored.tokens_out) == (attempt["tokens_in"], attempt["tokens_out"])


def test_extract_produces_a_json_artifact_that_matches_the_schema(db) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
    task = submit(
        PostgresTaskRepository(db),
        {"prompt": "who", "context": "Ana, 31", "params": {"schema": schema}},
        type="extract",
    )
    runner(db)(task.id, invocation_id="run-1")
    [artifact] = artifacts(db, task.id)
    assert artifact["kind"] == "json"
    assert set(json.loads(artifact["content"])) == {"name", "age"}


def test_extract_output_that_breaks_the_schema_is_a_retryable_invalid_output(db, openai_stub: OpenAiStub) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    task = submit(
        PostgresTaskRepository(db), {"prompt": "n?", "context": "x", "params": {"schema": schema}}, type="extract"
    )
    openai_stub.enqueue(ok('{"n": "not a number"}'))
    provider = OpenAiProvider(api_key="sk-test", base_url=openai_stub.base_url)
    report = runner(db, provider)(task.id, invocation_id="run-1")
    assert (report.task.status, report.outcome.error_code) == (TaskStatus.FAILED, "invalid_output")
    assert artifacts(db, task.id) == []


def test_fail_twice_then_succeed_on_the_third_attempt(db) -> None:
    clock, wakeups = Clock(), InMemoryWorkQueue()
    task = submit(PostgresTaskRepository(db), {"prompt": "p", "params": {"fake": {"failAttempts": 2}}}, now=clock.now)
    run = runner(db, clock=clock, queue_=wakeups)
    for attempt_no in (1, 2, 3):
        report = run(task.id, invocation_id=f"run-{attempt_no}")
        assert report.attempt_no == attempt_no
        if attempt_no < 3:
            assert report.task.status is TaskStatus.FAILED
            assert run(task.id, invocation_id="too-early") is None  # an early wake-up runs nothing
            clock.advance((report.task.available_at - clock.now).total_seconds() + 0.001)
    assert report.task.status is TaskStatus.SUCCEEDED
    assert [(a["attempt_no"], a["status"], a["error_code"]) for a in attempts(db, task.id)] == [
        (1, "failed", "server_error"),
        (2, "failed", "server_error"),
        (3, "succeeded", None),
    ]
    assert {m.attempt_no for m in wakeups.sent if m.delay_s > 0} == {2, 3}  # early wake-ups are re-sent too


def test_a_non_retryable_error_dead_letters_on_the_first_attempt(db) -> None:
    task = submit(
        PostgresTaskRepository(db), {"prompt": "p", "params": {"fake": {"failAttempts": 1, "error": "bad_request"}}}
    )
    report = runner(db)(task.id, invocation_id="run-1")
    assert report.task.status is TaskStatus.DEAD_LETTER
    assert report.task.last_error.startswith("bad_request")
    assert [(a["status"], a["error_code"]) for a in attempts(db, task.id)] == [("failed", "bad_request")]


def test_the_last_attempt_failing_dead_letters(db) -> None:
    task = submit(PostgresTaskRepository(db), {"prompt": "p", "params": {"fake": {"failAttempts": 5}}}, max_attempts=1)
    assert runner(db)(task.id, invocation_id="run-1").task.status is TaskStatus.DEAD_LETTER


def test_retry_after_from_the_provider_sets_the_next_attempt(db, openai_stub: OpenAiStub) -> None:
    clock, wakeups = Clock(), InMemoryWorkQueue()
    task = submit(PostgresTaskRepository(db), {"prompt": "p"}, now=clock.now)
    openai_stub.enqueue(rate_limited(retry_after="42"))
    provider = OpenAiProvider(api_key="sk-test", base_url=openai_stub.base_url)
    report = runner(db, provider, clock=clock, queue_=wakeups)(task.id, invocation_id="run-1")
    assert (report.task.status, report.outcome.error_code) == (TaskStatus.FAILED, "rate_limit")
    assert report.task.available_at == clock.now + timedelta(seconds=42)
    assert [(m.attempt_no, m.delay_s) for m in wakeups.sent] == [(2, 42)]
    assert len(openai_stub.requests) == 1  # the SDK did not retry on its own


def test_a_message_on_the_dlq_dead_letters_its_task(db, wired) -> None:
    task = submit(PostgresTaskRepository(db), {"prompt": "p"})
    event = sqs_event(json.dumps({"taskId": str(task.id), "attempt": 1}))
    event["Records"][0]["attributes"]["ApproximateReceiveCount"] = "5"
    assert load_handler("dlq_handler").lambda_handler(event, LambdaContext()) == {"batchItemFailures": []}
    stored = PostgresTaskRepository(db).get(T, task.id)
    assert stored.status is TaskStatus.DEAD_LETTER
    assert stored.last_error.startswith("dlq:")


def test_cancel_while_the_model_is_working(db, openai_stub: OpenAiStub) -> None:
    repo = PostgresTaskRepository(db)
    task = submit(repo, {"prompt": "a long essay"})
    openai_stub.enqueue(slow(5_000))
    provider = OpenAiProvider(api_key="sk-test", base_url=openai_stub.base_url)
    run = runner(db, provider, heartbeat_s=0.1)
    reports: list[Any] = []
    worker = threading.Thread(target=lambda: reports.append(run(task.id, invocation_id="run-1")))
    started = time.monotonic()
    worker.start()
    while repo.get(T, task.id).status is not TaskStatus.RUNNING:
        time.sleep(0.02)
    assert repo.request_cancel(T, task.id, now=datetime.now(UTC)) is not None
    worker.join(10)
    assert time.monotonic() - started < 4  # abandoned, not waited out
    assert reports[0].task.status is TaskStatus.CANCELLED
    assert [a["status"] for a in attempts(db, task.id)] == ["cancelled"]
    assert artifacts(db, task.id) == []


def test_a_zombie_run_whose_lease_expired_changes_nothing(db, openai_stub: OpenAiStub) -> None:
    # given: run A holds the task but stops renewing its lease while the model is slow
    repo = PostgresTaskRepository(db)
    task = submit(repo, {"prompt": "p"})
    openai_stub.enqueue(slow(2_500, "A's late answer"), ok("B's answer"))
    provider = OpenAiProvider(api_key="sk-test", base_url=openai_stub.base_url)
    zombie = runner(db, provider, lease_s=1, heartbeat_s=60)
    results: list[Any] = []
    a = threading.Thread(target=lambda: results.append(zombie(task.id, invocation_id="run-A")))
    a.start()
    time.sleep(1.3)
    # when: the message is redelivered and run B takes over
    b = runner(db, provider)(task.id, invocation_id="run-B")
    a.join(10)
    # then: B's outcome stands, A's late answer is discarded
    assert b.task.status is TaskStatus.SUCCEEDED
    assert results == [None]
    assert [(x["attempt_no"], x["status"]) for x in attempts(db, task.id)] == [(1, "abandoned"), (2, "succeeded")]
    assert [x["content"] for x in artifacts(db, task.id)] == ["B's answer"]


def test_500_tasks_delivered_twice_to_8_parallel_executors_run_once_each(
    db, database_url: str, openai_stub: OpenAiStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = PostgresTaskRepository(db)
    now = datetime.now(UTC)
    ids = [submit(repo, {"prompt": f"task number {i}"}, now=now).id for i in range(500)]
    local = threading.local()

    def thread_repo() -> PostgresTaskRepository:
        if not hasattr(local, "repo"):
            local.repo = PostgresTaskRepository(ConnectionProvider(lambda: database_url))
        return local.repo

    provider = OpenAiProvider(api_key="sk-test", base_url=openai_stub.base_url)
    monkeypatch.setattr(bootstrap, "task_repository", thread_repo)
    monkeypatch.setattr(bootstrap, "work_queue", InMemoryWorkQueue)
    monkeypatch.setattr(bootstrap, "ai_provider", lambda: provider)
    messages = [json.dumps({"taskId": str(i), "attempt": 1}) for i in ids] * 2
    random.Random(7).shuffle(messages)
    batches: queue.Queue[list[str]] = queue.Queue()
    for start in range(0, len(messages), 10):
        batches.put(messages[start : start + 10])
    failures: list[Any] = []

    def executor(n: int) -> None:
        handler = load_handler("executor", environment=f"-exec{n}").lambda_handler
        while True:
            try:
                batch = batches.get_nowait()
            except queue.Empty:
                return
            result = handler(sqs_event(*batch), LambdaContext(f"exec-{n}-{batches.qsize()}"))
            failures.extend(result["batchItemFailures"])

    threads = [threading.Thread(target=executor, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert failures == []
    rows = (
        db()
        .execute(
            "SELECT t.status, count(a.*) FILTER (WHERE a.status = 'succeeded') AS ok, count(a.*) AS tries"
            " FROM tasks t LEFT JOIN task_attempts a ON a.task_id = t.id GROUP BY t.id, t.status"
        )
        .fetchall()
    )
    assert len(rows) == 500
    assert all(r == {"status": "succeeded", "ok": 1, "tries": 1} for r in rows), [r for r in rows if r["ok"] != 1][:3]
    calls: dict[str, int] = {}
    for request in openai_stub.requests:
        prompt = request.json["messages"][-1]["content"]
        calls[prompt] = calls.get(prompt, 0) + 1
    assert len(calls) == 500 and set(calls.values()) == {1}
    assert openai_stub.successes == 500
