"""Live updates on PostgreSQL: single-use tickets, connections per tenant, a task's state history, the pruning of
what is left behind; and the real handlers on them (API Gateway's @connections as a fake): a ticket from the API
opens a connection for its tenant only, the notifier pushes each event to its tenant's connections and to no other
tenant's, and drops the connections API Gateway says are gone."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest

from aitasks.adapters.postgres import (
    PostgresConnectionRegistry,
    PostgresRetention,
    PostgresTaskRepository,
    PostgresTicketStore,
)
from aitasks.application.live import IssueTicket, RedeemTicket
from aitasks.application.ports import Artifact, FinishedRun, RunOutcome
from aitasks.application.tasks import GetHistory
from aitasks.domain.errors import TaskNotFoundError, UnauthorizedError
from aitasks.domain.task import Task, TaskStatus, TenantId
from tests.conftest import load_handler, rest_event, sqs_event
from tests.integration.conftest import WEBSOCKET_URL

if TYPE_CHECKING:
    from aitasks.adapters.postgres import ConnectionProvider
    from tests.support.fakes import InMemoryPusher

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
A, B = TenantId("tenant-a"), TenantId("tenant-b")
CONNECT_ARN = "arn:aws:execute-api:us-east-1:000000000000:ws123/v1/$connect"


def test_a_ticket_opens_one_connection_for_its_tenant_within_its_minute(db) -> None:
    tickets = PostgresTicketStore(db)
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


def test_connections_are_listed_per_tenant_and_removed_once(db) -> None:
    connections = PostgresConnectionRegistry(db)
    connections.add("c1", A, now=NOW)
    connections.add("c2", B, now=NOW)
    connections.add("c3", A, now=NOW + timedelta(seconds=1))
    assert connections.of_tenant(A) == ["c1", "c3"]
    assert connections.of_tenant(B) == ["c2"]
    assert connections.of_tenant(TenantId("nobody")) == []
    assert connections.remove("c1") is True
    assert connections.remove("c1") is False
    assert connections.of_tenant(A) == ["c3"]


def test_a_tasks_history_is_its_events_in_order_and_only_its_tenants(db) -> None:
    tasks = PostgresTaskRepository(db)
    task = tasks.add(Task.submit(tenant_id=A, type="chat", payload={"prompt": "hi"}, now=NOW))
    later = NOW + timedelta(seconds=2)
    [claimed] = tasks.claim_due(limit=1, locked_by="x", lease_until=later + timedelta(minutes=2), now=later)
    assert claimed.id == task.id
    outcome = RunOutcome(TaskStatus.SUCCEEDED, "succeeded", model="m", artifact=Artifact("text", "hello"))
    tasks.finish_runs([FinishedRun(task.id, 1, outcome)], locked_by="x", now=later + timedelta(seconds=1))

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
        GetHistory(tasks)(A, uuid.uuid4())


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


# Through the real handlers.


def bridge_event(tenant: str, status: str = "succeeded", task_id: str | None = None) -> dict[str, Any]:
    detail = {
        "eventId": str(uuid.uuid4()),
        "taskId": task_id or str(uuid.uuid4()),
        "tenantId": tenant,
        "type": "chat",
        "status": status,
        "attemptNo": 1,
        "occurredAt": "2026-11-24T21:31:05.435882Z",
    }
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": f"task.{status}",
        "source": "aitasks",
        "account": "000000000000",
        "time": "2026-11-24T21:31:05Z",
        "region": "us-east-1",
        "resources": [],
        "detail": detail,
    }


def ws_event(route: str, connection_id: str, tenant: str | None = None) -> dict[str, Any]:
    context: dict[str, Any] = {"routeKey": route, "connectionId": connection_id, "stage": "v1", "apiId": "ws123"}
    if tenant is not None:
        context["authorizer"] = {"tenantId": tenant, "principalId": tenant}
    return {"requestContext": context, "isBase64Encoded": False}


def ticket_for(tenant: str, ctx: Any) -> str:
    reply = load_handler("dashboard").lambda_handler(
        rest_event("POST", "/api/v1/websocket-tickets", tenant=tenant), ctx
    )
    assert reply["statusCode"] == 201, reply
    body = json.loads(reply["body"])
    assert body["url"] == WEBSOCKET_URL
    return body["ticket"]


def connect(ticket: str, connection_id: str, ctx: Any) -> str:
    """$connect as API Gateway runs it: the authorizer, then the route with the authorizer's context."""
    event = {"type": "REQUEST", "methodArn": CONNECT_ARN, "queryStringParameters": {"ticket": ticket}}
    policy = load_handler("ws_authorizer").lambda_handler(event, ctx)
    assert policy["policyDocument"]["Statement"] == [
        {"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": CONNECT_ARN}
    ]
    tenant = policy["context"]["tenantId"]
    reply = load_handler("websocket").lambda_handler(ws_event("$connect", connection_id, tenant), ctx)
    assert reply == {"statusCode": 200}
    return tenant


