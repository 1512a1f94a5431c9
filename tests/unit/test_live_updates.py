"""Live updates through the real handlers, with fakes behind bootstrap: a ticket from the API opens a connection
for its tenant only, the notifier pushes each event to its tenant's connections and to no other tenant's, and
drops the connections API Gateway says are gone."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from tests.conftest import load_handler, rest_event
from tests.unit.conftest import WEBSOCKET_URL

CONNECT_ARN = "arn:aws:execute-api:us-east-1:000000000000:ws123/v1/$connect"


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


def pushed_to(pusher) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for connection_id, message in pusher.pushed:
        found.setdefault(connection_id, []).append(json.loads(message))
    return found


def test_a_ticket_opens_a_connection_for_its_own_tenant_once(fakes, live, lambda_context) -> None:
    _, connections, _ = live
    ticket = ticket_for("tenant-a", lambda_context)
    assert connect(ticket, "conn-a", lambda_context) == "tenant-a"
    assert connections.connections == {"conn-a": "tenant-a"}
    event = {"type": "REQUEST", "methodArn": CONNECT_ARN, "queryStringParameters": {"ticket": ticket}}
    with pytest.raises(Exception, match=r"^Unauthorized$"):  # single use
        load_handler("ws_authorizer").lambda_handler(event, lambda_context)
    for query in (None, {}, {"ticket": "wst_forged"}):
        with pytest.raises(Exception, match=r"^Unauthorized$"):
            load_handler("ws_authorizer").lambda_handler({**event, "queryStringParameters": query}, lambda_context)


def test_a_ticket_needs_the_tenants_key(fakes, live, lambda_context) -> None:
    reply = load_handler("dashboard").lambda_handler(
        rest_event("POST", "/api/v1/websocket-tickets", tenant=None), lambda_context
    )
    assert reply["statusCode"] == 401
    assert not live[0].tickets


def test_connect_without_a_tenant_from_the_authorizer_is_refused(fakes, live, lambda_context) -> None:
    reply = load_handler("websocket").lambda_handler(ws_event("$connect", "conn-x"), lambda_context)
    assert reply == {"statusCode": 401}
    assert not live[1].connections


def test_the_notifier_pushes_an_event_to_its_tenants_connections_only(fakes, live, lambda_context) -> None:
    # given two tenants with connections of their own
    _, connections, pusher = live
    connect(ticket_for("tenant-a", lambda_context), "a-1", lambda_context)
    connect(ticket_for("tenant-a", lambda_context), "a-2", lambda_context)
    connect(ticket_for("tenant-b", lambda_context), "b-1", lambda_context)
    # when each tenant's task changes
    notifier = load_handler("notifier").lambda_handler
    event_a, event_b = bridge_event("tenant-a"), bridge_event("tenant-b", status="started")
    assert notifier(event_a, lambda_context) == {"sent": 2, "gone": 0, "failed": 0}
    assert notifier(event_b, lambda_context) == {"sent": 1, "gone": 0, "failed": 0}
    # then each connection got its own tenant's event, and no other
    got = pushed_to(pusher)
    assert got == {
        "a-1": [{"event": "task.succeeded", "detail": event_a["detail"]}],
        "a-2": [{"event": "task.succeeded", "detail": event_a["detail"]}],
        "b-1": [{"event": "task.started", "detail": event_b["detail"]}],
    }
    assert all(m["detail"]["tenantId"] == "tenant-a" for c in ("a-1", "a-2") for m in got[c])
    # an event of a tenant with nobody connected goes nowhere
    assert notifier(bridge_event("tenant-c"), lambda_context) == {"sent": 0, "gone": 0, "failed": 0}
    assert len(pusher.pushed) == 3
    assert set(connections.connections) == {"a-1", "a-2", "b-1"}


def test_gone_connections_are_dropped_and_a_failing_one_does_not_stop_the_others(fakes, live, lambda_context) -> None:
    _, connections, pusher = live
    for connection_id in ("a-gone", "a-broken", "a-live"):
        connect(ticket_for("tenant-a", lambda_context), connection_id, lambda_context)
    pusher.gone.add("a-gone")
    pusher.broken.add("a-broken")
    report = load_handler("notifier").lambda_handler(bridge_event("tenant-a"), lambda_context)
    assert report == {"sent": 1, "gone": 1, "failed": 1}
    assert set(connections.connections) == {"a-broken", "a-live"}  # a failure is not proof it is gone
    assert [c for c, _ in pusher.pushed] == ["a-live"]


def test_an_event_without_a_tenant_is_dropped(fakes, live, lambda_context) -> None:
    _, _, pusher = live
    connect(ticket_for("tenant-a", lambda_context), "a-1", lambda_context)
    event = bridge_event("tenant-a")
    del event["detail"]["tenantId"]
    assert load_handler("notifier").lambda_handler(event, lambda_context) == {"sent": 0, "gone": 0, "failed": 0}
    assert not pusher.pushed


def test_disconnect_forgets_the_connection_and_default_does_nothing(fakes, live, lambda_context) -> None:
    _, connections, _ = live
    connect(ticket_for("tenant-a", lambda_context), "a-1", lambda_context)
    handler = load_handler("websocket").lambda_handler
    assert handler(ws_event("$default", "a-1", "tenant-a"), lambda_context) == {"statusCode": 200}
    assert connections.connections == {"a-1": "tenant-a"}
    assert handler(ws_event("$disconnect", "a-1", "tenant-a"), lambda_context) == {"statusCode": 200}
    assert connections.connections == {}
    assert handler(ws_event("$disconnect", "a-1", "tenant-a"), lambda_context) == {"statusCode": 200}  # again


def test_a_tasks_history_comes_from_its_events_and_is_the_tenants_own(fakes, lambda_context) -> None:
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


def page(name: str, ctx: Any) -> dict[str, Any]:
    event = rest_event("GET", name, tenant=None, headers={"Accept": "text/html"})
    del event["headers"]["Content-Type"]
    return load_handler("dashboard").lambda_handler(event, ctx)


def test_the_page_and_its_assets_are_served_with_strict_headers_and_without_a_key(fakes, lambda_context) -> None:
    reply = page("/", lambda_context)
    assert reply["statusCode"] == 200
    headers = reply["multiValueHeaders"] if "multiValueHeaders" in reply else reply["headers"]
    flat = {k.lower(): (v[0] if isinstance(v, list) else v) for k, v in headers.items()}
    assert flat["content-type"] == "text/html; charset=utf-8"
    csp = flat["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "default-src 'none'" in csp
    assert "connect-src 'self' wss://ws123.execute-api.us-east-1.amazonaws.com" in csp
    assert "frame-ancestors 'none'" in csp
    assert (flat["x-content-type-options"], flat["referrer-policy"]) == ("nosniff", "no-referrer")
    html = reply["body"]
    assert '<script type="module" src="assets/app.js"></script>' in html
    assert "<script>" not in html and " style=" not in html and "onclick=" not in html  # nothing inline
    for asset, content_type in (("app.js", "text/javascript"), ("style.css", "text/css"), ("favicon.svg", "image/svg")):
        reply = page(f"/assets/{asset}", lambda_context)
        assert reply["statusCode"] == 200, asset
        assert content_type in json.dumps(reply.get("multiValueHeaders") or reply["headers"]), asset


@pytest.mark.parametrize("name", ["nope.js", "index.html", "..%2Fapp.py", "APP.JS", ".env", "app.py"])
def test_only_the_dashboards_own_files_are_served(fakes, lambda_context, name: str) -> None:
    reply = page(f"/assets/{name}", lambda_context)
    assert reply["statusCode"] == 404
    assert json.loads(reply["body"])["type"].endswith("/not-found")


def test_the_page_called_without_its_trailing_slash_redirects_to_it(fakes, lambda_context) -> None:
    event = rest_event("GET", "/", tenant=None)
    event["requestContext"]["path"] = "/v1"  # https://{api}.execute-api.../v1, as API Gateway reports it
    reply = load_handler("dashboard").lambda_handler(event, lambda_context)
    assert reply["statusCode"] == 308
    assert json.dumps(reply.get("multiValueHeaders") or reply["headers"]).count('"v1/"') == 1


def test_the_pusher_posts_to_the_stages_connections_endpoint_and_reports_a_gone_connection() -> None:
    import boto3
    from botocore.stub import Stubber

    from aitasks.adapters.websocket import ApiGatewayPusher, management_endpoint
    from aitasks.application.ports import ConnectionGoneError

    assert management_endpoint("wss://ws1.execute-api.eu-west-1.amazonaws.com/v1") == (
        "https://ws1.execute-api.eu-west-1.amazonaws.com/v1"
    )
    local = "ws://127.0.0.1:4566/_aws/execute-api/ws1/v1"
    assert management_endpoint(local) == "http://127.0.0.1:4566/_aws/execute-api/ws1/v1"
    with pytest.raises(ValueError, match="not a WebSocket URL"):
        management_endpoint("https://example.com")

    client = boto3.client(
        "apigatewaymanagementapi",
        endpoint_url=management_endpoint(local),
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    pusher = ApiGatewayPusher(local, client)
    with Stubber(client) as stub:
        stub.add_response("post_to_connection", {}, {"ConnectionId": "c1", "Data": b"{}"})
        stub.add_client_error("post_to_connection", service_error_code="GoneException", http_status_code=410)
        stub.add_client_error("post_to_connection", service_error_code="LimitExceededException", http_status_code=429)
        pusher.push("c1", b"{}")
        with pytest.raises(ConnectionGoneError):
            pusher.push("c2", b"{}")
        with pytest.raises(client.exceptions.LimitExceededException):  # not "gone": the notifier keeps the row
            pusher.push("c3", b"{}")
        stub.assert_no_pending_responses()
