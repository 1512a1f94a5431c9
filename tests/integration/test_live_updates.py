"""Live updates on PostgreSQL, side by side with the in-memory fakes (so they cannot drift): single-use tickets,
connections per tenant, a task's state history, and the pruning of what is left behind."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest

from aitasks.adapters.memory import InMemoryConnectionRegistry, InMemoryTaskRepository, InMemoryTicketStore
from aitasks.adapters.postgres import (
    PostgresConnectionRegistry,
    PostgresRetention,
    PostgresTaskRepository,
    PostgresTicketStore,
)
from aitasks.application.live import IssueTicket, RedeemTicket
from aitasks.application.ports import Artifact, RunOutcome
from aitasks.application.tasks import GetHistory
from aitasks.domain.errors import TaskNotFoundError, UnauthorizedError
from aitasks.domain.task import Task, TaskStatus, TenantId

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
A, B = TenantId("tenant-a"), TenantId("tenant-b")


@pytest.fixture(params=["memory", "postgres"])
def tickets(request: pytest.FixtureRequest) -> Any:
    return InMemoryTicketStore() if request.param == "memory" else PostgresTicketStore(request.getfixturevalue("db"))


@pytest.fixture(params=["memory", "postgres"])
def connections(request: pytest.FixtureRequest) -> Any:
    if request.param == "memory":
        return InMemoryConnectionRegistry()
    return PostgresConnectionRegistry(request.getfixturevalue("db"))


@pytest.fixture(params=["memory", "postgres"])
def tasks(request: pytest.FixtureRequest) -> Any:
    return (
        InMemoryTaskRepository() if request.param == "memory" else PostgresTaskRepository(request.getfixturevalue("db"))
    )


def test_a_ticket_opens_one_connection_for_its_tenant_within_its_minute(tickets) -> None:
    issued = IssueTicket(tickets, clock=lambda: NOW)(A)
    assert issued.value.startswith("wst_") and issued.expires_at == NOW + timedelta(seconds=60)
    redeem = RedeemTicket(tickets, clock=lambda: NOW + timedelta(seconds=59))
    assert redeem(issued.value) == A
    with pytest.raises(UnauthorizedError):
        redeem(issued.value)  # used up
    late = IssueTicket(tickets, clock=lambda: NOW)(A)
    with pytest.raises(UnauthorizedError):
        RedeemTicket(tickets, clock=lambda: NOW + timedelta(seconds=60))(late.value)
    for wrong in (None, "", "wst_never-issued", "ait_an-api-key-is-not-a-ticket"):
        with pytest.raises(UnauthorizedError):
            redeem(wrong)


def test_connections_are_listed_per_tenant_and_removed_once(connections) -> None:
    connections.add("c1", A, now=NOW)
    connections.add("c2", B, now=NOW)
    connections.add("c3", A, now=NOW + timedelta(seconds=1))
    assert connections.of_tenant(A) == ["c1", "c3"]
    assert connections.of_tenant(B) == ["c2"]
    assert connections.of_tenant(TenantId("nobody")) == []
    assert connections.remove("c1") is True
    assert connections.remove("c1") is False
    assert connections.of_tenant(A) == ["c3"]


def test_a_tasks_history_is_its_events_in_order_and_only_its_tenants(tasks) -> None:
    task = tasks.add(Task.submit(tenant_id=A, type="chat", payload={"prompt": "hi"}, now=NOW))
    later = NOW + timedelta(seconds=2)
    tasks.claim(task.id, locked_by="x", lease_until=later + timedelta(minutes=2), now=later)
    outcome = RunOutcome(TaskStatus.SUCCEEDED, "succeeded", model="m", artifact=Artifact("text", "hello"))
    tasks.finish(task.id, outcome, locked_by="x", attempt_no=1, now=later + timedelta(seconds=1))

    history = GetHistory(tasks)(A, task.id)
    assert [(e.event_type, e.status, e.attempt_no) for e in history] == [
        ("task.created", "created", 0),
        ("task.queued", "queued", 0),
        ("task.started", "running", 1),
        ("task.succeeded", "succeeded", 1),
    ]
    assert history[0].occurred_at == NOW and len({e.id for e in history}) == 4
    with pytest.raises(TaskNotFoundError):
        GetHistory(tasks)(B, task.id)  # another tenant's task is not found
    with pytest.raises(TaskNotFoundError):
        GetHistory(tasks)(A, uuid4())


def test_retention_prunes_expired_tickets_and_connections_older_than_any_live_one(db) -> None:
    tickets, connections, retention = PostgresTicketStore(db), PostgresConnectionRegistry(db), PostgresRetention(db)
    IssueTicket(tickets, clock=lambda: NOW - timedelta(minutes=5))(A)
    fresh = IssueTicket(tickets, clock=lambda: NOW)(A)
    connections.add("old", A, now=NOW - timedelta(hours=3))
    connections.add("new", A, now=NOW - timedelta(minutes=5))
    assert retention.prune_expired_tickets(now=NOW, limit=10) == 1
    assert retention.prune_stale_connections(cutoff=NOW - timedelta(hours=2, minutes=15), limit=10) == 1
    assert connections.of_tenant(A) == ["new"]
    assert RedeemTicket(tickets, clock=lambda: NOW)(fresh.value) == A
