"""GET /api/v1/tasks/{id} answers with an ETag, and a matching If-None-Match with a 304 and no body."""

from __future__ import annotations

import json
import uuid
from typing import Any

from tests.conftest import LambdaContext, load_handler, rest_event

BODY = {"type": "chat", "payload": {"prompt": "Say hi"}}


def call(function: str, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    handler = load_handler(function).lambda_handler
    return handler(rest_event(method, path, **kwargs), LambdaContext(aws_request_id=str(uuid.uuid4())))  # type: ignore[no-any-return]


def headers(reply: dict[str, Any]) -> dict[str, str]:
    return {k.lower(): ", ".join(v) for k, v in (reply.get("multiValueHeaders") or {}).items()} | {
        k.lower(): v for k, v in (reply.get("headers") or {}).items()
    }


def test_an_unchanged_task_is_304_and_a_changed_one_200_with_a_new_etag(api) -> None:
    task_id = json.loads(call("create_task", "POST", "/api/v1/tasks", body=BODY)["body"])["id"]
    first = call("query_tasks", "GET", f"/api/v1/tasks/{task_id}")
    assert first["statusCode"] == 200
    tag = headers(first)["etag"]
    assert tag.startswith('"') and tag.endswith('"')
    assert headers(first)["cache-control"] == "no-cache"

    again = call("query_tasks", "GET", f"/api/v1/tasks/{task_id}", headers={"If-None-Match": tag})
    assert again["statusCode"] == 304
    assert not again.get("body")
    assert headers(again)["etag"] == tag
    # A weak tag, or the tag in a list, matches as well (RFC 9110 weak comparison).
    for sent in (f"W/{tag}", f'"other", {tag}', "*"):
        assert (
            call("query_tasks", "GET", f"/api/v1/tasks/{task_id}", headers={"If-None-Match": sent})["statusCode"] == 304
        )
    assert (
        call("query_tasks", "GET", f"/api/v1/tasks/{task_id}", headers={"If-None-Match": '"other"'})["statusCode"]
        == 200
    )

    assert call("cancel_task", "POST", f"/api/v1/tasks/{task_id}/cancel")["statusCode"] == 202
    changed = call("query_tasks", "GET", f"/api/v1/tasks/{task_id}", headers={"If-None-Match": tag})
    assert changed["statusCode"] == 200
    assert json.loads(changed["body"])["status"] == "cancelled"
    assert headers(changed)["etag"] not in (tag, "")
    assert (
        call("query_tasks", "GET", f"/api/v1/tasks/{task_id}", headers={"If-None-Match": headers(changed)["etag"]})[
            "statusCode"
        ]
        == 304
    )


def test_another_tenants_task_is_404_whatever_the_tag(api) -> None:
    task_id = json.loads(call("create_task", "POST", "/api/v1/tasks", body=BODY)["body"])["id"]
    tag = headers(call("query_tasks", "GET", f"/api/v1/tasks/{task_id}"))["etag"]
    other = call("query_tasks", "GET", f"/api/v1/tasks/{task_id}", tenant="tenant-b", headers={"If-None-Match": tag})
    assert other["statusCode"] == 404
    assert "etag" not in headers(other)
