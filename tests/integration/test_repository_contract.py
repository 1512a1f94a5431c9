"""One set of cases for the Postgres repository and the in-memory fake, so the fake cannot drift."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from uuid import UUID, uuid4

import psycopg
import pytest

from aitasks.adapters.memory import InMemoryTaskRepository
from aitasks.adapters.postgres import PostgresTaskRepository
from aitasks.application.ports import Artifact, RunOutcome
from aitasks.domain.errors import IdempotencyKeyTakenError
from aitasks.domain.task import Task, TaskStatus, TenantId

if TYPE_CHECKING:
    from collections.abc import Callable

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LEASE = NOW + timedelta(minutes=2)
A, B = TenantId("tenant-a"), TenantId("tenant-b")


@dataclass
class Subject:
    repo: Any
    events: Callable[[UUID], list[tuple[str, int]]]
    attempts: Callable[[UUID], list[tuple[int, str]]]


@pytest.fixture(params=["memory", "postgres"])
def subject(request: pytest.FixtureRequest) -> Subject:
    if request.param == "memory":
        fake = InMemoryTaskRepository()
        return Subject(
            fake,
            lambda tid: [(e.event_type, e.attempt_no) for e in fake.events if e.task_id == tid],
            lambda tid: [(a.attempt_no, a.status) for a in fake.attempts_log if a.task_id == tid],
        )
    db = request.getfixturevalue("db")

    def events(tid: UUID) -> list[tuple[str, int]]:
        rows = db().execute(
            "SELECT event_type, (payload->>'attemptNo')::int AS n FROM outbox_messages WHERE task_id = %s"
            " ORDER BY occurred_at, (payload->>'attemptNo')::int, array_position(ARRAY['task.created',"
            " 'task.queued', 'task.started', 'task.failed', 'task.succeeded', 'task.cancelled',"
            " 'task.dead_lettered'], event_type)",
            (tid,),
        )
        return [(r["event_type"], r["n"]) for r in rows]

    def attempts(tid: UUID) -> list[tuple[int, str]]:
        rows = db().execute("SELECT attempt_no, status FROM task_attempts WHERE task_id = %s ORDER BY 1", (tid,))
        return [(r["attempt_no"], r["status"]) for r in rows]

    return Subject(PostgresTaskRepository(db), events, attempts)


def submit(tenant: TenantId = A, **kwargs: Any) -> Task:
    return Task.submit(
        tenant_id=tenant, type="chat", payload={"prompt": "hello", "context": {"k": [1]}}, now=NOW, **kwargs
    )


def test_add_then_get_round_trips_and_announces_created_and_queued(subject: Subject) -> None:
    task = submit(priority=2, max_attempts=5, scheduled_at=NOW + timedelta(hours=1), idempotency_key="k1")
    stored = subject.repo.add(task)
    assert stored == task
    assert subject.repo.get(A, task.id) == task
    assert subject.events(task.id) == [("task.created", 0), ("task.queued", 0)]


def test_another_tenant_never_sees_the_task(subject: Subject) -> None:
    task = subject.repo.add(submit())
    assert subject.repo.get(B, task.id) is None
    assert subject.repo.get(A, uuid4()) is None


def test_a_claim_leases_the_task_opens_attempt_one_and_says_started(subject: Subject) -> None:
    task = subject.repo.add(submit())
    claimed = subject.repo.claim(task.id, locked_by="run-1", lease_until=LEASE, now=NOW)
    assert claimed is not None
    assert (claimed.status, claimed.locked_by, claimed.locked_until, claimed.attempt_count) == (
        TaskStatus.RUNNING,
        "run-1",
        LEASE,
        1,
    )
    assert subject.attempts(task.id) == [(1, "running")]
    assert subject.events(task.id)[-1] == ("task.started", 1)


def test_a_second_claim_of_the_same_task_gets_nothing(subject: Subject) -> None:
    task = subject.repo.add(submit())
    assert subject.repo.claim(task.id, locked_by="run-1", lease_until=LEASE, now=NOW)
    assert subject.repo.claim(task.id, locked_by="run-2", lease_until=LEASE, now=NOW) is None
    assert subject.repo.get(A, task.id).locked_by == "run-1"
    assert subject.attempts(task.id) == [(1, "running")]


def test_a_task_scheduled_later_or_unknown_cannot_be_claimed(subject: Subject) -> None:
    later = subject.repo.add(submit(scheduled_at=NOW + timedelta(minutes=20)))
    assert subject.repo.claim(later.id, locked_by="r", lease_until=LEASE, now=NOW) is None
    assert subject.repo.claim(uuid4(), locked_by="r", lease_until=LEASE, now=NOW) is None
    due = subject.repo.claim(later.id, locked_by="r", lease_until=LEASE, now=NOW + timedelta(minutes=21))
    assert due is not None


SUCCESS = RunOutcome(
    TaskStatus.SUCCEEDED,
    "succeeded",
    model="fake-echo-1",
    tokens_in=7,
    tokens_out=3,
    cost=Decimal("0.00000150"),
    latency_ms=12,
    artifact=Artifact("text", "hi"),
)


def test_finishing_is_fenced_by_the_lease_holder_and_the_attempt(subject: Subject) -> None:
    task = subject.repo.add(submit())
    subject.repo.claim(task.id, locked_by="run-1", lease_until=LEASE, now=NOW)
    assert subject.repo.finish(task.id, SUCCESS, locked_by="someone-else", attempt_no=1, now=NOW) is None
    assert subject.repo.finish(task.id, SUCCESS, locked_by="run-1", attempt_no=2, now=NOW) is None
    assert subject.repo.get(A, task.id).status is TaskStatus.RUNNING
    done = subject.repo.finish(task.id, SUCCESS, locked_by="run-1", attempt_no=1, now=NOW + timedelta(seconds=3))
    assert done is not None
    assert (done.status, done.locked_by, done.locked_until) == (TaskStatus.SUCCEEDED, None, None)
    assert (done.tokens_in, done.tokens_out, done.cost) == (7, 3, Decimal("0.00000150"))
    assert subject.attempts(task.id) == [(1, "succeeded")]
    assert subject.events(task.id)[-1] == ("task.succeeded", 1)
    # Finished: neither a late finish nor a redelivered message does anything more.
    assert subject.repo.finish(task.id, SUCCESS, locked_by="run-1", attempt_no=1, now=NOW) is None
    assert subject.repo.claim(task.id, locked_by="run-3", lease_until=LEASE, now=NOW) is None
    assert len(subject.events(task.id)) == 4


def test_a_failed_run_waits_for_its_retry_time_and_totals_add_up(subject: Subject) -> None:
    task = subject.repo.add(submit())
    subject.repo.claim(task.id, locked_by="run-1", lease_until=LEASE, now=NOW)
    retry_at = NOW + timedelta(seconds=30)
    failed = RunOutcome(
        TaskStatus.FAILED,
        "failed",
        model="m",
        tokens_in=5,
        tokens_out=0,
        error_code="rate_limit",
        error_detail="slow down",
        available_at=retry_at,
    )
    after = subject.repo.finish(task.id, failed, locked_by="run-1", attempt_no=1, now=NOW)
    assert (after.status, after.last_error, after.available_at) == (
        TaskStatus.FAILED,
        "rate_limit: slow down",
        retry_at,
    )
    assert subject.repo.claim(task.id, locked_by="run-2", lease_until=LEASE, now=NOW) is None  # not due yet
    second = subject.repo.claim(task.id, locked_by="run-2", lease_until=LEASE, now=retry_at)
    assert second.attempt_count == 2
    done = subject.repo.finish(task.id, SUCCESS, locked_by="run-2", attempt_no=2, now=retry_at)
    assert (done.tokens_in, done.tokens_out, done.last_error) == (12, 3, None)
    assert subject.attempts(task.id) == [(1, "failed"), (2, "succeeded")]
    assert [e for e, _ in subject.events(task.id)][-4:] == [
        "task.started",
        "task.failed",
        "task.started",
        "task.succeeded",
    ]


def test_an_expired_lease_is_taken_over_and_the_late_run_changes_nothing(subject: Subject) -> None:
    task = subject.repo.add(submit())
    subject.repo.claim(task.id, locked_by="run-A", lease_until=LEASE, now=NOW)
    assert subject.repo.abandon_expired([task.id], now=LEASE - timedelta(seconds=1)) == []  # still held
    later = LEASE + timedelta(seconds=1)
    assert subject.repo.expired_leases(now=later, limit=10) == [task.id]
    [closed] = subject.repo.abandon_expired([task.id], now=later)
    assert (closed.status, closed.locked_by) == (TaskStatus.FAILED, None)
    taken = subject.repo.claim(task.id, locked_by="run-B", lease_until=later + timedelta(minutes=2), now=later)
    assert taken.attempt_count == 2
    assert subject.repo.finish(task.id, SUCCESS, locked_by="run-A", attempt_no=1, now=later) is None
    assert subject.repo.extend_lease(task.id, locked_by="run-A", attempt_no=1, lease_until=later) is None
    assert (
        subject.repo.finish(task.id, SUCCESS, locked_by="run-B", attempt_no=2, now=later).status is TaskStatus.SUCCEEDED
    )
    assert subject.attempts(task.id) == [(1, "abandoned"), (2, "succeeded")]


def test_a_heartbeat_renews_the_lease_and_reports_a_cancel_request(subject: Subject) -> None:
    task = subject.repo.add(submit())
    subject.repo.claim(task.id, locked_by="run-1", lease_until=LEASE, now=NOW)
    renewed = LEASE + timedelta(minutes=1)
    assert (
        subject.repo.extend_lease(task.id, locked_by="run-1", attempt_no=1, lease_until=renewed).cancel_requested
        is False
    )
    assert subject.repo.get(A, task.id).locked_until == renewed
    subject.repo.request_cancel(A, task.id, now=NOW)
    assert subject.repo.extend_lease(task.id, locked_by="run-1", attempt_no=1, lease_until=renewed).cancel_requested


def test_the_dlq_dead_letters_an_unfinished_task_once(subject: Subject) -> None:
    task = subject.repo.add(submit())
    subject.repo.claim(task.id, locked_by="run-1", lease_until=LEASE, now=NOW)
    after = LEASE + timedelta(seconds=1)  # the run died: its lease ran out
    dead = subject.repo.dead_letter(task.id, attempt_no=1, reason="dlq: 5 receives", now=after)
    assert (dead.status, dead.last_error, dead.locked_by) == (TaskStatus.DEAD_LETTER, "dlq: 5 receives", None)
    assert subject.attempts(task.id) == [(1, "abandoned")]
    assert subject.repo.dead_letter(task.id, attempt_no=1, reason="again", now=after) is None
    assert subject.events(task.id)[-1][0] == "task.dead_lettered"


def test_a_stale_dlq_message_does_not_kill_a_live_or_later_run(subject: Subject) -> None:
    task = subject.repo.add(submit())
    subject.repo.claim(task.id, locked_by="run-1", lease_until=LEASE, now=NOW)
    # A live run holds the task: an old message's arrival on the DLQ must not end it.
    assert subject.repo.dead_letter(task.id, attempt_no=1, reason="dlq", now=NOW) is None
    failed = RunOutcome(TaskStatus.FAILED, "failed", error_code="timeout", available_at=NOW + timedelta(minutes=1))
    subject.repo.finish(task.id, failed, locked_by="run-1", attempt_no=1, now=NOW)
    # Attempt 1 happened and the task waits for attempt 2: the DLQ message for attempt 1 is stale.
    assert subject.repo.dead_letter(task.id, attempt_no=1, reason="dlq", now=NOW) is None
    assert subject.repo.get(A, task.id).status is TaskStatus.FAILED
    # The message for attempt 2 failing for good does end it.
    assert subject.repo.dead_letter(task.id, attempt_no=2, reason="dlq", now=NOW).status is TaskStatus.DEAD_LETTER


def test_a_failure_after_a_cancel_request_ends_cancelled(subject: Subject) -> None:
    task = subject.repo.add(submit())
    subject.repo.claim(task.id, locked_by="run-1", lease_until=LEASE, now=NOW)
    subject.repo.request_cancel(A, task.id, now=NOW)
    failed = RunOutcome(TaskStatus.FAILED, "failed", error_code="rate_limit", available_at=NOW + timedelta(minutes=1))
    done = subject.repo.finish(task.id, failed, locked_by="run-1", attempt_no=1, now=NOW)
    assert done.status is TaskStatus.CANCELLED  # it would never be claimed again as failed
    assert subject.attempts(task.id) == [(1, "failed")]
    assert subject.events(task.id)[-1] == ("task.cancelled", 1)


def test_one_idempotency_key_per_tenant(subject: Subject) -> None:
    subject.repo.add(submit(idempotency_key="same"))
    subject.repo.add(submit(tenant=B, idempotency_key="same"))  # another tenant may use it
    with pytest.raises(IdempotencyKeyTakenError):
        subject.repo.add(submit(idempotency_key="same"))


def test_the_database_allows_one_running_attempt_per_task(db) -> None:
    repo = PostgresTaskRepository(db)
    task = repo.add(submit())
    repo.claim(task.id, locked_by="run-1", lease_until=LEASE, now=NOW)
    with pytest.raises(psycopg.errors.UniqueViolation, match="task_attempts_one_running_idx"):
        db().execute(
            "INSERT INTO task_attempts (id, task_id, attempt_no, status, started_at) VALUES (%s, %s, 2, 'running', %s)",
            (uuid4(), task.id, NOW),
        )
