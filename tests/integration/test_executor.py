"""The executor on PostgreSQL: outcomes, retries, cancellation, takeover, concurrent batches, the deadline, and the
wake-ups it hands back or sends.

Model calls go through the fake provider (its scripted latency) or, where the wire matters, the real `openai` SDK
against the OpenAI-compatible stub on 127.0.0.1. The claim's fairness, priority and caps have their own module
(test_claim.py).
"""

from __future__ import annotations

import itertools
import json
import math
import queue
import random
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from uuid import UUID

import psycopg
import pytest

from aitasks import bootstrap
from aitasks.adapters.fake_provider import FakeAiProvider
from aitasks.adapters.openai_provider import OpenAiProvider
from aitasks.adapters.postgres import (
    ConnectionProvider,
    PostgresLimitsRepository,
    PostgresModelRepository,
    PostgresTaskRepository,
    connect,
)
from aitasks.application.ai import ERROR_CLASSES, AiError, AiResult, Usage
from aitasks.application.dispatch import Dispatcher
from aitasks.application.executor import DATABASE_DOWN_DELAY_S, HAND_BACK_DELAY_S, Execute, RescueWakeUp
from aitasks.application.maintenance import Sweep
from aitasks.application.ports import Delivery, WakeUp
from aitasks.domain.errors import DependencyUnavailableError
from aitasks.domain.retry import RetryPolicy
from aitasks.domain.task import Task, TaskStatus, TenantId
from tests.conftest import LambdaContext, load_handler, sqs_event, wake_up
from tests.integration.conftest import prices_of
from tests.support.fakes import InMemoryWorkQueue
from tests.support.openai_stub import OpenAiStub, ok, rate_limited, slow

if TYPE_CHECKING:
    from collections.abc import Iterator

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
    tenant: str = T,
    max_attempts: int = 3,
    priority: int = 5,
    now: datetime | None = None,
    model: str | None = None,
) -> Task:
    return repo.add(
        Task.submit(
            tenant_id=TenantId(tenant),
            type=type,
            payload=payload,
            now=now or datetime.now(UTC),
            max_attempts=max_attempts,
            priority=priority,
            model=model,
        )
    )


def engine(
    db: ConnectionProvider | PostgresTaskRepository,
    provider: Any = None,
    *,
    clock: Any = None,
    lease_s: int = 60,
    heartbeat_s: float = 15,
    ai_timeout_s: float = 20,
    queue_: InMemoryWorkQueue | None = None,
    leases: PostgresTaskRepository | None = None,
    **settings: Any,
) -> Execute:
    """An executor invocation on the test database. `leases`: the heartbeat's repository, on a connection of its own
    as bootstrap gives it (without one the heartbeat shares the repository's connection)."""
    queue_ = queue_ or InMemoryWorkQueue()
    repo = db if isinstance(db, PostgresTaskRepository) else PostgresTaskRepository(db)
    return Execute(
        repo,
        queue_,
        Dispatcher(queue_),
        provider or FakeAiProvider(),
        lambda: prices_of(repo),
        RetryPolicy(),
        lease_s=lease_s,
        heartbeat_s=heartbeat_s,
        ai_timeout_s=ai_timeout_s,
        margin_s=2,
        clock=clock or (lambda: datetime.now(UTC)),
        leases=leases,
        **settings,
    )


@pytest.fixture
def heartbeat_db(database_url: str) -> Iterator[ConnectionProvider]:
    """A second connection to the test database, for a heartbeat (as bootstrap.heartbeat_connection)."""
    provider = ConnectionProvider(lambda: database_url, application_name="aitasks-heartbeat")
    yield provider
    provider.close()


def deliveries(n: int = 1, *, tenant: str = T, at: datetime | None = None) -> list[Delivery]:
    return [Delivery(f"msg-{i}", f"rh-{i}", WakeUp(tenant_id=tenant, at=at)) for i in range(n)]


def execute(run: Execute, n: int = 1, *, remaining_s: float = 300, invocation: str = "inv-1") -> Any:
    return run(deliveries(n), invocation_id=invocation, remaining_s=lambda: remaining_s)


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
    report = execute(engine(db))
    [run] = report.runs
    assert (run.task.id, run.task.status, report.claimed) == (task.id, TaskStatus.SUCCEEDED, 1)
    [attempt] = attempts(db, task.id)
    assert (attempt["status"], attempt["model"], attempt["error_code"]) == ("succeeded", "fake-echo-1", None)
    assert attempt["tokens_in"] > 0 and attempt["tokens_out"] > 0
    # the fake model is priced: $0.50 in and $1.50 out per million tokens
    usage = Usage(tokens_in=attempt["tokens_in"], tokens_out=attempt["tokens_out"])
    assert attempt["cost"] == prices_of(db).cost("fake-echo-1", usage) > 0
    assert artifacts(db, task.id) == [{"kind": "text", "content": run.outcome.artifact.content}]
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
    execute(engine(db))
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
    [run] = execute(engine(db, provider)).runs
    assert (run.task.status, run.outcome.error_code) == (TaskStatus.FAILED, "invalid_output")
    assert artifacts(db, task.id) == []


def test_fail_twice_then_succeed_on_the_third_attempt(db) -> None:
    clock, wakeups = Clock(), InMemoryWorkQueue()
    task = submit(PostgresTaskRepository(db), {"prompt": "p", "params": {"fake": {"failAttempts": 2}}}, now=clock.now)
    run = engine(db, clock=clock, queue_=wakeups)
    for attempt_no in (1, 2, 3):
        [report] = execute(run).runs
        assert report.attempt_no == attempt_no
        if attempt_no < 3:
            assert report.task.status is TaskStatus.FAILED
            assert execute(run).runs == []  # before its retry time, a wake-up finds nothing due
            clock.advance((report.task.available_at - clock.now).total_seconds() + 0.001)
    assert report.task.status is TaskStatus.SUCCEEDED
    assert [(a["attempt_no"], a["status"], a["error_code"]) for a in attempts(db, task.id)] == [
        (1, "failed", "server_error"),
        (2, "failed", "server_error"),
        (3, "succeeded", None),
    ]
    # each failure woke the task at its retry time: the tenant and the task named, delayed to the second
    assert [(m.tenant_id, m.task_id) for m in wakeups.sent] == [(T, task.id)] * 2
    assert all(m.delay_s > 0 for m in wakeups.sent)