def connections(db: ConnectionProvider) -> dict[str, str]:
    """The websocket_connections table: connection id -> tenant."""
    rows = db().execute("SELECT connection_id, tenant_id FROM websocket_connections").fetchall()
    return {r["connection_id"]: r["tenant_id"] for r in rows}


def pushed_to(pusher: InMemoryPusher) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for connection_id, message in pusher.pushed:
        found.setdefault(connection_id, []).append(json.loads(message))
    return found


def test_a_ticket_opens_a_connection_for_its_own_tenant_once(api, db, pusher, lambda_context) -> None:
    ticket = ticket_for("tenant-a", lambda_context)
    assert connect(ticket, "conn-a", lambda_context) == "tenant-a"
    assert connections(db) == {"conn-a": "tenant-a"}
    event = {"type": "REQUEST", "methodArn": CONNECT_ARN, "queryStringParameters": {"ticket": ticket}}
    with pytest.raises(Exception, match=r"^Unauthorized$"):  # single use
        load_handler("ws_authorizer").lambda_handler(event, lambda_context)
    for query in (None, {}, {"ticket": "wst_forged"}):
        with pytest.raises(Exception, match=r"^Unauthorized$"):
            load_handler("ws_authorizer").lambda_handler({**event, "queryStringParameters": query}, lambda_context)


def test_a_ticket_needs_the_tenants_key(api, db, pusher, lambda_context) -> None:
    reply = load_handler("dashboard").lambda_handler(
        rest_event("POST", "/api/v1/websocket-tickets", tenant=None), lambda_context
    )
    assert reply["statusCode"] == 401
    assert db().execute("SELECT count(*) AS n FROM websocket_tickets").fetchone()["n"] == 0


def test_connect_without_a_tenant_from_the_authorizer_is_refused(api, db, pusher, lambda_context) -> None:
    reply = load_handler("websocket").lambda_handler(ws_event("$connect", "conn-x"), lambda_context)
    assert reply == {"statusCode": 401}
    assert connections(db) == {}


def notify(lambda_context: Any, *events: dict[str, Any]) -> dict[str, Any]:
    """The notifier on a batch of the live-updates queue: each message body is an event as the bus rule sends it."""
    return load_handler("notifier").lambda_handler(sqs_event(*(json.dumps(e) for e in events)), lambda_context)


