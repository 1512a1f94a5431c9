"""The HTTP client of the CLI against scripted answers (httpx2.MockTransport): problems, retries, odd answers."""

from __future__ import annotations

import httpx2
import pytest

from aitasks_cli.api_client import AitasksApi, ApiProblem, ApiUnreachableError

TASK = {"id": "t1", "status": "queued"}


def api(handler, slept: list[float] | None = None) -> AitasksApi:
    return AitasksApi("http://api.test/v1/api/v1", "ait_k", transport=httpx2.MockTransport(handler),
                      sleep=(slept if slept is not None else []).append)  # fmt: skip


def test_a_read_answered_429_or_503_is_retried_after_its_retry_after() -> None:
    answers = iter([
        httpx2.Response(429, headers={"Retry-After": "3"}, json={"title": "Too Many Requests", "status": 429}),
        httpx2.Response(503, json={"title": "Service Unavailable", "status": 503}),
        httpx2.Response(200, json=TASK),
    ])  # fmt: skip
    slept: list[float] = []
    assert api(lambda request: next(answers), slept).get("t1") == TASK
    assert slept == [3.0, 2.0]  # Retry-After, else exponential


def test_a_create_is_not_retried_and_a_read_gives_up_after_its_retries() -> None:
    calls: list[str] = []

    def busy(request: httpx2.Request) -> httpx2.Response:
        calls.append(request.method)
        return httpx2.Response(503, headers={"Retry-After": "1"}, json={"title": "Service Unavailable", "detail": "db"})

    with pytest.raises(ApiProblem) as created:
        api(busy).create({"type": "chat"})
    assert calls == ["POST"] and (created.value.status, created.value.detail) == (503, "db")
    calls.clear()
    with pytest.raises(ApiProblem):
        api(busy).get("t1")
    assert calls == ["GET"] * 5


def test_problems_keep_their_title_detail_and_field_errors() -> None:
    body = {"title": "Unprocessable Entity", "status": 422, "detail": "the task is not valid",
            "errors": [{"field": "payload.prompt", "message": "required"}, "not a dict"]}  # fmt: skip
    with pytest.raises(ApiProblem) as problem:
        api(lambda request: httpx2.Response(422, json=body)).create({})
    assert str(problem.value) == "Unprocessable Entity: the task is not valid: payload.prompt: required"
    with pytest.raises(ApiProblem) as gateway:
        api(lambda request: httpx2.Response(401, json={"message": "Unauthorized"})).get("t1")
    assert (gateway.value.title, gateway.value.detail) == ("Unauthorized", "Unauthorized")


def test_an_answer_that_is_not_json_is_a_problem_not_a_crash() -> None:
    page = httpx2.Response(200, headers={"Content-Type": "text/html"}, text="<html>a login page</html>")
    with pytest.raises(ApiProblem) as problem:
        api(lambda request: page).get("t1")
    assert problem.value.title == "Not an aitasks answer" and "text/html" in str(problem.value.detail)
    with pytest.raises(ApiProblem) as moved:
        api(lambda request: httpx2.Response(301, headers={"Location": "https://x"})).get("t1")
    assert moved.value.status == 301


def test_no_answer_is_unreachable_and_says_why() -> None:
    def timeout(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ReadTimeout("", request=request)

    with pytest.raises(ApiUnreachableError, match=r"ReadTimeout$"):
        api(timeout).get("t1")


def test_ids_cannot_step_out_of_their_path_segment() -> None:
    seen: list[str] = []

    def record(request: httpx2.Request) -> httpx2.Response:
        seen.append(request.url.raw_path.decode())
        return httpx2.Response(200, json=TASK)

    api(record).get("../openapi.json?x=1")
    assert seen == ["/v1/api/v1/tasks/..%2Fopenapi.json%3Fx%3D1"]
