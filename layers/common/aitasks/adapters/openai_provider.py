"""The AI provider on OpenAI's Chat Completions API, through the official SDK.

OpenAI-compatible servers and Azure OpenAI (its /openai/v1/ endpoint) are reached by `base_url`. The SDK's own
retries are off: the task's retry policy counts every attempt once and waits as long as a Retry-After says.
Every SDK error becomes an `AiError` here and nowhere else.
"""

from __future__ import annotations

import email.utils
import json
import math
import re
import time
from typing import TYPE_CHECKING, Any

from aitasks.application.ai import AiError, AiRequest, AiResult, Usage

if TYPE_CHECKING:
    from collections.abc import Mapping

    from openai import APIStatusError, OpenAI, OpenAIError
    from openai.types.chat import ChatCompletion, ChatCompletionMessageParam
    from openai.types.completion_usage import CompletionUsage

    from aitasks.application.ai import AiErrorCode

SYSTEM_PROMPTS: Mapping[str, str] = {
    "chat": "You are a helpful assistant. Answer the user's request directly.",
    "summarize": (
        "Summarise the context the user gives, as their request asks. Use only what the context says; do not add facts."
    ),
    "extract": (
        "Extract data from the context the user gives. Return only a JSON object that matches this JSON Schema, "
        "with no prose and no code fences:\n{schema}"
    ),
}

# Error codes OpenAI and Azure OpenAI put in the body of a 400 when a safety system rejects the input.
_CONTENT_FILTER_CODES = frozenset({"content_filter", "content_policy_violation", "ResponsibleAIPolicyViolation"})
# Reasoning models refuse max_tokens and want max_completion_tokens, whatever the endpoint.
_REASONING_PREFIXES = ("o1", "o3", "o4", "gpt-5")


class OpenAiProvider:
    name = "openai"

    def __init__(
        self,
        *,
        api_key: str,
        default_model: str = "gpt-4o-mini",
        base_url: str | None = None,
        client: OpenAI | None = None,
    ) -> None:
        self._api_key = api_key
        self._base_url = base_url
        self.default_model = default_model
        # A client passed in gets its retries turned off too: each HTTP request must be one counted attempt.
        self._client: OpenAI | None = client.with_options(max_retries=0) if client is not None else None

    def client(self) -> OpenAI:
        """The SDK client, built on first use: importing openai costs a cold start a noticeable fraction of a second."""
        if self._client is None:
            from openai import OpenAI

            self._client = OpenAI(api_key=self._api_key, base_url=self._base_url, max_retries=0)
        return self._client

    def complete(self, request: AiRequest, *, timeout_s: float) -> AiResult:
        import openai

        model = request.model or self.default_model
        messages = _messages(request)
        options = self._options(request, model)
        started = time.perf_counter()
        try:
            completion = self.client().chat.completions.create(
                model=model, messages=messages, timeout=timeout_s, **options
            )
        except openai.OpenAIError as exc:
            raise to_ai_error(exc) from exc
        except ValueError as exc:
            # A 200 whose JSON body does not parse: the SDK lets json's error through. A proxy or a server in
            # trouble, not the model's answer, so it is worth another attempt.
            raise AiError("server_error", f"the response body is not valid JSON: {exc}") from exc
        latency_ms = round((time.perf_counter() - started) * 1000)
        return _result(completion, model, latency_ms)

    def _options(self, request: AiRequest, model: str) -> dict[str, Any]:
        """The request's params as Chat Completions arguments; keys the API does not know (fake, schema) stay out."""
        params = request.params
        # JSON mode: the schema itself travels in the system message, since strict json_schema mode rejects the
        # many schemas that do not list every property as required.
        options: dict[str, Any] = {"response_format": {"type": "json_object"}} if request.task_type == "extract" else {}
        temperature = params.get("temperature")
        if temperature is not None:
            if not isinstance(temperature, int | float) or isinstance(temperature, bool):
                raise AiError("bad_request", "params.temperature must be a number")
            options["temperature"] = temperature
        max_tokens = request.max_tokens if request.max_tokens is not None else params.get("maxTokens")
        if max_tokens is not None:
            if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
                raise AiError("bad_request", "params.maxTokens must be a positive integer")
            # OpenAI itself has deprecated max_tokens; many compatible servers only know it.
            official = self._base_url is None
            key = "max_completion_tokens" if official or model.startswith(_REASONING_PREFIXES) else "max_tokens"
            options[key] = max_tokens
        return options


def _messages(request: AiRequest) -> list[ChatCompletionMessageParam]:
    messages: list[ChatCompletionMessageParam] = []
    system = SYSTEM_PROMPTS.get(request.task_type)
    if request.task_type == "extract":
        schema = request.params.get("schema")
        if not isinstance(schema, dict):
            raise AiError("bad_request", "extract needs a JSON Schema (an object) in params.schema")
        system = SYSTEM_PROMPTS["extract"].format(schema=json.dumps(schema, ensure_ascii=False))
    if system:
        messages.append({"role": "system", "content": system})
    user = request.prompt
    if request.context is not None and request.context != "":
        context = (
            request.context if isinstance(request.context, str) else json.dumps(request.context, ensure_ascii=False)
        )
        user = f"{request.prompt}\n\n<context>\n{context}\n</context>"
    messages.append({"role": "user", "content": user})
    return messages