def test_a_non_retryable_error_dead_letters_on_the_first_attempt(db) -> None:
    task = submit(
        PostgresTaskRepository(db), {"prompt": "p", "params": {"fake": {"failAttempts": 1, "error": "bad_request"}}}
    )
    [run] = execute(engine(db)).runs
    assert run.task.status is TaskStatus.DEAD_LETTER
    assert run.task.last_error.startswith("bad_request")
    assert [(a["status"], a["error_code"]) for a in attempts(db, task.id)] == [("failed", "bad_request")]


def test_the_last_attempt_failing_dead_letters(db) -> None:
    submit(PostgresTaskRepository(db), {"prompt": "p", "params": {"fake": {"failAttempts": 5}}}, max_attempts=1)
    assert execute(engine(db)).runs[0].task.status is TaskStatus.DEAD_LETTER


def test_retry_after_from_the_provider_sets_the_next_attempt(db, openai_stub: OpenAiStub) -> None:
    clock, wakeups = Clock(), InMemoryWorkQueue()
    task = submit(PostgresTaskRepository(db), {"prompt": "p"}, now=clock.now)
    openai_stub.enqueue(rate_limited(retry_after="42"))
    provider = OpenAiProvider(api_key="sk-test", base_url=openai_stub.base_url)
    [run] = execute(engine(db, provider, clock=clock, queue_=wakeups)).runs
    assert (run.task.status, run.outcome.error_code) == (TaskStatus.FAILED, "rate_limit")
    assert run.task.available_at == clock.now + timedelta(seconds=42)
    # the retry's wake-up, and the pause's (the next claim found the model paused): both at the pause's end
    assert {(m.task_id, m.delay_s) for m in wakeups.sent} == {(task.id, 42)}
    assert len(openai_stub.requests) == 1  # the SDK did not retry on its own


def test_a_batch_of_ten_slow_calls_runs_at_the_same_time(db) -> None:
    # given: ten tasks due at once whose model takes 5 s each, and ten wake-ups in one invocation
    repo = PostgresTaskRepository(db)
    ids = {submit(repo, {"prompt": f"essay {i}", "params": {"fake": {"latencyMs": 5000}}}).id for i in range(10)}
    # when
    started = time.monotonic()
    report = execute(engine(db), 10)
    elapsed = time.monotonic() - started
    # then: all ten succeeded with one attempt each, in about one call's time (serially it took 50 s)
    assert {r.task.id for r in report.runs} == ids
    assert all(r.task.status is TaskStatus.SUCCEEDED and r.attempt_no == 1 for r in report.runs)
    assert elapsed < 2 * 5


def test_without_time_for_a_call_the_wake_ups_go_back_and_no_attempt_is_counted(db) -> None:
    repo, wakeups = PostgresTaskRepository(db), InMemoryWorkQueue()
    tasks = [submit(repo, {"prompt": f"p{i}"}) for i in range(3)]
    # 15 s left, a call may take 20 s and 2 s are kept for the finish: nothing may start
    report = execute(engine(db, queue_=wakeups), 3, remaining_s=15)
    assert (report.runs, report.claimed) == ([], 0)
    assert report.handed_back == ["msg-0", "msg-1", "msg-2"]
    assert wakeups.visibility == [(f"rh-{i}", HAND_BACK_DELAY_S) for i in range(3)]  # visible again soon
    assert all(repo.get(T, t.id).status is TaskStatus.QUEUED and repo.get(T, t.id).attempt_count == 0 for t in tasks)


def test_an_unreachable_database_hands_the_wake_ups_back(db) -> None:
    class Down(PostgresTaskRepository):
        def claim_due(self, **kwargs: Any) -> list[Task]:
            raise DependencyUnavailableError("database")

    wakeups = InMemoryWorkQueue()
    report = execute(engine(Down(db), queue_=wakeups), 2)
    assert report.handed_back == ["msg-0", "msg-1"]
    assert wakeups.visibility == [("rh-0", DATABASE_DOWN_DELAY_S), ("rh-1", DATABASE_DOWN_DELAY_S)]


def test_runs_ending_after_the_last_possible_claim_wake_the_work_their_slots_free(db) -> None:
    # given: a tenant capped at one run, three due tasks, and an invocation whose time runs out during its first run
    repo, wakeups = PostgresTaskRepository(db), InMemoryWorkQueue()
    PostgresLimitsRepository(db).set_max_concurrency(T, 1, now=datetime.now(UTC))
    first, second, third = (submit(repo, {"prompt": f"p{i}", "params": {"fake": {"latencyMs": 300}}}) for i in range(3))
    left = iter([300.0, 5.0])  # checked before the first claim, then when the first run has ended
    # when
    report = engine(db, queue_=wakeups)(deliveries(3), invocation_id="inv", remaining_s=lambda: next(left))
    # then: one run, no claim after it, and a wake-up for the task its slot now admits (only that one: cap 1)
    assert [r.task.id for r in report.runs] == [first.id]
    assert [m.task_id for m in wakeups.sent] == [second.id]
    assert repo.get(T, third.id).waiting_for is None  # nothing runs: it waits for an executor, not for the cap


def test_slots_freed_by_finished_runs_are_claimed_again_in_the_same_invocation(db) -> None:
    # given: cap 2, six tasks, one invocation with two wake-ups
    repo = PostgresTaskRepository(db)
    PostgresLimitsRepository(db).set_max_concurrency(T, 2, now=datetime.now(UTC))
    ids = {submit(repo, {"prompt": f"p{i}", "params": {"fake": {"latencyMs": 100}}}).id for i in range(6)}
    # when
    report = execute(engine(db), 2)
    # then: the invocation went on claiming as its runs ended, never past the cap
    assert {r.task.id for r in report.runs} == ids
    assert report.claimed == 6


def test_a_wake_up_that_finds_nothing_due_costs_one_statement(db) -> None:
    calls: list[str] = []

    class Counting(PostgresTaskRepository):
        def __getattribute__(self, name: str) -> Any:
            if not name.startswith("_"):
                calls.append(name)
            return super().__getattribute__(name)

    submit(PostgresTaskRepository(db), {"prompt": "later"}, now=datetime.now(UTC) + timedelta(hours=1))
    report = execute(engine(Counting(db)), 3)
    assert (report.runs, report.claimed, report.handed_back) == ([], 0, [])
    assert calls == ["claim_due"]


def test_a_wake_up_a_fraction_of_a_second_early_is_sent_again_not_spent(db) -> None:
    clock, wakeups = Clock(), InMemoryWorkQueue()
    task = submit(PostgresTaskRepository(db), {"prompt": "p"}, now=clock.now + timedelta(seconds=0.4))
    run = engine(db, clock=clock, queue_=wakeups)
    report = run(deliveries(1, at=task.available_at), invocation_id="inv", remaining_s=lambda: 300)
    assert (report.runs, report.claimed) == ([], 0)
    assert [(m.delay_s, m.wake.at) for m in wakeups.sent] == [(1, task.available_at)]


