"""The claim statement's rules, on PostgreSQL (they live in SQL only: migrations/0008_engine.sql): fair share across
tenants, then priority, then age; each tenant's cap, exactly, however many executors claim at once; waitingFor."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from aitasks.adapters.postgres import (
    ConnectionProvider,
    PostgresLimitsRepository,
    PostgresTaskRepository,
)
from aitasks.application.ports import FinishedRun, RunOutcome
from aitasks.domain.task import Task, TaskStatus, TenantId

if TYPE_CHECKING:
    from collections.abc import Iterable

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
LEASE = NOW + timedelta(minutes=1)
DONE = RunOutcome(TaskStatus.SUCCEEDED, "succeeded")


def add(repo: PostgresTaskRepository, tenant: str, n: int = 1, *, priority: int = 5, at: datetime = NOW) -> list[Task]:
    return [
        repo.add(
            Task.submit(
                tenant_id=TenantId(tenant),
                type="chat",
                payload={"prompt": f"{tenant} {priority} {i}"},
                now=at,
                priority=priority,
            )
        )
        for i in range(n)
    ]


def claim(repo: PostgresTaskRepository, limit: int, *, by: str = "run", now: datetime = NOW) -> list[Task]:
    return repo.claim_due(limit=limit, locked_by=by, lease_until=now + timedelta(minutes=1), now=now)


def finish(repo: PostgresTaskRepository, tasks: Iterable[Task], *, by: str = "run") -> list[Task]:
    return repo.finish_runs([FinishedRun(t.id, t.attempt_count, DONE) for t in tasks], locked_by=by, now=NOW)


def tenants(tasks: Iterable[Task]) -> Counter[str]:
    return Counter(t.tenant_id for t in tasks)


def test_a_claim_starts_runs_with_their_attempts_and_events(db) -> None:
    repo = PostgresTaskRepository(db)
    [task] = add(repo, "a")
    [claimed] = claim(repo, 5)
    assert (claimed.id, claimed.status, claimed.attempt_count, claimed.locked_by) == (task.id, "running", 1, "run")
    assert claimed.locked_until == LEASE
    attempt = db().execute("SELECT attempt_no, status FROM task_attempts WHERE task_id = %s", (task.id,)).fetchone()
    assert attempt == {"attempt_no": 1, "status": "running"}
    events = db().execute("SELECT event_type FROM outbox_messages WHERE task_id = %s ORDER BY seq", (task.id,))
    assert [e["event_type"] for e in events] == ["task.created", "task.queued", "task.started"]
    assert claim(repo, 5) == []  # nothing else is due


def test_only_due_tasks_that_are_not_cancelled_are_claimed(db) -> None:
    repo = PostgresTaskRepository(db)
    [later] = add(repo, "a", at=NOW + timedelta(minutes=20))
    [cancelled] = add(repo, "a")
    repo.cancel(TenantId("a"), cancelled.id, now=NOW)
    assert claim(repo, 5) == []
    assert [t.id for t in claim(repo, 5, now=NOW + timedelta(minutes=21))] == [later.id]


def test_fair_share_a_small_tenant_is_not_held_back_by_a_big_backlog(db) -> None:
    # given: tenant A has 200 due tasks, older than tenant B's 2
    repo = PostgresTaskRepository(db)
    add(repo, "A", 200, at=NOW - timedelta(minutes=5))
    add(repo, "B", 2)
    # when: the first claim after B's tasks are due
    first = claim(repo, 10)
    # then: both of B's are in it
    assert tenants(first) == {"A": 8, "B": 2}


def test_fair_share_serves_the_tenants_with_fewest_runs_first(db) -> None:
    # given: A and B have two runs each, C none (it was paused); each has plenty of due work
    repo = PostgresTaskRepository(db)
    for tenant in "ABC":
        add(repo, tenant, 10)
    PostgresLimitsRepository(db).set_max_concurrency(TenantId("C"), 0, now=NOW)  # C is paused while A and B start
    claimed = claim(repo, 4)
    assert tenants(claimed) == {"A": 2, "B": 2}
    PostgresLimitsRepository(db).set_max_concurrency(TenantId("C"), None, now=NOW)
    # when: six slots
    second = claim(repo, 6)
    # then: the levels even out - C catches up to 2 first, then all three climb together (ten runs: 3, 3, 4)
    got = tenants(second)
    assert got["C"] >= 3
    assert sorted((tenants(claimed) + got).values()) == [3, 3, 4]


def test_priority_orders_a_tenants_work_and_the_most_urgent_takes_the_next_free_slot(db) -> None:
    # given: a tenant capped at 2, a backlog of 40 priority-9 tasks, two of them running
    repo = PostgresTaskRepository(db)
    PostgresLimitsRepository(db).set_max_concurrency(TenantId("A"), 2, now=NOW)
    add(repo, "A", 40, priority=9, at=NOW - timedelta(minutes=1))
    running = claim(repo, 10)
    assert len(running) == 2
    [urgent] = add(repo, "A", priority=0)
    assert claim(repo, 10) == []  # at its cap
    # when: a slot frees
    finish(repo, running[:1])
    # then: the urgent task takes it, ahead of 38 older ones
    assert [t.id for t in claim(repo, 10)] == [urgent.id]


def test_among_equals_the_task_due_longest_goes_first(db) -> None:
    repo = PostgresTaskRepository(db)
    [newer] = add(repo, "A", at=NOW - timedelta(seconds=1))
    [older] = add(repo, "A", at=NOW - timedelta(seconds=30))
    assert [t.id for t in claim(repo, 1)] == [older.id]
    assert [t.id for t in claim(repo, 1)] == [newer.id]


def test_a_tenants_cap_holds_and_a_finished_run_frees_its_slot(db) -> None:
    repo, limits = PostgresTaskRepository(db), PostgresLimitsRepository(db)
    limits.set_max_concurrency(TenantId("A"), 3, now=NOW)
    add(repo, "A", 10)
    first = claim(repo, 10)
    assert len(first) == 3
    assert claim(repo, 10) == []
    finish(repo, first[:2])
    assert len(claim(repo, 10)) == 2
    assert limits.limits(TenantId("A"), now=NOW).running == 3


def test_tier_defaults_and_overrides(db) -> None:
    limits = PostgresLimitsRepository(db)
    db().execute(
        "INSERT INTO tenants (tenant_id, tier, usage_key_id, usage_key, updated_at)"
        " VALUES ('free-one', 'free', 'k1', 'v1', now()), ('pro-one', 'pro', 'k2', 'v2', now())"
    )
    caps = [limits.limits(TenantId(t), now=NOW).max_concurrency for t in ("free-one", "pro-one", "no-tier")]
    assert caps == [2, 50, 10]
    limits.set_max_concurrency(TenantId("pro-one"), 7, now=NOW)
    pro = limits.limits(TenantId("pro-one"), now=NOW)
    assert (pro.max_concurrency, pro.max_concurrency_override, pro.tier) == (7, 7, "pro")
    limits.set_max_concurrency(TenantId("pro-one"), None, now=NOW)  # back to the tier's
    assert limits.limits(TenantId("pro-one"), now=NOW).max_concurrency == 50


def test_a_cap_of_zero_pauses_a_tenant_and_lifting_it_releases_the_work(db) -> None:
    repo, limits = PostgresTaskRepository(db), PostgresLimitsRepository(db)
    limits.set_max_concurrency(TenantId("A"), 0, now=NOW)
    [task] = add(repo, "A")
    add(repo, "B")
    assert tenants(claim(repo, 10)) == {"B": 1}
    assert repo.get(TenantId("A"), task.id).waiting_for == "concurrency"
    limits.set_max_concurrency(TenantId("A"), 1, now=NOW)
    assert [t.id for t in claim(repo, 10)] == [task.id]


def test_a_cap_lowered_below_the_running_count_claims_nothing_until_it_is_under(db) -> None:
    repo, limits = PostgresTaskRepository(db), PostgresLimitsRepository(db)
    add(repo, "A", 6)
    running = claim(repo, 4)
    limits.set_max_concurrency(TenantId("A"), 2, now=NOW)
    assert claim(repo, 10) == []
    finish(repo, running[:2])
    assert claim(repo, 10) == []  # 2 running: at the cap
    finish(repo, running[2:3])
    assert len(claim(repo, 10)) == 1


def test_a_claim_waits_for_the_claim_in_progress_and_counts_its_runs(db, database_url: str) -> None:
    # given: tenant A capped at 3 with 10 due tasks, and a claim of 3 still in its transaction on one connection
    repo = PostgresTaskRepository(db)
    PostgresLimitsRepository(db).set_max_concurrency(TenantId("A"), 3, now=NOW)
    add(repo, "A", 10)
    first = ConnectionProvider(lambda: database_url)
    conn = first()
    conn.autocommit = False
    assert len(PostgresTaskRepository(first).claim_due(limit=10, locked_by="first", lease_until=LEASE, now=NOW)) == 3
    # when: another executor claims meanwhile
    second: list[Task] = []
    other = threading.Thread(target=lambda: second.extend(claim(PostgresTaskRepository(ConnectionProvider(
        lambda: database_url)), 10, by="second")))  # fmt: skip
    other.start()
    other.join(0.5)
    # then: it waits for the first claim (the gate) instead of filling the cap again from a stale count
    assert other.is_alive()
    conn.commit()
    other.join(10)
    assert second == []
    running = db().execute("SELECT count(*) AS n FROM tasks WHERE status = 'running'").fetchone()["n"]
    assert running == 3
    first.close()


def test_waiting_for_says_why_a_task_is_not_running(db) -> None:
    repo, limits = PostgresTaskRepository(db), PostgresLimitsRepository(db)
    now = datetime.now(UTC)  # waitingFor is derived with the database's clock
    [scheduled] = add(repo, "A", at=now + timedelta(hours=1))
    [ready, held] = add(repo, "A", 2, at=now - timedelta(seconds=1))
    assert [repo.get(TenantId("A"), t.id).waiting_for for t in (scheduled, ready, held)] == ["schedule", None, None]
    limits.set_max_concurrency(TenantId("A"), 1, now=now)
    [running] = claim(repo, 1, now=now)
    waiting = {t.id: t.waiting_for for t in repo.list_tasks(TenantId("A"), _all(), offset=0, limit=10)[0]}
    assert waiting[running.id] is None  # running: not waiting
    assert waiting[scheduled.id] == "schedule"
    other = held if running.id == ready.id else ready
    assert waiting[other.id] == "concurrency"
    failed = RunOutcome(TaskStatus.FAILED, "failed", error_code="server_error", available_at=now + timedelta(minutes=1))
    [after] = repo.finish_runs([FinishedRun(running.id, 1, failed)], locked_by="run", now=now)
    assert repo.get(TenantId("A"), after.id).waiting_for == "retry"


def test_a_finish_by_anyone_but_the_lease_holder_changes_nothing(db) -> None:
    repo = PostgresTaskRepository(db)
    add(repo, "A")
    [task] = claim(repo, 1, by="holder")
    assert repo.finish_runs([FinishedRun(task.id, 1, DONE)], locked_by="someone-else", now=NOW) == []
    assert repo.finish_runs([FinishedRun(task.id, 2, DONE)], locked_by="holder", now=NOW) == []
    [done] = repo.finish_runs([FinishedRun(task.id, 1, DONE)], locked_by="holder", now=NOW)
    assert done.status is TaskStatus.SUCCEEDED
    assert repo.finish_runs([FinishedRun(task.id, 1, DONE)], locked_by="holder", now=NOW) == []  # once only


def test_heartbeat_renews_only_held_leases_and_reports_cancel_requests(db) -> None:
    repo = PostgresTaskRepository(db)
    add(repo, "A", 2)
    first, second = claim(repo, 2)
    repo.request_cancel(TenantId("A"), second.id, now=NOW)
    later = NOW + timedelta(minutes=5)
    leases = repo.extend_leases([(first.id, 1), (second.id, 1)], locked_by="run", lease_until=later)
    assert {k: v.cancel_requested for k, v in leases.items()} == {(first.id, 1): False, (second.id, 1): True}
    assert repo.get(TenantId("A"), first.id).locked_until == later
    assert repo.extend_leases([(first.id, 1)], locked_by="not-the-holder", lease_until=later) == {}


def _all() -> Any:
    from aitasks.application.ports import TaskFilter

    return TaskFilter()


def test_caps_hold_under_churn_claims_finishes_and_urgent_arrivals_at_once(db, database_url: str) -> None:
    # given: 8 executors claiming and finishing in a loop while urgent tasks keep arriving, for about two seconds
    from tests.integration.test_executor import most_at_once

    repo, limits = PostgresTaskRepository(db), PostgresLimitsRepository(db)
    caps = {"A": 4, "B": 2}
    for tenant, cap in caps.items():
        limits.set_max_concurrency(TenantId(tenant), cap, now=NOW)
        add(repo, tenant, 150, priority=9, at=NOW - timedelta(minutes=1))
    stop = threading.Event()

    def executor(n: int) -> None:
        mine = PostgresTaskRepository(ConnectionProvider(lambda: database_url))
        while not stop.is_set():
            now = datetime.now(UTC)
            got = mine.claim_due(limit=3, locked_by=f"exec-{n}", lease_until=now + timedelta(minutes=1), now=now)
            stop.wait(0.002)
            mine.finish_runs([FinishedRun(t.id, t.attempt_count, DONE) for t in got], locked_by=f"exec-{n}", now=now)

    def arrivals() -> None:
        mine = PostgresTaskRepository(ConnectionProvider(lambda: database_url))
        while not stop.is_set():
            for tenant in caps:
                add(mine, tenant, priority=0, at=datetime.now(UTC))
            stop.wait(0.001)

    threads = [threading.Thread(target=executor, args=(n,)) for n in range(8)] + [threading.Thread(target=arrivals)]
    for t in threads:
        t.start()
    stop.wait(2)
    stop.set()
    for t in threads:
        t.join(30)
    # then: from the attempts' start and end times (the database's clock), no tenant ever ran more than its cap
    peaks = most_at_once(db)
    assert all(peaks[tenant] <= cap for tenant, cap in caps.items()), peaks
    ran = db().execute("SELECT count(*) AS n FROM task_attempts").fetchone()["n"]
    assert ran > 100  # it did churn


def test_freed_slots_wake_as_many_tasks_as_were_freed_and_the_cap_admits(db) -> None:
    repo, limits = PostgresTaskRepository(db), PostgresLimitsRepository(db)
    limits.set_max_concurrency(TenantId("A"), 5, now=NOW)
    add(repo, "A", 10, at=NOW - timedelta(minutes=1))
    assert len(claim(repo, 4)) == 4
    later = NOW + timedelta(seconds=5)
    # two slots freed, but the cap has room for one more run only
    [woken] = repo.wake_freed({TenantId("A"): 2}, now=later)
    stamped = db().execute("SELECT dispatched_at FROM tasks WHERE id = %s", (woken.id,)).fetchone()
    assert stamped["dispatched_at"] == later  # the sweeper leaves it alone for its grace period
    assert repo.wake_freed({TenantId("B"): 3}, now=later) == []  # a tenant with nothing due
