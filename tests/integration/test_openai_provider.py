"""OpenAiProvider drives the real openai SDK over HTTP against a local OpenAI-compatible stub: no SDK mocks."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import pytest

from aitasks.adapters.openai_provider import OpenAiProvider
from aitasks.application.ai import AiError, AiRequest, Usage
from tests.support.openai_stub import (
    MODEL_USED,
    OpenAiStub,
    Reply,
    content_filtered,
    context_length_exceeded,
    error,
    insufficient_quota,
    malformed,
    ok,
    rate_limited,
    slow,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}


@pytest.fixture
def stub() -> Iterator[OpenAiStub]:
    with OpenAiStub() as running:
        yield running


@pytest.fixture
def provider(stub: OpenAiStub) -> OpenAiProvider:
    return OpenAiProvider(api_key="sk-test", base_url=stub.base_url, default_model="gpt-4o-mini")


def chat(prompt: str = "hello", **params: Any) -> AiRequest:
    return AiRequest(task_type="chat", prompt=prompt, params=params)


def failure(provider: OpenAiProvider, request: AiRequest | None = None, timeout_s: float = 5) -> AiError:
    with pytest.raises(AiError) as caught:
        provider.complete(request or chat(), timeout_s=timeout_s)
    return caught.value


def test_a_completion_reports_text_model_tokens_and_latency(stub: OpenAiStub, provider: OpenAiProvider) -> None:
    # given
    stub.enqueue(ok("bonjour", prompt_tokens=120, completion_tokens=30, cached_tokens=64, reasoning_tokens=12))

    # when
    result = provider.complete(chat("say hello in French"), timeout_s=5)

    # then
    assert result.text == "bonjour"
    assert result.model == MODEL_USED
    assert result.usage == Usage(tokens_in=120, tokens_out=30, cached_tokens=64, reasoning_tokens=12)
    assert 0 <= result.latency_ms < 5000
    sent = stub.requests[0]
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == "Bearer sk-test"
    assert sent.json["model"] == "gpt-4o-mini"
    assert sent.json["messages"][-1] == {"role": "user", "content": "say hello in French"}
    assert stub.successes == 1


def test_the_requested_model_and_params_are_sent_and_fake_params_are_not(
    stub: OpenAiStub, provider: OpenAiProvider
) -> None:
    request = AiRequest(
        task_type="chat",
        prompt="hi",
        model="gpt-4.1",
        params={"temperature": 0.2, "maxTokens": 50, "fake": {"failAttempts": 3}, "other": 1},
    )

    provider.complete(request, timeout_s=5)

    body = stub.requests[0].json
    assert body["model"] == "gpt-4.1"
    assert body["temperature"] == 0.2
    # A compatible server (base_url given) gets max_tokens, the field they all know.
    assert body["max_tokens"] == 50
    assert "max_completion_tokens" not in body
    assert "fake" not in body
    assert "other" not in body
    assert "fake" not in str(body["messages"])


def test_a_reasoning_model_gets_max_completion_tokens(stub: OpenAiStub, provider: OpenAiProvider) -> None:
    provider.complete(AiRequest(task_type="chat", prompt="hi", model="o4-mini", params={"maxTokens": 80}), timeout_s=5)

    body = stub.requests[0].json
    assert body["max_completion_tokens"] == 80
    assert "max_tokens" not in body


def test_extract_asks_for_json_with_the_schema_in_the_system_message(
    stub: OpenAiStub, provider: OpenAiProvider
) -> None:
    stub.enqueue(ok('{"name": "Ada"}'))
    request = AiRequest(
        task_type="extract",
        prompt="who is it?",
        context={"bio": "Ada Lovelace wrote the first program"},
        params={"schema": SCHEMA},
    )

    result = provider.complete(request, timeout_s=5)

    assert result.text == '{"name": "Ada"}'
    body = stub.requests[0].json
    assert body["response_format"] == {"type": "json_object"}
    system, user = body["messages"]
    assert system["role"] == "system"
    assert '"required": ["name"]' in system["content"]
    assert "JSON" in system["content"]
    assert user["content"].startswith("who is it?")
    assert '{"bio": "Ada Lovelace wrote the first program"}' in user["content"]
    assert "schema" not in body


def test_summarize_sends_its_instructions_and_the_context(stub: OpenAiStub, provider: OpenAiProvider) -> None:
    provider.complete(AiRequest(task_type="summarize", prompt="in one line", context="a long text"), timeout_s=5)

    system, user = stub.requests[0].json["messages"]
    assert "Summarise the context" in system["content"]
    assert "a long text" in user["content"]
    assert "response_format" not in stub.requests[0].json


@pytest.mark.parametrize(
    ("reply", "code", "retryable"),
    [
        (rate_limited(), "rate_limit", True),
        (insufficient_quota(), "quota", True),  # retried once its pause ends
        (error(500, "boom", type="server_error"), "server_error", True),
        (error(502, "bad gateway", type="server_error"), "server_error", True),
        (error(503, "The engine is currently overloaded", type="server_error"), "overloaded", True),
        (error(529, "overloaded", type="overloaded_error"), "overloaded", True),
        (error(400, "bad temperature", code="invalid_value"), "bad_request", False),
        (error(404, "The model does not exist", code="model_not_found"), "bad_request", False),
        (context_length_exceeded(), "context_length", False),
        (error(400, "filtered", code="content_filter"), "content_filter", False),
        (error(401, "Incorrect API key", code="invalid_api_key"), "auth", True),
        (error(403, "not allowed"), "auth", True),
        (content_filtered(), "content_filter", False),
        (malformed(), "server_error", True),
        (Reply(body=b"<html>gateway</html>", content_type="text/html"), "server_error", True),
        (ok(""), "invalid_output", True),
        (ok(None, refusal="I can't help with that"), "content_filter", False),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_each_failure_is_classified_after_exactly_one_request(
    stub: OpenAiStub, provider: OpenAiProvider, reply: Reply, code: str, retryable: bool
) -> None:
    # given: the stub would answer well if the SDK retried
    stub.enqueue(reply, ok("too late"))

    err = failure(provider)

    assert (err.code, err.retryable) == (code, retryable)
    assert len(stub.requests) == 1


def test_a_content_filtered_answer_still_reports_its_tokens(stub: OpenAiStub, provider: OpenAiProvider) -> None:
    stub.enqueue(content_filtered())

    err = failure(provider)

    assert err.usage == Usage(tokens_in=42, tokens_out=7, cached_tokens=10, reasoning_tokens=3)


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (rate_limited("7"), 7.0),
        (rate_limited(None, retry_after_ms="1500"), 1.5),
        (rate_limited("30", retry_after_ms="250"), 0.25),
        (rate_limited(None), None),
        (error(503, "overloaded", headers={"Retry-After": "4"}), 4.0),
    ],
)
def test_retry_after_is_passed_on(
    stub: OpenAiStub, provider: OpenAiProvider, reply: Reply, expected: float | None
) -> None:
    stub.enqueue(reply)

    started = time.perf_counter()
    err = failure(provider)

    assert err.retry_after_s == expected
    # Nothing slept on the hint: waiting is the retry policy's job, through the queue.
    assert time.perf_counter() - started < 2


def test_an_http_date_retry_after_becomes_seconds(stub: OpenAiStub, provider: OpenAiProvider) -> None:
    stub.enqueue(rate_limited("Wed, 21 Oct 2015 07:28:00 GMT"))

    assert failure(provider).retry_after_s == 0.0


def test_a_slow_answer_times_out_at_timeout_s(stub: OpenAiStub, provider: OpenAiProvider) -> None:
    stub.enqueue(slow(3000))

    started = time.perf_counter()
    err = failure(provider, timeout_s=0.3)

    assert (err.code, err.retryable) == ("timeout", True)
    assert time.perf_counter() - started < 2
    assert len(stub.requests) == 1


def test_a_server_that_is_not_there_is_a_connection_error() -> None:
    with OpenAiStub() as gone:
        base_url = gone.base_url
    provider = OpenAiProvider(api_key="sk-test", base_url=base_url)

    err = failure(provider, timeout_s=2)

    assert (err.code, err.retryable) == ("connection", True)


def test_a_client_passed_in_has_its_retries_turned_off(stub: OpenAiStub) -> None:
    from openai import OpenAI

    client = OpenAI(api_key="sk-test", base_url=stub.base_url, max_retries=5)
    provider = OpenAiProvider(api_key="unused", client=client)
    stub.enqueue(error(500, "boom"), ok("second"))

    assert failure(provider).code == "server_error"
    assert len(stub.requests) == 1


def test_the_official_endpoint_gets_max_completion_tokens(stub: OpenAiStub) -> None:
    from openai import OpenAI

    # A client aimed at the stub stands in for api.openai.com; the provider itself has no base_url.
    provider = OpenAiProvider(api_key="sk-test", client=OpenAI(api_key="sk-test", base_url=stub.base_url))

    provider.complete(chat(maxTokens=25), timeout_s=5)

    assert stub.requests[0].json["max_completion_tokens"] == 25


@pytest.mark.parametrize(
    "params",
    [{"temperature": "hot"}, {"maxTokens": 0}, {"maxTokens": True}],
)
def test_bad_params_fail_before_any_request(stub: OpenAiStub, provider: OpenAiProvider, params: dict[str, Any]) -> None:
    assert failure(provider, chat(**params)).code == "bad_request"
    assert stub.requests == []


def test_extract_without_a_schema_fails_before_any_request(stub: OpenAiStub, provider: OpenAiProvider) -> None:
    assert failure(provider, AiRequest(task_type="extract", prompt="x")).code == "bad_request"
    assert stub.requests == []


def test_importing_the_adapter_does_not_import_the_sdk() -> None:
    # The SDK takes a noticeable part of a cold start; only the first call should pay for it.
    code = "import sys, aitasks.adapters.openai_provider; sys.exit('openai' in sys.modules)"

    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
