"""Over HTTP through API Gateway (MiniStack), the authorizer, SQS and the executor Lambda, into PostgreSQL."""

from __future__ import annotations

import time
from decimal import Decimal
from urllib.parse import urljoin

import requests

from tests.e2e.conftest import Stack


def wait_for_status(stack: Stack, location: str, wanted: str, timeout_s: float = 60) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        task = requests.get(location, headers=stack.headers(), timeout=10).json()
        if task["status"] == wanted or time.monotonic() > deadline:
            return task
        time.sleep(0.5)


def test_health_answers_without_a_key(stack: Stack) -> None:
    response = requests.get(f"{stack.url}/health", timeout=10)
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_a_task_is_created_read_back_and_picked_up_by_the_executor(stack: Stack) -> None:
    created = requests.post(
        f"{stack.url}/tasks",
        json={"type": "chat", "payload": {"prompt": "Say hello"}, "priority": 3},
        headers=stack.headers(),
        timeout=30,
    )
    assert created.status_code == 202, created.text
    body = created.json()
    assert (body["status"], body["priority"]) == ("queued", 3)
    location = urljoin(created.url, created.headers["Location"])
    assert location == f"{stack.url}/tasks/{body['id']}"

    task = wait_for_status(stack, location, "succeeded")
    assert (task["id"], task["status"], task["attemptCount"]) == (body["id"], "succeeded", 1)
    assert task["tokensIn"] > 0 and task["tokensOut"] > 0

    [attempt] = requests.get(f"{location}/attempts", headers=stack.headers(), timeout=10).json()
    assert (attempt["attemptNo"], attempt["status"], attempt["model"]) == (1, "succeeded", "fake-echo-1")
    assert attempt["tokensIn"] == task["tokensIn"]
    # the local stack prices fake-echo-1 at $0.50 per million input tokens and $1.50 per million output tokens
    expected = (Decimal(attempt["tokensIn"]) * Decimal("0.5") + Decimal(attempt["tokensOut"]) * Decimal("1.5")) / 10**6
    assert Decimal(attempt["cost"]) == expected.quantize(Decimal("0.00000001"))
    [artifact] = requests.get(f"{location}/artifacts", headers=stack.headers(), timeout=10).json()
    assert artifact["kind"] == "text" and "Say hello" in artifact["content"]


def test_a_failing_task_is_retried_and_succeeds_on_its_second_attempt(stack: Stack) -> None:
    body = {"type": "chat", "payload": {"prompt": "flaky", "params": {"fake": {"failAttempts": 1}}}}
    created = requests.post(f"{stack.url}/tasks", json=body, headers=stack.headers(), timeout=30)
    assert created.status_code == 202, created.text
    location = urljoin(created.url, created.headers["Location"])
    task = wait_for_status(stack, location, "succeeded", timeout_s=90)
    assert (task["status"], task["attemptCount"]) == ("succeeded", 2)
    attempts = requests.get(f"{location}/attempts", headers=stack.headers(), timeout=10).json()
    assert [(a["status"], a["errorCode"]) for a in attempts] == [("failed", "server_error"), ("succeeded", None)]


def test_no_valid_key_no_access(stack: Stack) -> None:
    for headers in ({}, stack.headers("ait_not-a-key")):
        response = requests.post(
            f"{stack.url}/tasks", json={"type": "chat", "payload": {"prompt": "x"}}, headers=headers, timeout=30
        )
        assert response.status_code == 401


def test_bad_input_is_a_problem_and_an_unknown_task_is_404(stack: Stack) -> None:
    response = requests.post(
        f"{stack.url}/tasks", json={"type": "chat", "payload": {"prompt": ""}}, headers=stack.headers(), timeout=30
    )
    assert response.status_code == 422
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.json()["errors"][0]["field"] == "payload.prompt"
    missing = requests.get(
        f"{stack.url}/tasks/00000000-0000-4000-8000-000000000000", headers=stack.headers(), timeout=30
    )
    assert missing.status_code == 404
