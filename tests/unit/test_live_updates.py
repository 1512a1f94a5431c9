"""The dashboard's page and assets (served without a key or a database) and the @connections pusher against a
stubbed API Gateway client. The live updates' tickets, connections and notifier run on PostgreSQL
(tests/integration/test_live_updates.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from aitasks import bootstrap
from tests.conftest import load_handler, rest_event

WEBSOCKET_URL = "wss://ws123.execute-api.us-east-1.amazonaws.com/v1"


@pytest.fixture(autouse=True)
def _websocket_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """The page's Content-Security-Policy names the stack's WebSocket API."""
    monkeypatch.setattr(bootstrap, "websocket_url", lambda: WEBSOCKET_URL)


def page(name: str, ctx: Any) -> dict[str, Any]:
    event = rest_event("GET", name, tenant=None, headers={"Accept": "text/html"})
    del event["headers"]["Content-Type"]
    return load_handler("dashboard").lambda_handler(event, ctx)


def test_the_page_and_its_assets_are_served_with_strict_headers_and_without_a_key(lambda_context) -> None:
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
def test_only_the_dashboards_own_files_are_served(lambda_context, name: str) -> None:
    reply = page(f"/assets/{name}", lambda_context)
    assert reply["statusCode"] == 404
    assert json.loads(reply["body"])["type"].endswith("/not-found")


def test_the_page_called_without_its_trailing_slash_redirects_to_it(lambda_context) -> None:
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