def test_an_early_wake_up_is_sent_again_for_the_rest_of_its_wait(db) -> None:
    clock, wakeups = Clock(), InMemoryWorkQueue()
    at = clock.now + timedelta(minutes=20)  # further than a queue delay: it came after 15 minutes
    run = engine(db, clock=clock, queue_=wakeups)
    report = run(deliveries(1, at=at), invocation_id="inv", remaining_s=lambda: 300)
    assert (report.runs, report.claimed) == ([], 0)
    assert [(m.delay_s, m.wake.at) for m in wakeups.sent] == [(900, at)]


def test_cancel_while_the_model_is_working(db, openai_stub: OpenAiStub) -> None:
    repo = PostgresTaskRepository(db)
    task = submit(repo, {"prompt": "a long essay"})
    other = submit(repo, {"prompt": "a short note"})
    openai_stub.enqueue(slow(5_000), slow(5_000))
    provider = OpenAiProvider(api_key="sk-test", base_url=openai_stub.base_url)
    run = engine(db, provider, heartbeat_s=0.1)
    reports: list[Any] = []
    worker = threading.Thread(target=lambda: reports.append(execute(run, 2)))
    started = time.monotonic()
    worker.start()
    while repo.get(T, task.id).status is not TaskStatus.RUNNING:
        time.sleep(0.02)
    assert repo.request_cancel(T, task.id, now=datetime.now(UTC)) is not None
    worker.join(10)
    assert time.monotonic() - started > 4  # the other run went on to its answer
    statuses = {r.task.id: r.task.status for r in reports[0].runs}
    assert statuses == {task.id: TaskStatus.CANCELLED, other.id: TaskStatus.SUCCEEDED}
    assert [a["status"] for a in attempts(db, task.id)] == ["cancelled"]
    assert artifacts(db, task.id) == []


def test_a_zombie_run_whose_lease_expired_changes_nothing(db, openai_stub: OpenAiStub) -> None:
    # given: run A holds the task but stops renewing its lease while the model is slow
    repo = PostgresTaskRepository(db)
    task = submit(repo, {"prompt": "p"})
    openai_stub.enqueue(slow(2_500, "A's late answer"), ok("B's answer"))
    provider = OpenAiProvider(api_key="sk-test", base_url=openai_stub.base_url)
    zombie = engine(db, provider, lease_s=1, heartbeat_s=60)
    results: list[Any] = []
    a = threading.Thread(target=lambda: results.append(execute(zombie, invocation="run-A")))
    a.start()
    time.sleep(1.3)
    # when: the sweeper closes the expired run and run B claims the task again
    assert [t.status for t in repo.abandon_expired([task.id], now=datetime.now(UTC))] == [TaskStatus.FAILED]
    [b] = execute(engine(db, provider), invocation="run-B").runs
    a.join(10)
    # then: B's outcome stands, A's late answer is discarded
    assert b.task.status is TaskStatus.SUCCEEDED
    assert results[0].runs == []
    assert [(x["attempt_no"], x["status"]) for x in attempts(db, task.id)] == [(1, "abandoned"), (2, "succeeded")]
    assert [x["content"] for x in artifacts(db, task.id)] == ["B's answer"]


class FailingFinishes(PostgresTaskRepository):
    """Writing the runs' ends fails `failures` times (the database went away for a moment), then works."""

    def __init__(self, db: ConnectionProvider, failures: int) -> None:
        super().__init__(db)
        self.failures = failures

    def finish_runs(self, *args: Any, **kwargs: Any) -> Any:
        if self.failures:
            self.failures -= 1
            raise DependencyUnavailableError("database")
        return super().finish_runs(*args, **kwargs)


def test_outcomes_that_could_not_be_written_are_written_when_the_database_is_back(db) -> None:
    repo = FailingFinishes(db, failures=2)
    ids = {submit(repo, {"prompt": f"p{i}"}).id for i in range(3)}
    report = execute(engine(repo, heartbeat_s=0.2), 3)
    assert {r.task.id for r in report.runs} == ids
    assert all(r.task.status is TaskStatus.SUCCEEDED for r in report.runs)
    assert all([a["status"] for a in attempts(db, i)] == ["succeeded"] for i in ids)  # no attempt lost or doubled


def test_a_nul_in_a_models_answer_is_stored_without_taking_the_batch_down(db, openai_stub: OpenAiStub) -> None:
    repo = PostgresTaskRepository(db)
    ids = [submit(repo, {"prompt": f"p{i}"}).id for i in range(2)]
    openai_stub.enqueue(ok("before\x00after"), ok("clean"))
    provider = OpenAiProvider(api_key="sk-test", base_url=openai_stub.base_url)
    report = execute(engine(db, provider), 2)
    assert {r.task.status for r in report.runs} == {TaskStatus.SUCCEEDED}
    contents = sorted(a["content"] for i in ids for a in artifacts(db, i))
    assert contents == ["before\ufffdafter", "clean"]


class FlakyLeases(PostgresTaskRepository):
    """Renewing the leases fails `failures` times (a passing database error), then works."""

    def __init__(self, db: ConnectionProvider, failures: int) -> None:
        super().__init__(db)
        self.failures = failures
        self.renewals = 0

    def extend_leases(self, *args: Any, **kwargs: Any) -> Any:
        if self.failures:
            self.failures -= 1
            raise DependencyUnavailableError("database")
        self.renewals += 1
        return super().extend_leases(*args, **kwargs)


def test_a_passing_error_while_renewing_does_not_end_the_run(db) -> None:
    repo = FlakyLeases(db, failures=2)
    submit(repo, {"prompt": "p", "params": {"fake": {"latencyMs": 400}}})
    [run] = execute(engine(repo, heartbeat_s=0.05, lease_s=150)).runs
    assert run.task.status is TaskStatus.SUCCEEDED
    assert repo.renewals >= 1  # it kept beating after the errors


def test_a_run_that_cannot_renew_its_lease_goes_on_and_stands_when_no_one_took_its_task(db) -> None:
    # given: the heartbeat never gets through (the database paused) and the lease runs out meanwhile
    repo = FlakyLeases(db, failures=10_000)
    task = submit(repo, {"prompt": "p", "params": {"fake": {"latencyMs": 1_500}}})
    # when
    [run] = execute(engine(repo, heartbeat_s=0.05, lease_s=1)).runs
    # then: no sweeper closed the attempt, so the fenced finish is still this run's: its answer is kept
    assert run.task.status is TaskStatus.SUCCEEDED
    assert [a["status"] for a in attempts(db, task.id)] == ["succeeded"]


