"""The fake AI provider: deterministic answers, scripted failures and latency, schema-valid extractions."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from pydantic import ValidationError

from aitasks.adapters.fake_provider import FAKE_MODEL, FakeAiProvider, count_tokens
from aitasks.application.ai import RETRYABLE, AiError, AiProvider, AiRequest, FakeParams, Usage


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def provider(sleeps: Sleeps) -> AiProvider:
    return FakeAiProvider(sleep=sleeps)


def request(task_type: str = "chat", prompt: str = "hello, world", attempt_no: int = 1, **params: Any) -> AiRequest:
    return AiRequest(task_type=task_type, prompt=prompt, params=params, attempt_no=attempt_no)


def extract(schema: dict[str, Any], context: Any = "some text") -> AiRequest:
    return AiRequest(task_type="extract", prompt="extract it", context=context, params={"schema": schema})


def test_chat_echoes_the_prompt_with_counted_tokens(provider: AiProvider, sleeps: Sleeps) -> None:
    result = provider.complete(request(prompt="hello, world"), timeout_s=1)

    assert result.text == "echo: hello, world"
    assert result.model == FAKE_MODEL
    assert result.usage == Usage(tokens_in=3, tokens_out=5)
    assert result.latency_ms == 0
    assert sleeps.calls == []


def test_answers_are_deterministic_and_the_prompt_is_cut_at_200_chars(provider: AiProvider) -> None:
    long = "word " * 100

    first = provider.complete(request(prompt=long), timeout_s=1)
    second = FakeAiProvider().complete(request(prompt=long), timeout_s=1)

    assert first == second
    assert first.text == "echo: " + long[:200]


def test_the_requested_model_is_reported(provider: AiProvider) -> None:
    asked = AiRequest(task_type="chat", prompt="hi", model="gpt-4o-mini")

    assert provider.complete(asked, timeout_s=1).model == "gpt-4o-mini"


def test_summarize_summarises_the_context_deterministically(provider: AiProvider) -> None:
    context = " ".join(f"w{i}" for i in range(50))
    asked = AiRequest(task_type="summarize", prompt="briefly", context=context)

    result = provider.complete(asked, timeout_s=1)

    assert result.text == "summary of 50 tokens: " + " ".join(f"w{i}" for i in range(30)) + " ..."
    assert result.usage.tokens_in == count_tokens("briefly") + 50
    assert provider.complete(asked, timeout_s=1) == result


def test_a_structured_context_counts_as_its_json(provider: AiProvider) -> None:
    asked = AiRequest(task_type="summarize", prompt="x", context={"b": 1, "a": "two words"})

    result = provider.complete(asked, timeout_s=1)

    assert result.text == 'summary of 16 tokens: { " a " : " two words " , " b " : 1 }'


@pytest.mark.parametrize(("text", "tokens"), [("", 0), ("one", 1), ("Hello, world!", 4), ("a-b c_d", 4)])
def test_tokens_are_words_and_punctuation(text: str, tokens: int) -> None:
    assert count_tokens(text) == tokens


@pytest.mark.parametrize("error", ["rate_limit", "timeout", "server_error", "bad_request", "content_filter"])
def test_the_first_fail_attempts_fail_with_the_scripted_error(provider: AiProvider, error: str) -> None:
    fake = {"failAttempts": 2, "error": error, "retryAfterS": 1.5}

    for attempt_no in (1, 2):
        with pytest.raises(AiError) as caught:
            provider.complete(request(attempt_no=attempt_no, fake=fake), timeout_s=1)
        assert caught.value.code == error
        assert caught.value.retryable is RETRYABLE[error]  # type: ignore[index]
        assert caught.value.retry_after_s == 1.5
    assert provider.complete(request(attempt_no=3, fake=fake), timeout_s=1).text == "echo: hello, world"


def test_the_default_scripted_error_is_a_retryable_server_error(provider: AiProvider) -> None:
    with pytest.raises(AiError) as caught:
        provider.complete(request(fake={"failAttempts": 1}), timeout_s=1)

    assert (caught.value.code, caught.value.retryable, caught.value.retry_after_s) == ("server_error", True, None)


def test_latency_sleeps_and_is_reported(provider: AiProvider, sleeps: Sleeps) -> None:
    result = provider.complete(request(fake={"latencyMs": 250}), timeout_s=1)

    assert sleeps.calls == [0.25]
    assert result.latency_ms == 250


def test_latency_over_the_timeout_times_out_after_the_timeout(provider: AiProvider, sleeps: Sleeps) -> None:
    with pytest.raises(AiError) as caught:
        provider.complete(request(fake={"latencyMs": 5000}), timeout_s=2)

    assert (caught.value.code, caught.value.retryable) == ("timeout", True)
    assert sleeps.calls == [2]


@pytest.mark.parametrize(
    "fake",
    [{"failAttempts": -1}, {"error": "meteor"}, {"latencyMs": "slow"}, {"failAttempts": 1, "surprise": True}, "yes"],
)
def test_a_bad_fake_script_is_a_bad_request(provider: AiProvider, fake: Any) -> None:
    with pytest.raises(AiError) as caught:
        provider.complete(request(fake=fake), timeout_s=1)

    assert (caught.value.code, caught.value.retryable) == ("bad_request", False)


def test_fake_params_validate_camel_case_and_forbid_extras() -> None:
    assert FakeParams.model_validate({"failAttempts": 2, "retryAfterS": 3}).retry_after_s == 3
    with pytest.raises(ValidationError):
        FakeParams.model_validate({"failAttempts": 1, "extra": 1})


def test_extract_returns_json_that_matches_a_nested_schema(provider: AiProvider) -> None:
    schema = {
        "type": "object",
        "$defs": {"address": {"type": "object", "properties": {"city": {"type": "string", "minLength": 8}}}},
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer", "minimum": 18, "maximum": 130},
            "score": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
            "email": {"type": "string", "format": "email"},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
            "status": {"enum": ["active", "inactive"]},
            "nickname": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "home": {"$ref": "#/$defs/address"},
            "verified": {"type": "boolean"},
        },
        "required": ["name", "age", "id"],
        "additionalProperties": {"type": "integer"},
    }

    result = provider.complete(extract(schema), timeout_s=1)

    value = json.loads(result.text)
    Draft202012Validator(schema).validate(value)
    assert value["age"] == 18
    assert value["status"] == "active"
    assert value["home"] == {"city": "cityxxxx"}
    assert value["id"] == 0
    assert result.usage.tokens_out == count_tokens(result.text)


def test_extract_fails_as_invalid_output_when_no_value_fits(provider: AiProvider) -> None:
    schema = {"type": "object", "properties": {"code": {"type": "string", "pattern": "^[0-9]{4}$"}}}

    with pytest.raises(AiError) as caught:
        provider.complete(extract(schema), timeout_s=1)

    assert (caught.value.code, caught.value.retryable) == ("invalid_output", True)


@pytest.mark.parametrize("params", [{}, {"schema": "an object please"}, {"schema": {"type": "teapot"}}])
def test_extract_without_a_valid_schema_is_a_bad_request(provider: AiProvider, params: dict[str, Any]) -> None:
    with pytest.raises(AiError) as caught:
        provider.complete(AiRequest(task_type="extract", prompt="x", params=params), timeout_s=1)

    assert caught.value.code == "bad_request"


_names = st.text(alphabet="abcdefghij_", min_size=1, max_size=8)
_leaves = st.one_of(
    st.builds(
        lambda low, span: {"type": "integer", "minimum": low, "maximum": low + span},
        st.integers(-1000, 1000),
        st.integers(0, 100),
    ),
    st.builds(
        lambda low, step: {"type": "integer", "exclusiveMinimum": low, "multipleOf": step},
        st.integers(-1000, 1000),
        st.integers(1, 9),
    ),
    st.builds(
        lambda low, span: {"type": "number", "exclusiveMinimum": low, "exclusiveMaximum": low + span},
        st.floats(-1000, 1000, allow_nan=False),
        st.floats(0.01, 100),
    ),
    st.builds(
        lambda low, extra: {"type": "string", "minLength": low, "maxLength": low + extra},
        st.integers(0, 20),
        st.integers(0, 20),
    ),
    st.sampled_from(
        [
            {"type": "boolean"},
            {"type": "null"},
            {"type": ["null", "string"]},
            {"type": "string", "format": "date-time"},
            {"type": "string", "format": "uuid"},
            {},
        ]
    ),
    st.lists(st.text(max_size=5), min_size=1, max_size=4).map(lambda values: {"enum": values}),
    st.integers().map(lambda value: {"const": value}),
)


def _objects(children: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    def with_required(properties: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
        names = st.lists(st.sampled_from(sorted(properties)), unique=True) if properties else st.just([])
        return names.map(
            lambda required: {
                "type": "object",
                "properties": properties,
                "required": required,
                "additionalProperties": False,
            }
        )

    return st.dictionaries(_names, children, max_size=4).flatmap(with_required)


_schemas = st.recursive(
    _leaves,
    lambda children: st.one_of(
        _objects(children),
        st.builds(lambda items, low: {"type": "array", "items": items, "minItems": low}, children, st.integers(0, 3)),
        st.builds(lambda items: {"type": "array", "items": items, "maxItems": 0}, children),
        st.lists(children, min_size=1, max_size=3).map(lambda choices: {"anyOf": choices}),
        st.lists(children, min_size=1, max_size=2).map(
            lambda parts: {"allOf": [{"type": "object", "properties": {f"p{i}": p}} for i, p in enumerate(parts)]}
        ),
    ),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(_schemas)
def test_extract_output_always_validates_and_is_deterministic(field: dict[str, Any]) -> None:
    schema = {"type": "object", "properties": {"field": field}, "required": ["field"]}
    Draft202012Validator.check_schema(schema)
    fake = FakeAiProvider()

    first = fake.complete(extract(schema), timeout_s=1)
    second = fake.complete(extract(schema), timeout_s=1)

    Draft202012Validator(schema).validate(json.loads(first.text))
    assert first == second


def test_a_request_is_built_from_a_task_payload() -> None:
    payload = {"prompt": "p", "context": {"k": "v"}, "model": "gpt-4o", "params": {"temperature": 0}}

    built = AiRequest.from_payload("chat", payload, attempt_no=3)

    assert built == AiRequest("chat", "p", {"k": "v"}, "gpt-4o", {"temperature": 0}, 3)
    assert AiRequest.from_payload("chat", {"prompt": "p"}, attempt_no=1).params == {}