def test_the_notifier_pushes_an_event_to_its_tenants_connections_only(api, db, pusher, lambda_context) -> None:
    # given two tenants with connections of their own
    connect(ticket_for("tenant-a", lambda_context), "a-1", lambda_context)
    connect(ticket_for("tenant-a", lambda_context), "a-2", lambda_context)
    connect(ticket_for("tenant-b", lambda_context), "b-1", lambda_context)
    # when each tenant's task changes (one batch from the live-updates queue)
    event_a, event_b = bridge_event("tenant-a"), bridge_event("tenant-b", status="started")
    assert notify(lambda_context, event_a, event_b) == {"batchItemFailures": []}
    # then each connection got its own tenant's event, and no other
    got = pushed_to(pusher)
    assert got == {
        "a-1": [{"event": "task.succeeded", "detail": event_a["detail"]}],
        "a-2": [{"event": "task.succeeded", "detail": event_a["detail"]}],
        "b-1": [{"event": "task.started", "detail": event_b["detail"]}],
    }
    assert all(m["detail"]["tenantId"] == "tenant-a" for c in ("a-1", "a-2") for m in got[c])
    # an event of a tenant with nobody connected goes nowhere
    assert notify(lambda_context, bridge_event("tenant-c")) == {"batchItemFailures": []}
    assert len(pusher.pushed) == 3
    assert set(connections(db)) == {"a-1", "a-2", "b-1"}


def test_gone_connections_are_dropped_and_a_failing_one_does_not_stop_the_others(
    api, db, pusher, lambda_context
) -> None:
    for connection_id in ("a-gone", "a-broken", "a-live"):
        connect(ticket_for("tenant-a", lambda_context), connection_id, lambda_context)
    pusher.gone.add("a-gone")
    pusher.broken.add("a-broken")
    assert notify(lambda_context, bridge_event("tenant-a")) == {"batchItemFailures": []}
    assert set(connections(db)) == {"a-broken", "a-live"}  # a failure is not proof it is gone
    assert [c for c, _ in pusher.pushed] == ["a-live"]


def test_an_event_without_a_tenant_is_dropped(api, pusher, lambda_context) -> None:
    connect(ticket_for("tenant-a", lambda_context), "a-1", lambda_context)
    event = bridge_event("tenant-a")
    del event["detail"]["tenantId"]
    assert notify(lambda_context, event) == {"batchItemFailures": []}
    assert not pusher.pushed


def test_a_malformed_live_update_message_is_dropped_and_the_rest_of_its_batch_pushed(api, pusher, lambda_context):
    connect(ticket_for("tenant-a", lambda_context), "a-1", lambda_context)
    event = sqs_event("{not json", json.dumps(bridge_event("tenant-a")))
    assert load_handler("notifier").lambda_handler(event, lambda_context) == {"batchItemFailures": []}
    assert [c for c, _ in pusher.pushed] == ["a-1"]


def test_disconnect_forgets_the_connection_and_default_does_nothing(api, db, pusher, lambda_context) -> None:
    connect(ticket_for("tenant-a", lambda_context), "a-1", lambda_context)
    handler = load_handler("websocket").lambda_handler
    assert handler(ws_event("$default", "a-1", "tenant-a"), lambda_context) == {"statusCode": 200}
    assert connections(db) == {"a-1": "tenant-a"}
    assert handler(ws_event("$disconnect", "a-1", "tenant-a"), lambda_context) == {"statusCode": 200}
    assert connections(db) == {}
    assert handler(ws_event("$disconnect", "a-1", "tenant-a"), lambda_context) == {"statusCode": 200}  # again


def test_a_tasks_history_comes_from_its_events_and_is_the_tenants_own(api, lambda_context) -> None:
    created = json.loads(
        load_handler("create_task").lambda_handler(
            rest_event("POST", "/api/v1/tasks", body={"type": "chat", "payload": {"prompt": "hi"}}), lambda_context
        )["body"]
    )
    path = f"/api/v1/tasks/{created['id']}/events"
    reply = load_handler("query_tasks").lambda_handler(rest_event("GET", path), lambda_context)
    assert reply["statusCode"] == 200
    history = json.loads(reply["body"])
    assert [(e["eventType"], e["status"], e["attemptNo"]) for e in history] == [
        ("task.created", "created", 0),
        ("task.queued", "queued", 0),
    ]
    assert {"id", "occurredAt"} <= history[0].keys()
    other = load_handler("query_tasks").lambda_handler(rest_event("GET", path, tenant="tenant-b"), lambda_context)
    assert other["statusCode"] == 404