def test_a_run_cut_off_from_the_database_loses_its_task_to_the_sweeper_and_writes_nothing(db) -> None:
    # given: run A cannot renew its lease (its database is unreachable) while its call goes on
    repo = PostgresTaskRepository(db)
    task = submit(repo, {"prompt": "p", "params": {"fake": {"latencyMs": 2_500}}})
    results: list[Any] = []
    cut_off = engine(FlakyLeases(db, failures=10_000), heartbeat_s=0.05, lease_s=1)
    a = threading.Thread(target=lambda: results.append(execute(cut_off, invocation="run-A")))
    a.start()
    time.sleep(1.3)
    # when: the sweeper closes the expired attempt and run B claims the task and succeeds
    assert [t.status for t in repo.abandon_expired([task.id], now=datetime.now(UTC))] == [TaskStatus.FAILED]
    [b] = execute(engine(db), invocation="run-B").runs
    a.join(10)
    # then: one success, B's; A's answer came back after and was discarded
    assert b.task.status is TaskStatus.SUCCEEDED
    assert results[0].runs == []
    assert [(x["attempt_no"], x["status"]) for x in attempts(db, task.id)] == [(1, "abandoned"), (2, "succeeded")]


def test_model_calls_reuse_idle_threads(db) -> None:
    # given: invocations one after another, as an executor environment makes them
    repo = PostgresTaskRepository(db)
    before = [t for t in threading.enumerate() if t.name == "model-call"]
    # when
    for i in range(20):
        submit(repo, {"prompt": f"p{i}"})
        assert execute(engine(db)).runs[0].task.status is TaskStatus.SUCCEEDED
    # then: starting a thread per call cost more than a fast call; one thread serves them all
    after = [t for t in threading.enumerate() if t.name == "model-call"]
    assert len(after) <= len(before) + 1


def test_the_handler_takes_old_and_new_wake_ups_and_drops_malformed_ones(db, wired, monkeypatch) -> None:
    monkeypatch.setattr(bootstrap, "work_queue", InMemoryWorkQueue)
    repo = PostgresTaskRepository(db)
    old, new = submit(repo, {"prompt": "old"}), submit(repo, {"prompt": "new"})
    event = sqs_event(json.dumps({"taskId": str(old.id), "attempt": 1}), wake_up(T, new.id), "{not json", "[]")
    assert load_handler("executor").lambda_handler(event, LambdaContext()) == {"batchItemFailures": []}
    assert {repo.get(T, t.id).status for t in (old, new)} == {TaskStatus.SUCCEEDED}


def test_the_dlq_handler_leaves_a_task_with_attempts_left_alone(db, wired, monkeypatch) -> None:
    # given: a queued task that never ran, whose wake-up reached the DLQ (five receives)
    wakeups = InMemoryWorkQueue()
    monkeypatch.setattr(bootstrap, "work_queue", lambda: wakeups)
    task = submit(PostgresTaskRepository(db), {"prompt": "p"})
    event = sqs_event(wake_up(T, task.id))
    event["Records"][0]["attributes"]["ApproximateReceiveCount"] = "5"
    # when
    assert load_handler("dlq_handler").lambda_handler(event, LambdaContext()) == {"batchItemFailures": []}
    # then: still queued, no attempt spent, and woken again
    stored = PostgresTaskRepository(db).get(T, task.id)
    assert (stored.status, stored.attempt_count, stored.last_error) == (TaskStatus.QUEUED, 0, None)
    assert [m.task_id for m in wakeups.sent] == [task.id]


def test_a_dead_run_named_by_a_dlq_wake_up_is_closed_by_its_attempts(db) -> None:
    repo, wakeups = PostgresTaskRepository(db), InMemoryWorkQueue()
    spent = submit(repo, {"prompt": "spent"}, max_attempts=1)
    left = submit(repo, {"prompt": "left"}, max_attempts=2)
    now = datetime.now(UTC)
    repo.claim_due(limit=2, locked_by="dead", lease_until=now + timedelta(seconds=1), now=now)
    rescue = RescueWakeUp(repo, Dispatcher(wakeups), clock=lambda: now + timedelta(seconds=5))
    # its one attempt is spent: dead-lettered by its attempts, not by the DLQ
    assert rescue(WakeUp(tenant_id=T, task_id=spent.id)).status is TaskStatus.DEAD_LETTER
    # an attempt left: failed, woken again at once
    assert rescue(WakeUp(tenant_id=T, task_id=left.id)).status is TaskStatus.FAILED
    assert [m.task_id for m in wakeups.sent] == [left.id]
    assert [a["status"] for a in attempts(db, left.id)] == ["abandoned"]


