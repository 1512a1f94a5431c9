"""aitasks_client against scripted answers (httpx2.MockTransport): retries and their waits, odd answers, problems
from API Gateway's bare bodies, ids kept inside their path segment. The real handlers are in
tests/integration/test_client.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx2
import pytest
from aitasks_client import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    Client,
    RateLimitError,
    UnexpectedResponseError,
    UnprocessableEntityError,
)

from tests.support.task_example import TASK_JSON

BASE = "http://api.test/v1/api/v1"


def client(handler: Any, slept: list[float] | None = None, **kwargs: Any) -> Client:
    sleep = (slept if slept is not None else []).append
    return Client(BASE, "ait_k", transport=httpx2.MockTransport(handler), sleep=sleep, **kwargs)


def test_429_and_503_are_retried_after_retry_after_in_seconds_or_as_a_date() -> None:
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    answers = iter([
        httpx2.Response(429, headers={"Retry-After": "3"}, json={"title": "Too Many Requests", "status": 429}),
        httpx2.Response(503, headers={"Retry-After": later}, json={"message": "Service Unavailable"}),
        httpx2.Response(503, json={"title": "Service Unavailable", "status": 503}),
        httpx2.Response(200, json=TASK_JSON),
    ])  # fmt: skip
    slept: list[float] = []
    assert str(client(lambda r: next(answers), slept).get(TASK_JSON["id"]).id) == TASK_JSON["id"]
    assert slept[0] == 3.0 and 28 <= slept[1] <= 30 and 1.0 <= slept[2] <= 2.0  # the third: 0.5 s * 2**2, jittered


def test_a_retry_after_too_long_to_wait_is_raised_at_once() -> None:
    calls: list[int] = []

    def quota(request: httpx2.Request) -> httpx2.Response:
        calls.append(1)
        return httpx2.Response(429, headers={"Retry-After": "3600"}, json={"message": "Limit Exceeded"})

    with pytest.raises(RateLimitError) as caught:
        client(quota).usage()
    assert calls == [1] and caught.value.headers["retry-after"] == "3600"


def test_every_create_carries_a_fresh_key_and_its_retries_the_same_one() -> None:
    keys: list[str] = []
    answers = iter([httpx2.Response(503, json={"message": "x"}), httpx2.Response(202, json=TASK_JSON)] * 2)

    def record(request: httpx2.Request) -> httpx2.Response:
        keys.append(request.headers["Idempotency-Key"])
        return next(answers)

    c = client(record)
    c.create("chat", "one")
    c.create("chat", "two")
    assert keys[0] == keys[1] != keys[2] == keys[3]
    with pytest.raises(ValueError, match="time zone"):
        c.create("chat", "naive", scheduled_at=datetime(2027, 1, 1))


def test_problems_keep_their_document_and_field_errors() -> None:
    body = {"type": "https://aitasks.dev/problems/validation", "title": "Unprocessable Entity", "status": 422,
            "detail": "the task is not valid", "instance": "/api/v1/tasks", "traceId": "t-9",
            "errors": [{"field": "payload.prompt", "message": "required"}]}  # fmt: skip
    with pytest.raises(UnprocessableEntityError) as problem:
        client(lambda r: httpx2.Response(422, json=body)).create("chat", "")
    assert str(problem.value) == "422 Unprocessable Entity: the task is not valid (payload.prompt: required)"
    assert problem.value.trace_id == "t-9" and problem.value.problem.errors[0].field == "payload.prompt"  # type: ignore[index]

    with pytest.raises(AuthenticationError) as gateway:  # API Gateway's own answer
        client(lambda r: httpx2.Response(401, json={"message": "Unauthorized"})).get(TASK_JSON["id"])
    assert (gateway.value.type, gateway.value.title, gateway.value.detail) == (
        "about:blank",
        "Unauthorized",
        "Unauthorized",
    )

    odd = {"title": "Odd", "status": 418, "errors": ["not a dict"]}
    with pytest.raises(APIStatusError) as teapot:
        client(lambda r: httpx2.Response(418, json=odd)).get(TASK_JSON["id"])
    assert teapot.value.status == 418 and "not a dict" in teapot.value.detail


def test_an_answer_that_is_not_the_apis_is_an_error_not_a_crash() -> None:
    page = httpx2.Response(200, headers={"Content-Type": "text/html"}, text="<html>a login page</html>")
    with pytest.raises(UnexpectedResponseError, match="text/html"):
        client(lambda r: page).get(TASK_JSON["id"])
    with pytest.raises(APIStatusError) as moved:
        client(lambda r: httpx2.Response(301, headers={"Location": "https://x"})).get(TASK_JSON["id"])
    assert moved.value.status == 301


def test_no_answer_is_a_connection_error_and_says_why() -> None:
    def timeout(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ReadTimeout("", request=request)

    def refused(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("connection refused", request=request)

    slept: list[float] = []
    with pytest.raises(APITimeoutError, match=r"ReadTimeout$"):
        client(timeout, slept, max_retries=2).get(TASK_JSON["id"])
    assert len(slept) == 2  # a read may be repeated
    with pytest.raises(APIConnectionError, match="connection refused"):
        client(refused, max_retries=1).cancel(TASK_JSON["id"])  # never sent: safe to repeat, then raised


def test_ids_cannot_step_out_of_their_path_segment() -> None:
    seen: list[str] = []

    def record(request: httpx2.Request) -> httpx2.Response:
        seen.append(request.url.raw_path.decode())
        return httpx2.Response(200, json=TASK_JSON)

    client(record).get("../openapi.json?x=1")
    assert seen == ["/v1/api/v1/tasks/..%2Fopenapi.json%3Fx%3D1"]


def test_wait_keeps_to_its_timeout_through_a_503_and_raises_wait_timeout() -> None:
    import time

    from aitasks_client import WaitTimeoutError

    answers = iter([httpx2.Response(200, json=TASK_JSON)])

    def answer(request: httpx2.Request) -> httpx2.Response:
        if request.method == "POST":  # no live updates here: polling
            return httpx2.Response(404, json={"message": "Not Found"})
        return next(answers, httpx2.Response(503, headers={"Retry-After": "10"}, json={"message": "unavailable"}))

    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        time.sleep(seconds)

    started = time.monotonic()
    with (
        Client(BASE, "ait_k", transport=httpx2.MockTransport(answer), sleep=sleep) as c,
        pytest.raises(WaitTimeoutError) as caught,
    ):
        c.wait(TASK_JSON["id"], timeout=1.0, poll_interval=0.3)
    # the 503's Retry-After of 10 s is not waited for past the deadline; the last state seen comes with the error
    assert time.monotonic() - started < 2 and all(s <= 1.0 for s in slept) and 10.0 not in slept
    assert caught.value.task.status == "queued"


def test_an_answer_that_breaks_the_model_says_where_not_what() -> None:
    broken = {**TASK_JSON, "attemptCount": "many", "payload": {"prompt": "secret words"}}
    with pytest.raises(UnexpectedResponseError) as caught:
        client(lambda r: httpx2.Response(200, json=broken)).get(TASK_JSON["id"])
    assert "attemptCount" in str(caught.value) and "secret" not in str(caught.value)
    assert caught.value.__cause__ is not None


def test_a_create_still_in_progress_is_retried_by_its_problem_type_only() -> None:
    in_progress = {"type": "https://aitasks.dev/problems/request-in-progress", "title": "Conflict", "status": 409,
                   "detail": "a request with this key is still running", "instance": "/api/v1/tasks",
                   "traceId": "t"}  # fmt: skip
    conflict = {**in_progress, "type": "https://aitasks.dev/problems/invalid-state", "detail": "request-in-progress"}
    answers = iter(
        [httpx2.Response(409, headers={"Retry-After": "1"}, json=in_progress), httpx2.Response(202, json=TASK_JSON)]
    )
    slept: list[float] = []
    assert client(lambda r: next(answers), slept).create("chat", "x").status == "queued" and slept == [1.0]
    from aitasks_client import ConflictError

    with pytest.raises(ConflictError):  # another 409, whatever its text says, is not retried
        client(lambda r: httpx2.Response(409, json=conflict)).create("chat", "x")
