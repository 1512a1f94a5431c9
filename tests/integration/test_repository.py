"""The task repository's own rules on PostgreSQL, beyond the claim (test_claim.py) and the executor
(test_executor.py): a task round-trips, stays its tenant's, keeps one idempotency key per tenant and one running
attempt; a finished run releases its lease and adds up its totals; a failed one waits for its retry time; an expired
lease is closed and taken over; a cancel request turns a failure into a cancel."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from uuid import UUID, uuid4

import psycopg
import pytest

from aitasks.adapters.postgres import PostgresTaskRepository
from aitasks.application.ports import Artifact, FinishedRun, RunOutcome
from aitasks.domain.errors import IdempotencyKeyTakenError
from aitasks.domain.task import Task, TaskStatus, TenantId

if TYPE_CHECKING:
    from aitasks.adapters.postgres import ConnectionProvider

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LEASE = NOW + timedelta(minutes=2)
A, B = TenantId("tenant-a"), TenantId("tenant-b")

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


def submit(tenant: TenantId = A, **kwargs: Any) -> Task:
    return Task.submit(
        tenant_id=tenant, type="chat", payload={"prompt": "hello", "context": {"k": [1]}}, now=NOW, **kwargs
    )


def claim(repo: PostgresTaskRepository, *, by: str, now: datetime = NOW, lease_until: datetime = LEASE) -> list[Task]:
    return repo.claim_due(limit=1, locked_by=by, lease_until=lease_until, now=now)


def finish(
    repo: PostgresTaskRepository, task_id: UUID, outcome: RunOutcome, *, by: str, attempt: int, now: datetime = NOW
) -> list[Task]:
    return repo.finish_runs([FinishedRun(task_id, attempt, outcome)], locked_by=by, now=now)


def events(db: ConnectionProvider, task_id: UUID) -> list[tuple[str, int]]:
    rows = db().execute(
        "SELECT event_type, (payload->>'attemptNo')::int AS n FROM outbox_messages WHERE task_id = %s ORDER BY seq",
        (task_id,),
    )
    return [(r["event_type"], r["n"]) for r in rows]


def attempts(db: ConnectionProvider, task_id: UUID) -> list[tuple[int, str]]:
    rows = db().execute("SELECT attempt_no, status FROM task_attempts WHERE task_id = %s ORDER BY 1", (task_id,))
    return [(r["attempt_no"], r["status"]) for r in rows]


def test_add_then_get_round_trips_and_announces_created_and_queued(db) -> None:
    repo = PostgresTaskRepository(db)
    task = submit(priority=2, max_attempts=5, scheduled_at=NOW + timedelta(hours=1), idempotency_key="k1")
    stored = repo.add(task)
    assert stored == task
    assert repo.get(A, task.id) == task
    assert events(db, task.id) == [("task.created", 0), ("task.queued", 0)]


def test_another_tenant_never_sees_the_task(db) -> None:
    repo = PostgresTaskRepository(db)
    task = repo.add(submit())
    assert repo.get(B, task.id) is None
    assert repo.get(A, uuid4()) is None


def test_a_running_task_is_not_claimed_again(db) -> None:
    repo = PostgresTaskRepository(db)
    task = repo.add(submit())
    assert [t.id for t in claim(repo, by="run-1")] == [task.id]
    assert claim(repo, by="run-2") == []
    assert repo.get(A, task.id).locked_by == "run-1"
    assert attempts(db, task.id) == [(1, "running")]


def test_a_finished_run_releases_its_lease_adds_its_totals_and_says_succeeded(db) -> None:
    repo = PostgresTaskRepository(db)
    task = repo.add(submit())
    claim(repo, by="run-1")
    # a finish by another holder, or for another attempt, changes nothing
    assert finish(repo, task.id, SUCCESS, by="someone-else", attempt=1) == []
    assert finish(repo, task.id, SUCCESS, by="run-1", attempt=2) == []
    assert repo.get(A, task.id).status is TaskStatus.RUNNING
    assert attempts(db, task.id) == [(1, "running")]
    [done] = finish(repo, task.id, SUCCESS, by="run-1", attempt=1, now=NOW + timedelta(seconds=3))
    assert (done.status, done.locked_by, done.locked_until) == (TaskStatus.SUCCEEDED, None, None)
    assert (done.tokens_in, done.tokens_out, done.cost) == (7, 3, Decimal("0.00000150"))
    assert attempts(db, task.id) == [(1, "succeeded")]
    assert events(db, task.id)[-1] == ("task.succeeded", 1)
    # Finished: neither a late finish nor another claim does anything more.
    assert finish(repo, task.id, SUCCESS, by="run-1", attempt=1) == []
    assert claim(repo, by="run-3") == []
    assert len(events(db, task.id)) == 4


def test_a_failed_run_waits_for_its_retry_time_and_totals_add_up(db) -> None:
    repo = PostgresTaskRepository(db)
    task = repo.add(submit())
    claim(repo, by="run-1")
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
    [after] = finish(repo, task.id, failed, by="run-1", attempt=1)
    assert (after.status, after.last_error, after.available_at) == (
        TaskStatus.FAILED,
        "rate_limit: slow down",
        retry_at,
    )
    assert claim(repo, by="run-2") == []  # not due yet
    [second] = claim(repo, by="run-2", now=retry_at, lease_until=retry_at + timedelta(minutes=2))
    assert second.attempt_count == 2
    [done] = finish(repo, task.id, SUCCESS, by="run-2", attempt=2, now=retry_at)
    assert (done.tokens_in, done.tokens_out, done.last_error) == (12, 3, None)
    assert attempts(db, task.id) == [(1, "failed"), (2, "succeeded")]
    assert [e for e, _ in events(db, task.id)][-4:] == [
        "task.started",
        "task.failed",
        "task.started",
        "task.succeeded",
    ]


def test_an_expired_lease_is_taken_over_and_the_late_run_changes_nothing(db) -> None:
    repo = PostgresTaskRepository(db)
    task = repo.add(submit())
    claim(repo, by="run-A")
    assert repo.abandon_expired([task.id], now=LEASE - timedelta(seconds=1)) == []  # still held
    later = LEASE + timedelta(seconds=1)
    assert repo.expired_leases(now=later, limit=10) == [task.id]
    [closed] = repo.abandon_expired([task.id], now=later)
    assert (closed.status, closed.locked_by) == (TaskStatus.FAILED, None)
    [taken] = claim(repo, by="run-B", now=later, lease_until=later + timedelta(minutes=2))
    assert (taken.id, taken.attempt_count) == (task.id, 2)
    assert finish(repo, task.id, SUCCESS, by="run-A", attempt=1, now=later) == []
    assert repo.extend_leases([(task.id, 1)], locked_by="run-A", lease_until=later) == {}
    [done] = finish(repo, task.id, SUCCESS, by="run-B", attempt=2, now=later)
    assert done.status is TaskStatus.SUCCEEDED
    assert attempts(db, task.id) == [(1, "abandoned"), (2, "succeeded")]


def test_a_failure_after_a_cancel_request_ends_cancelled(db) -> None:
    repo = PostgresTaskRepository(db)
    task = repo.add(submit())
    claim(repo, by="run-1")
    repo.request_cancel(A, task.id, now=NOW)
    failed = RunOutcome(TaskStatus.FAILED, "failed", error_code="rate_limit", available_at=NOW + timedelta(minutes=1))
    [done] = finish(repo, task.id, failed, by="run-1", attempt=1)
    assert done.status is TaskStatus.CANCELLED  # it would never be claimed again as failed
    assert attempts(db, task.id) == [(1, "failed")]
    assert events(db, task.id)[-1] == ("task.cancelled", 1)


def test_one_idempotency_key_per_tenant(db) -> None:
    repo = PostgresTaskRepository(db)
    repo.add(submit(idempotency_key="same"))
    repo.add(submit(tenant=B, idempotency_key="same"))  # another tenant may use it
    with pytest.raises(IdempotencyKeyTakenError):
        repo.add(submit(idempotency_key="same"))


def test_the_database_allows_one_running_attempt_per_task(db) -> None:
    repo = PostgresTaskRepository(db)
    task = repo.add(submit())
    claim(repo, by="run-1")
    with pytest.raises(psycopg.errors.UniqueViolation, match="task_attempts_one_running_idx"):
        db().execute(
            "INSERT INTO task_attempts (id, task_id, attempt_no, status, started_at) VALUES (%s, %s, 2, 'running', %s)",
            (uuid4(), task.id, NOW),
        )