def test_500_tasks_of_four_tenants_woken_twice_run_once_each_within_every_cap(
    db, database_url: str, openai_stub: OpenAiStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given: 500 tasks of four tenants with caps 3, 5, 8 and 20; each wake-up delivered twice, shuffled, to 8
    # executor environments taking batches of 10; each model call takes 20 ms
    repo, limits = PostgresTaskRepository(db), PostgresLimitsRepository(db)
    caps = {"t3": 3, "t5": 5, "t8": 8, "t20": 20}
    now = datetime.now(UTC)
    for tenant, cap in caps.items():
        limits.set_max_concurrency(TenantId(tenant), cap, now=now)
    tenants = list(caps)
    tasks = [submit(repo, {"prompt": f"task number {i}"}, tenant=tenants[i % 4], now=now) for i in range(500)]
    openai_stub.default_delay_ms = 20
    local = threading.local()

    def thread_repo() -> PostgresTaskRepository:
        if not hasattr(local, "repo"):
            local.repo = PostgresTaskRepository(ConnectionProvider(lambda: database_url))
        return local.repo

    def thread_leases() -> PostgresTaskRepository:  # each environment's heartbeat has a connection of its own too
        if not hasattr(local, "leases"):
            local.leases = PostgresTaskRepository(ConnectionProvider(lambda: database_url))
        return local.leases

    provider = OpenAiProvider(api_key="sk-test", base_url=openai_stub.base_url)
    monkeypatch.setattr(bootstrap, "task_repository", thread_repo)
    monkeypatch.setattr(bootstrap, "lease_repository", thread_leases)
    monkeypatch.setattr(bootstrap, "model_repository", lambda: PostgresModelRepository(db))
    monkeypatch.setattr(bootstrap, "work_queue", InMemoryWorkQueue)
    monkeypatch.setattr(bootstrap, "ai_provider", lambda: provider)
    messages = [wake_up(t.tenant_id, t.id) for t in tasks] * 2
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
            result = handler(sqs_event(*batch), LambdaContext(aws_request_id=f"exec-{n}-{uuid.uuid4()}"))
            failures.extend(result["batchItemFailures"])

    # when
    threads = [threading.Thread(target=executor, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    # then: every task succeeded with exactly one attempt and one model call
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
    retried = db().execute("SELECT error_code, error_detail FROM task_attempts WHERE status <> 'succeeded'").fetchall()
    assert all(r == {"status": "succeeded", "ok": 1, "tries": 1} for r in rows), (
        retried[:3],
        [r for r in rows if r["status"] != "succeeded"][:3],
    )
    calls: dict[str, int] = {}
    for request in openai_stub.requests:
        prompt = request.json["messages"][-1]["content"]
        calls[prompt] = calls.get(prompt, 0) + 1
    assert len(calls) == 500 and set(calls.values()) == {1}
    assert openai_stub.successes == 500
    # and no tenant ever had more runs at once than its cap, from the attempts' start and end times
    peaks = most_at_once(db)
    assert all(peaks[tenant] <= cap for tenant, cap in caps.items()), peaks
    assert peaks["t20"] > 8  # the caps were reached and bound, not idle


def most_at_once(db: ConnectionProvider) -> dict[str, int]:
    """Per tenant, the largest number of attempts whose [started_at, ended_at) intervals overlap."""
    rows = (
        db()
        .execute("SELECT t.tenant_id, a.started_at, a.ended_at FROM task_attempts a JOIN tasks t ON t.id = a.task_id")
        .fetchall()
    )
    edges: dict[str, list[tuple[datetime, int]]] = {}
    for r in rows:
        edges.setdefault(r["tenant_id"], []).extend([(r["started_at"], 1), (r["ended_at"], -1)])
    peaks = {}
    for tenant, points in edges.items():
        level = peak = 0
        for _, step in sorted(points, key=lambda p: (p[0], p[1])):  # an end before a start at the same instant
            level += step
            peak = max(peak, level)
        peaks[tenant] = peak
    return peaks


# --- runs known by (task, attempt); the heartbeat on its own; runs handed back; pauses; charges; freed slots -----


def wait_until(condition: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


class Gated:
    """The model, scripted: the call for (prompt, attempt) waits until the test opens its gate, then answers as the
    fake provider does."""

    name = "gated"

    def __init__(self) -> None:
        self._gates: dict[tuple[str, int], threading.Event] = {}
        self._lock = threading.Lock()
        self._all_open = False
        self._fake = FakeAiProvider()

    def gate(self, prompt: str, attempt: int) -> threading.Event:
        with self._lock:
            gate = self._gates.setdefault((prompt, attempt), threading.Event())
            if self._all_open:
                gate.set()
            return gate

    def open(self, prompt: str, attempt: int = 1) -> None:
        self.gate(prompt, attempt).set()

    def open_all(self) -> None:
        """Every call answers from now on (a test's end, passed or failed, leaves no call waiting)."""
        with self._lock:
            self._all_open = True
            for gate in self._gates.values():
                gate.set()

    def complete(self, request: Any, *, timeout_s: float) -> Any:
        self.gate(request.prompt, request.attempt_no).wait(timeout_s)
        return self._fake.complete(request, timeout_s=timeout_s)


class Failing:
    """The model, scripted: a prompt named in `errors` fails with its error (once, if `once`); others answer as the
    fake provider does; `answers` replaces an answer."""

    name = "failing"

    def __init__(self, errors: dict[str, AiError] | None = None, *, once: bool = False, answers: Any = None) -> None:
        self.errors = dict(errors or {})
        self.once = once
        self.answers = answers or {}
        self._fake = FakeAiProvider()

    def complete(self, request: Any, *, timeout_s: float) -> Any:
        error = self.errors.pop(request.prompt, None) if self.once else self.errors.get(request.prompt)
        if error is not None:
            raise error
        answer = self._fake.complete(request, timeout_s=timeout_s)
        return self.answers.get(request.prompt, answer)


class Switchable(PostgresTaskRepository):
    """Renewals, or finishes, fail while their switch is on (the database went away); it records what each
    renewal that got through answered, and the runs of every finish asked."""

    def __init__(self, db: ConnectionProvider) -> None:
        super().__init__(db)
        self.leases_down = threading.Event()
        self.finishes_down = threading.Event()
        self.renewed: list[dict[tuple[UUID, int], Any]] = []
        self.finished: list[set[tuple[UUID, int]]] = []

    def extend_leases(self, *args: Any, **kwargs: Any) -> Any:
        if self.leases_down.is_set():
            raise DependencyUnavailableError("database")
        held = super().extend_leases(*args, **kwargs)
        self.renewed.append(held)
        return held

    def finish_runs(self, runs: Any, **kwargs: Any) -> Any:
        self.finished.append({(run.task_id, run.attempt_no) for run in runs})
        if self.finishes_down.is_set():
            raise DependencyUnavailableError("database")
        return super().finish_runs(runs, **kwargs)


def in_background(fn: Any) -> tuple[threading.Thread, list[Any]]:
    results: list[Any] = []
    worker = threading.Thread(target=lambda: results.append(fn()), daemon=True)
    worker.start()
    return worker, results


@pytest.fixture
def reader(database_url: str) -> Iterator[PostgresTaskRepository]:
    """The test's own connection, beside those of the executor it watches."""
    provider = ConnectionProvider(lambda: database_url)
    yield PostgresTaskRepository(provider)
    provider.close()


@pytest.mark.parametrize("caught_by", ["heartbeat", "finish"])
def test_two_attempts_of_one_task_in_one_invocation_are_told_apart(
    db: ConnectionProvider,
    heartbeat_db: ConnectionProvider,
    reader: PostgresTaskRepository,
    caught_by: str,
) -> None:
    # given: run X#1 cannot renew its lease, so its attempt is closed (the sweeper) while its call goes on, and the
    # same invocation claims X again as X#2 when its other run, Y, ends (review §4)
    repo, leases, gated = Switchable(db), Switchable(heartbeat_db), Gated()
    leases.leases_down.set()
    x, y = submit(reader, {"prompt": "x"}), submit(reader, {"prompt": "y"})
    worker, results = in_background(lambda: execute(engine(repo, gated, lease_s=1, heartbeat_s=0.05, leases=leases), 2))
    try:
        wait_until(lambda: {reader.get(T, t.id).locked_by for t in (x, y)} == {"inv-1"})
        time.sleep(1.1)
        assert [t.status for t in reader.abandon_expired([x.id], now=datetime.now(UTC))] == [TaskStatus.FAILED]
        gated.open("y")
        wait_until(lambda: reader.get(T, x.id).attempt_count == 2)
        # when
        if caught_by == "heartbeat":
            # a beat gets through: it holds X#2's lease, not X#1's
            leases.leases_down.clear()
            wait_until(lambda: any((x.id, 2) in held for held in leases.renewed))
            gated.open("x", 1)
            gated.open("x", 2)
        else:
            # no beat gets through, and both of X's ends reach one finish (kept while the database was away)
            repo.finishes_down.set()
            gated.open("x", 1)
            wait_until(lambda: any((x.id, 1) in runs for runs in repo.finished))
            gated.open("x", 2)
            wait_until(lambda: {(x.id, 1), (x.id, 2)} in repo.finished)
            repo.finishes_down.clear()
    finally:
        gated.open_all()
        worker.join(10)
    # then: X#2 ended it; X#1, whose attempt was closed, wrote nothing and reports nothing
    assert sorted((r.task.id == x.id, r.attempt_no) for r in results[0].runs) == [(False, 1), (True, 2)]
    assert [(a["attempt_no"], a["status"]) for a in attempts(db, x.id)] == [(1, "abandoned"), (2, "succeeded")]
    if caught_by == "heartbeat":
        assert not any((x.id, 1) in runs for runs in repo.finished)  # dropped at the beat
    else:
        assert repo.finished[-1] == {(x.id, 1), (x.id, 2)}  # one finish had both


def test_a_finish_that_waits_longer_than_a_lease_does_not_make_the_heartbeat_late(
    db: ConnectionProvider, heartbeat_db: ConnectionProvider, database_url: str
) -> None:
    # given: run A waits for its model; run B's answer is back, but its finish waits for a row lock held elsewhere
    # for longer than a lease (2 s)
    repo, gated = PostgresTaskRepository(db), Gated()
    a, b = submit(repo, {"prompt": "a"}), submit(repo, {"prompt": "b"})
    run = engine(db, gated, lease_s=2, heartbeat_s=0.2, leases=PostgresTaskRepository(heartbeat_db))
    worker, results = in_background(lambda: execute(run, 2))
    try:
        with connect(database_url) as reader, psycopg.connect(database_url) as blocker:

            def task_row(task_id: UUID) -> dict[str, Any]:
                return reader.execute("SELECT status, locked_until FROM tasks WHERE id = %s", (task_id,)).fetchone()

            wait_until(lambda: task_row(b.id)["status"] == task_row(a.id)["status"] == "running")
            blocker.execute("SELECT 1 FROM tasks WHERE id = %s FOR UPDATE", (b.id,))
            # when: B's answer comes back and its finish waits 3 s on the lock
            gated.open("b")
            time.sleep(3)
            # then: B is not finished yet, and A's lease was renewed all along (it would have run out 2 s in)
            assert task_row(b.id)["status"] == "running"
            assert task_row(a.id)["locked_until"] > datetime.now(UTC)
            blocker.rollback()
    finally:
        gated.open_all()
        worker.join(10)
    assert {r.task.id: r.task.status for r in results[0].runs} == {
        a.id: TaskStatus.SUCCEEDED,
        b.id: TaskStatus.SUCCEEDED,
    }
    assert [x["status"] for x in attempts(db, a.id)] == ["succeeded"]


def test_a_heartbeat_never_waits_for_a_row_another_statement_holds(db: ConnectionProvider, database_url: str) -> None:
    # given: two runs of one invocation, one of whose rows another transaction holds (a finish, a cancel request)
    repo = PostgresTaskRepository(db)
    busy, free = submit(repo, {"prompt": "busy"}), submit(repo, {"prompt": "free"})
    now = datetime.now(UTC)
    repo.claim_due(limit=2, locked_by="inv", lease_until=now + timedelta(seconds=20), now=now)
    later = now + timedelta(minutes=1)
    with psycopg.connect(database_url) as other:
        other.execute("SELECT 1 FROM tasks WHERE id = %s FOR UPDATE", (busy.id,))
        # when
        started = time.monotonic()
        held = repo.extend_leases([(busy.id, 1), (free.id, 1)], locked_by="inv", lease_until=later)
        took = time.monotonic() - started
        other.rollback()
    # then: at once (not after the lock's 5 s timeout), both still held, the free one renewed, the busy one next time
    assert took < 1
    assert {key: lease.cancel_requested for key, lease in held.items()} == {(busy.id, 1): False, (free.id, 1): False}
    assert (repo.get(T, free.id).locked_until, repo.get(T, busy.id).locked_until) == (
        later,
        now + timedelta(seconds=20),
    )


def test_a_claimed_run_that_cannot_be_started_is_handed_back_at_once(db: ConnectionProvider) -> None:
    # given: two due tasks, one of which cannot even become a model request (its params are no object)
    repo = PostgresTaskRepository(db)
    fine = submit(repo, {"prompt": "fine"})
    broken = submit(repo, {"prompt": "broken", "params": 7})
    # when: one invocation claims both (with a lease of ten minutes)
    report = execute(engine(db, lease_s=600), 2)
    # then: the other run went on; the broken one failed at once, to run again soon, not when its lease runs out
    assert report.handed_back == []
    ends = {r.task.id: (r.task.status, r.outcome.error_code, r.outcome.charge_held) for r in report.runs}
    assert ends == {fine.id: (TaskStatus.SUCCEEDED, None, False), broken.id: (TaskStatus.FAILED, "unknown", False)}
    stored = repo.get(T, broken.id)
    assert stored.locked_by is None and stored.available_at < datetime.now(UTC) + timedelta(seconds=5)
    [attempt] = attempts(db, broken.id)
    assert (attempt["status"], attempt["error_code"]) == ("failed", "unknown")


def test_a_run_whose_outcome_cannot_be_made_is_handed_back_without_losing_the_others(db: ConnectionProvider) -> None:
    # given: a model whose answer to one task is broken (a provider bug: no token counts at all)
    repo = PostgresTaskRepository(db)
    good, bad = submit(repo, {"prompt": "good"}), submit(repo, {"prompt": "bad"})
    broken = AiResult("an answer", "fake-echo-1", Usage(tokens_in=None, tokens_out=None), 1)  # type: ignore[arg-type]
    # when: both end in one finish
    report = execute(engine(db, Failing(answers={"bad": broken})), 2)
    # then: the good one is recorded; the bad one failed (unknown), charged what it held: its call was made
    ends = {r.task.id: (r.task.status, r.outcome.error_code, r.outcome.charge_held) for r in report.runs}
    assert ends == {good.id: (TaskStatus.SUCCEEDED, None, False), bad.id: (TaskStatus.FAILED, "unknown", True)}


@pytest.mark.parametrize("retry_after", [1e12, math.inf, -5.0, math.nan, 3600.0])
def test_a_429s_pause_is_clamped_and_an_absurd_retry_after_loses_nothing(
    db: ConnectionProvider, retry_after: float
) -> None:
    # given: a provider that answers one task 429 with a wait of 1e12 s, infinity, a negative one, NaN, an hour
    clock, repo = Clock(), PostgresTaskRepository(db)
    limited = submit(repo, {"prompt": "limited"}, now=clock.now, model="fake-echo-1")
    other = submit(repo, {"prompt": "other"}, now=clock.now, model="fake-echo-1")
    model = Failing({"limited": AiError("rate_limit", "HTTP 429", retry_after_s=retry_after)}, once=True)
    # when: both end in one finish
    report = execute(engine(db, model, clock=clock, max_pause_s=300), 2)
    # then: nothing raised; the other run's outcome was kept; the model is paused for at most AI_MAX_PAUSE_SECONDS
    ends = {(r.task.id, r.attempt_no): r for r in report.runs}
    assert ends[other.id, 1].task.status is TaskStatus.SUCCEEDED
    assert ends[limited.id, 1].task.status is TaskStatus.FAILED
    pause = ends[limited.id, 1].outcome.pause_until
    assert clock.now <= pause <= clock.now + timedelta(seconds=300)
    paused = db().execute("SELECT max(paused_until) AS until FROM model_limits").fetchone()["until"]
    assert paused == pause


@pytest.mark.parametrize("code", ["quota", "auth"])
def test_quota_and_auth_errors_pause_the_model_instead_of_dead_lettering_the_backlog(
    db: ConnectionProvider, code: str
) -> None:
    # given: the deployment's key is out of credit (or was rotated): the first call fails so, then it works again
    clock, repo = Clock(), PostgresTaskRepository(db)
    first = submit(repo, {"prompt": "first"}, now=clock.now - timedelta(seconds=1), model="fake-echo-1")
    backlog = [submit(repo, {"prompt": f"p{i}"}, now=clock.now, model="fake-echo-1") for i in range(3)]
    model = Failing({"first": AiError(code, "HTTP 401 (or 429 insufficient_quota)")}, once=True)
    run = engine(db, model, clock=clock, account_pause_s=300)
    # when: it fails
    [failed] = execute(run, 1).runs
    # then: retried after the pause, which holds every other call of the model: the backlog spends no attempt
    assert (failed.task.status, failed.outcome.error_code) == (TaskStatus.FAILED, code)
    assert failed.task.available_at == failed.outcome.pause_until == clock.now + timedelta(seconds=300)
    assert execute(run, 4).runs == []
    assert {repo.get(T, t.id).attempt_count for t in backlog} == {0}
    # and once it is over, everything runs
    clock.advance(300.001)
    done = execute(run, 4).runs
    assert {r.task.id for r in done} == {first.id, *(t.id for t in backlog)}
    assert {r.task.status for r in done} == {TaskStatus.SUCCEEDED}


BILLED = {"timeout", "connection", "server_error", "overloaded", "invalid_output", "unknown"}


@pytest.mark.parametrize("code", sorted(ERROR_CLASSES))
def test_an_error_without_usage_is_charged_its_hold_unless_it_is_known_free(db: ConnectionProvider, code: str) -> None:
    submit(PostgresTaskRepository(db), {"prompt": "p"}, model="fake-echo-1")
    [run] = execute(engine(db, Failing({"p": AiError(code, "it failed")}))).runs
    assert (run.outcome.error_code, run.outcome.cost, run.outcome.charge_held) == (code, None, code in BILLED)


def test_an_answer_of_a_renamed_model_is_priced_as_the_model_it_was_asked_for(
    db: ConnectionProvider, openai_stub: OpenAiStub
) -> None:
    # given: a tenant with a budget, and a compatible server that answers as a name with no price (review §3a)
    from aitasks.application.tasks import NewTask
    from tests.integration.conftest import create_task

    limits = PostgresLimitsRepository(db)
    limits.set_monthly_budget(T, Decimal("1"), now=datetime.now(UTC))
    task = create_task(db, Dispatcher(InMemoryWorkQueue()))(
        T, NewTask(type="chat", payload={"prompt": "p", "model": "gpt-4o-mini"})
    )
    openai_stub.enqueue(ok("an answer", model="meta-llama/Llama-3.1-8B-Instruct"))
    provider = OpenAiProvider(api_key="sk-test", base_url=openai_stub.base_url)
    # when
    [run] = execute(engine(db, provider)).runs
    # then: the attempt is priced as gpt-4o-mini (what its hold was priced on), and that is what the month spent
    usage = Usage(tokens_in=42, tokens_out=7, cached_tokens=10)
    expected = prices_of(db).cost("gpt-4o-mini", usage)
    assert expected is not None and expected > 0
    assert (run.outcome.model, run.outcome.cost, run.outcome.charge_held) == (
        "meta-llama/Llama-3.1-8B-Instruct",
        expected,
        False,
    )
    assert [a["cost"] for a in attempts(db, task.id)] == [expected]
    [spend] = db().execute("SELECT spent_usd, reserved_usd FROM tenant_spend").fetchall()
    assert (spend["spent_usd"], spend["reserved_usd"]) == (expected, 0)


def test_an_answer_that_cannot_be_priced_is_charged_its_hold(db: ConnectionProvider) -> None:
    submit(PostgresTaskRepository(db), {"prompt": "p"}, model="a-model-with-no-price")
    [run] = execute(engine(db)).runs
    assert (run.task.status, run.outcome.cost, run.outcome.charge_held) == (TaskStatus.SUCCEEDED, None, True)


class TimedQueue(InMemoryWorkQueue):
    """SQS, recording when each wake-up was sent."""

    def __init__(self) -> None:
        super().__init__()
        self.sent_at: list[tuple[UUID | None, float]] = []

    def send(self, wake: WakeUp, *, delay_s: int = 0) -> None:
        super().send(wake, delay_s=delay_s)
        self.sent_at.append((wake.task_id, time.monotonic()))


def test_a_slot_freed_after_the_last_possible_claim_is_handed_over_when_it_frees(db: ConnectionProvider) -> None:
    # given: tenant A capped at one run with two tasks, tenant B with a slow one; past its first claim the invocation
    # has too little time left to start another call (review §8a)
    repo, wakeups = PostgresTaskRepository(db), TimedQueue()
    PostgresLimitsRepository(db).set_max_concurrency(T, 1, now=datetime.now(UTC))
    submit(repo, {"prompt": "a1", "params": {"fake": {"latencyMs": 100}}})
    a2 = submit(repo, {"prompt": "a2"})
    submit(repo, {"prompt": "b", "params": {"fake": {"latencyMs": 2_000}}}, tenant="tenant-b")
    left = itertools.chain([300.0], itertools.repeat(5.0))
    # when
    started = time.monotonic()
    report = engine(db, queue_=wakeups)(deliveries(2), invocation_id="inv", remaining_s=lambda: next(left))
    # then: A's next task was woken when A's run ended, not when the invocation's last run (B's) did
    assert len(report.runs) == 2
    [(woken, at)] = wakeups.sent_at
    assert woken == a2.id
    assert at - started < 1.5


class FakeTime:
    """The sweeper's clocks, moved by its own sleep."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)
        self.mono = 0.0
        self.slept: list[float] = []

    def clock(self) -> datetime:
        return self.now

    def monotonic(self) -> float:
        return self.mono

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.mono += seconds
        self.now += timedelta(seconds=seconds)


class Watched(PostgresTaskRepository):
    """Records when (on the sweeper's clock) runs were closed, and how often lost wake-ups were looked for."""

    def __init__(self, db: ConnectionProvider, time_: FakeTime) -> None:
        super().__init__(db)
        self.time = time_
        self.closed_at: list[tuple[UUID, float]] = []
        self.redispatches = 0

    def abandon_expired(self, *args: Any, **kwargs: Any) -> Any:
        closed = super().abandon_expired(*args, **kwargs)
        self.closed_at += [(task.id, self.time.mono) for task in closed]
        return closed

    def redispatch_due(self, *args: Any, **kwargs: Any) -> Any:
        self.redispatches += 1
        return super().redispatch_due(*args, **kwargs)


def test_a_killed_executors_work_runs_again_within_40_s(db: ConnectionProvider) -> None:
    # given: an executor killed mid-call just after a beat: its run's 20 s lease ends 20 s into the sweeper's minute
    fake = FakeTime()
    repo, queue_ = Watched(db, fake), InMemoryWorkQueue()
    task = submit(repo, {"prompt": "p"}, now=fake.now)
    repo.claim_due(limit=1, locked_by="killed", lease_until=fake.now + timedelta(seconds=20), now=fake.now)
    sweep = Sweep(
        repo,
        Dispatcher(queue_),
        clock=fake.clock,
        watch_s=50,
        lease_every_s=10,
        sleep=fake.sleep,
        monotonic=fake.monotonic,
    )
    # when: the sweeper's invocation (90 s timeout) watches the leases
    report = sweep(remaining_s=lambda: 90 - fake.mono)
    # then: the run was closed 10 s after its lease ended at most, its task woken at once; and the run again
    assert report.leases_freed == 1
    [(closed, at)] = repo.closed_at
    assert closed == task.id and 20 < at <= 30
    assert [m.task_id for m in queue_.sent] == [task.id]
    # the leases were looked at every 10 s for 50 s, and ended before the next minute's sweep; the rest ran once
    assert fake.slept == [10.0] * 5
    assert repo.redispatches == 1
    fake.now += timedelta(seconds=1)  # the wake-up's delivery and a claim
    [again] = execute(engine(db, clock=fake.clock)).runs
    assert (again.task.id, again.attempt_no, again.task.status) == (task.id, 2, TaskStatus.SUCCEEDED)


def test_the_sweeper_watches_only_while_its_invocation_has_time_for_a_pass(db: ConnectionProvider) -> None:
    fake = FakeTime()
    sweep = Sweep(
        Watched(db, fake),
        Dispatcher(InMemoryWorkQueue()),
        clock=fake.clock,
        watch_s=50,
        lease_every_s=10,
        sleep=fake.sleep,
        monotonic=fake.monotonic,
    )
    sweep(remaining_s=lambda: 40 - fake.mono)  # 40 s left at its start: a pass starts with 15 s left at least
    assert fake.slept == [10.0, 10.0]
    assert Sweep(Watched(db, fake), Dispatcher(InMemoryWorkQueue()), sleep=fake.sleep)().leases_freed == 0
    assert fake.slept == [10.0, 10.0]  # without watch_s: one look, no sleep


def test_a_rate_limited_models_wake_up_carries_the_slots_its_room_holds_and_its_invocation_runs_them_at_once(
    db,
) -> None:
    # given: 12 tasks of a model whose tpm holds 10 of their calls a minute; each call takes a second
    from aitasks.adapters.postgres import PostgresModelRepository
    from aitasks.application.tasks import NewTask
    from tests.integration.conftest import create_task

    repo, wakeups = PostgresTaskRepository(db), InMemoryWorkQueue()
    make = create_task(db, Dispatcher(InMemoryWorkQueue()))
    slow = {"model": "fake-echo-1", "params": {"fake": {"latencyMs": 1000}}}
    ids = [make(TenantId(T), NewTask(type="chat", payload={"prompt": f"p{i}", **slow})).id for i in range(12)]
    rate = repo.get_by_id(ids[0]).rate_tokens
    PostgresModelRepository(db).set_limits("fake-echo-1", rpm=None, tpm=10 * rate, now=datetime.now(UTC))
    # when: an invocation of one wake-up claims its one slot (and has no time to claim again)
    first = engine(db, queue_=wakeups)
    soon = time.monotonic() + 0.5  # the calls take a second: past this, no new call could finish in time
    report = first(deliveries(1)[:1], invocation_id="inv-1", remaining_s=lambda: 300 if time.monotonic() < soon else 5)
    assert report.claimed == 1
    # then: its claim saw room for 9 more calls and asked for them in one wake-up, now
    asked = [m.wake for m in wakeups.sent if m.wake.slots]
    assert [(w.slots, w.at is not None) for w in asked][:1] == [(9, True)]
    # and the invocation that wake-up starts runs 9 calls at once (their attempts start together)
    soon = time.monotonic() + 0.5
    second = engine(db)(
        [Delivery("m", "rh", asked[0])],
        invocation_id="inv-2",
        remaining_s=lambda: 300 if time.monotonic() < soon else 5,
    )
    assert second.claimed == 9
    starts = sorted(
        r["started_at"]
        for r in db().execute("SELECT started_at FROM task_attempts WHERE task_id = ANY(%s)", (ids,)).fetchall()
    )
    assert starts[-1] - starts[1] < timedelta(seconds=0.5)  # one claim of nine, not one call after another
