"""The REST API through API Gateway (MiniStack): keys, replays, cancel, listing, problems."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import requests

if TYPE_CHECKING:
    from tests.e2e.conftest import Stack

BODY = {"type": "chat", "payload": {"prompt": "e2e"}}


def post(stack: Stack, path: str, body: object = None, **headers: str) -> requests.Response:
    return requests.post(f"{stack.url}{path}", json=body, headers={**stack.headers(), **headers}, timeout=30)


def test_an_idempotency_key_replays_the_first_response(stack: Stack) -> None:
    key = str(uuid.uuid4())
    first = post(stack, "/tasks", BODY, **{"Idempotency-Key": key})
    again = post(stack, "/tasks", BODY, **{"Idempotency-Key": key})
    assert (first.status_code, again.status_code) == (202, 202)
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["Location"] == first.headers["Location"]
    assert again.headers.get("Idempotent-Replayed") == "true"
    other = post(stack, "/tasks", {**BODY, "priority": 1}, **{"Idempotency-Key": key})
    assert other.status_code == 422
    assert other.json()["type"].endswith("/idempotency-key-reused")


def test_cancel_a_scheduled_task_and_find_it_in_the_list(stack: Stack) -> None:
    too_far = post(stack, "/tasks", {**BODY, "scheduledAt": "2099-01-01T00:00:00Z"})
    assert too_far.status_code == 422  # more than 365 days ahead
    scheduled = post(stack, "/tasks", {**BODY, "scheduledAt": "2027-06-01T00:00:00+00:00"})
    cancelled = post(stack, f"/tasks/{scheduled.json()['id']}/cancel")
    assert (cancelled.status_code, cancelled.json()["status"]) == (202, "cancelled")
    created = post(stack, "/tasks", {**BODY, "type": "summarize", "payload": {"prompt": "p", "context": "c"}})
    task_id = created.json()["id"]
    raced = post(stack, f"/tasks/{task_id}/cancel")
    assert raced.status_code in (202, 409)  # 409 if the executor finished it first
    listed = requests.get(
        f"{stack.url}/tasks", params={"type": "summarize", "pageSize": 100}, headers=stack.headers(), timeout=30
    )
    assert listed.status_code == 200
    assert int(listed.headers["X-Total-Count"]) >= 1
    assert task_id in {t["id"] for t in listed.json()}


def test_wrong_method_and_unknown_route_are_problems(stack: Stack) -> None:
    wrong = requests.delete(f"{stack.url}/tasks", headers=stack.headers(), timeout=30)
    assert (wrong.status_code, wrong.headers.get("Allow")) == (405, "GET, POST")
    unknown = requests.get(f"{stack.url}/nothing/here", headers=stack.headers(), timeout=30)
    assert unknown.status_code == 404
    assert unknown.headers["Content-Type"] == "application/problem+json"


def test_the_openapi_document_is_served(stack: Stack) -> None:
    doc = requests.get(f"{stack.url}/openapi.json", headers=stack.headers(), timeout=30)
    assert doc.status_code == 200
    assert "/api/v1/tasks" in doc.json()["paths"]