def _result(completion: ChatCompletion | Any, requested_model: str, latency_ms: int) -> AiResult:
    # Without strict validation the SDK hands back whatever came (a string for a non-JSON 200, a partial model
    # for JSON of another shape): read it defensively.
    choices = getattr(completion, "choices", None)
    usage = _usage(getattr(completion, "usage", None))
    if not isinstance(choices, list) or not choices:
        raise AiError("server_error", "the response is not a chat completion (no choices)", usage=usage)
    choice = choices[0]
    message = getattr(choice, "message", None)
    finish_reason = getattr(choice, "finish_reason", None)
    if finish_reason == "content_filter":
        raise AiError("content_filter", "the provider's content filter stopped the answer", usage=usage)
    refusal = getattr(message, "refusal", None)
    if refusal:
        raise AiError("content_filter", f"the model refused: {refusal}", usage=usage)
    text = getattr(message, "content", None)
    if not isinstance(text, str) or not text:
        # An empty answer, e.g. a reasoning model that spent maxTokens thinking (finish_reason "length").
        raise AiError("invalid_output", f"the model returned no text (finish_reason {finish_reason})", usage=usage)
    model = getattr(completion, "model", None)
    return AiResult(
        text=text,
        model=model if isinstance(model, str) and model else requested_model,
        usage=usage or Usage(tokens_in=0, tokens_out=0),
        latency_ms=latency_ms,
    )


def _usage(usage: CompletionUsage | None) -> Usage | None:
    if usage is None:
        return None
    prompt_details = getattr(usage, "prompt_tokens_details", None)
    completion_details = getattr(usage, "completion_tokens_details", None)
    return Usage(
        tokens_in=int(getattr(usage, "prompt_tokens", 0) or 0),
        tokens_out=int(getattr(usage, "completion_tokens", 0) or 0),
        cached_tokens=getattr(prompt_details, "cached_tokens", None),
        reasoning_tokens=getattr(completion_details, "reasoning_tokens", None),
    )


def to_ai_error(exc: OpenAIError) -> AiError:
    """Classify an SDK error. Codes in the body (insufficient_quota, context_length_exceeded) are checked before
    the status, because they change the answer to "is it worth retrying"."""
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return AiError("timeout", str(exc))
    if isinstance(exc, openai.APIConnectionError):
        return AiError("connection", str(exc))
    if isinstance(exc, openai.APIStatusError):
        wait = retry_after_s(exc.response.headers)
        if wait is None and exc.status_code == 429:
            wait = rate_limit_reset_s(exc.response.headers)
        return AiError(_status_code(exc), f"HTTP {exc.status_code}: {exc.message}", retry_after_s=wait)
    if isinstance(exc, openai.APIResponseValidationError):
        return AiError("server_error", str(exc))
    return AiError("unknown", f"{type(exc).__name__}: {exc}")


def _status_code(exc: APIStatusError) -> AiErrorCode:
    status = exc.status_code
    codes = {exc.code, exc.type, _inner_error_code(exc.body)}
    # First match wins. 503 is OpenAI's "engine overloaded, slow down", 529 what some compatible gateways send; a
    # 409 is a conflict on the provider's side that the SDK's own policy would retry too.
    rules: tuple[tuple[bool, AiErrorCode], ...] = (
        (status == 429 and "insufficient_quota" in codes, "quota"),
        (status == 429, "rate_limit"),
        (status in (401, 403), "auth"),
        (status == 408, "timeout"),
        (status in (503, 529), "overloaded"),
        (status >= 500 or status == 409, "server_error"),
        ("context_length_exceeded" in codes, "context_length"),
        (bool(codes & _CONTENT_FILTER_CODES), "content_filter"),
        (400 <= status < 500, "bad_request"),
    )
    return next((code for matched, code in rules if matched), "unknown")


def _inner_error_code(body: object) -> str | None:
    # Azure nests the content filter's verdict: {"code": "content_filter", "innererror": {"code": "Responsible..."}}.
    inner = body.get("innererror") if isinstance(body, dict) else None
    code = inner.get("code") if isinstance(inner, dict) else None
    return code if isinstance(code, str) else None


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def rate_limit_reset_s(headers: Mapping[str, str]) -> float | None:
    """When OpenAI's limits that a 429 hit reset (x-ratelimit-reset-requests / -tokens: "1s", "6m0s", "20ms"): the
    later of the two, for a 429 that came without a Retry-After."""
    waits = []
    for header in ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"):
        value = (headers.get(header) or "").strip()
        parts = _DURATION_PART.findall(value)
        if parts and "".join(number + unit for number, unit in parts) == value:
            waits.append(sum(float(number) * _UNIT_S[unit] for number, unit in parts))
    return max(waits) if waits else None


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    """The provider's wait hint: retry-after-ms (OpenAI's), else Retry-After in seconds or as an HTTP date."""
    for header, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(header)
        if value is None:
            continue
        try:
            seconds = float(value) / divisor
        except ValueError:
            continue
        if math.isfinite(seconds):
            return max(seconds, 0.0)
    when = headers.get("retry-after")
    if when is None:
        return None
    try:
        moment = email.utils.parsedate_to_datetime(when)
    except (TypeError, ValueError):
        return None
    return max(moment.timestamp() - time.time(), 0.0)
