"""A deterministic AI provider for local runs and tests: no network, answers derived from the request.

`params.fake` (see `FakeParams`) scripts failures by attempt number and a latency, so retries, backoff and
timeouts can be exercised end to end without a model.
"""

from __future__ import annotations

import json
import math
import re
import time
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from aitasks.application.ai import AiError, AiRequest, AiResult, FakeParams, Usage
from aitasks.domain.schemas import schema_problems, validator

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

FAKE_MODEL = "fake-echo-1"

_TOKEN = re.compile(r"\w+|[^\w\s]")
# Deeper schemas (or $ref cycles) give up; validation then reports invalid_output, as a model might.
_MAX_DEPTH = 12
_SAMPLE_FORMATS = {
    "date": "2024-01-01",
    "date-time": "2024-01-01T00:00:00Z",
    "time": "00:00:00Z",
    "email": "fake@example.com",
    "uri": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "ipv4": "192.0.2.1",
}


def count_tokens(text: str) -> int:
    """Words and punctuation marks: a rough, deterministic stand-in for a real tokenizer."""
    return len(_TOKEN.findall(text))


def context_text(context: str | dict[str, Any] | None) -> str:
    if context is None:
        return ""
    if isinstance(context, str):
        return context
    return json.dumps(context, sort_keys=True, ensure_ascii=False)


class FakeAiProvider:
    name = "fake"

    def __init__(self, *, sleep: Callable[[float], None] = time.sleep, model: str = FAKE_MODEL) -> None:
        self._sleep = sleep
        self._model = model

    def complete(self, request: AiRequest, *, timeout_s: float) -> AiResult:
        script = _script(request.params)
        latency_s = script.latency_ms / 1000
        if latency_s > timeout_s:
            self._sleep(timeout_s)
            raise AiError("timeout", f"fake latency of {script.latency_ms} ms is over the {timeout_s} s timeout")
        if latency_s:
            self._sleep(latency_s)
        if request.attempt_no <= script.fail_attempts:
            raise AiError(
                script.error,
                f"fake {script.error} on attempt {request.attempt_no} of {script.fail_attempts} scripted to fail",
                retry_after_s=script.retry_after_s,
            )
        cap = request.max_tokens if request.max_tokens is not None else request.params.get("maxTokens")
        answer = script.answer if script.answer is not None else _answer(request)
        text = _capped(_lengthened(answer, script.output_tokens), cap)
        tokens_in = count_tokens(request.prompt) + count_tokens(context_text(request.context))
        return AiResult(
            text=text,
            model=request.model or self._model,
            usage=Usage(tokens_in=tokens_in, tokens_out=count_tokens(text)),
            latency_ms=script.latency_ms,
        )


def _lengthened(text: str, tokens: int | None) -> str:
    """The answer made `tokens` tokens long (params.fake.outputTokens), so that a call costs what a test needs."""
    missing = (tokens or 0) - count_tokens(text)
    return text + " more" * missing if missing > 0 else text


def _capped(text: str, max_tokens: object) -> str:
    """The answer cut after `max_tokens` tokens (params.maxTokens), as a model stops at its output cap."""
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
        return text
    tokens = list(_TOKEN.finditer(text))
    return text[: tokens[max_tokens - 1].end()] if 0 < max_tokens < len(tokens) else text


def _script(params: Mapping[str, Any]) -> FakeParams:
    try:
        return FakeParams.model_validate(params.get("fake") or {})
    except ValidationError as exc:
        raise AiError("bad_request", f"params.fake: {exc}") from exc


def _answer(request: AiRequest) -> str:
    if request.task_type == "summarize":
        words = _TOKEN.findall(context_text(request.context))
        head = " ".join(words[:30])
        return f"summary of {len(words)} tokens: {head}{' ...' if len(words) > 30 else ''}"
    if request.task_type == "extract":
        schema = request.params.get("schema")
        if not isinstance(schema, dict):
            raise AiError("bad_request", "extract needs a JSON Schema in params.schema")
        problems = schema_problems(schema)
        if problems:
            raise AiError("bad_request", f"params.schema: {problems[0]}")
        instance = sample_instance(schema, root=schema)
        if not validator(schema).is_valid(instance):
            raise AiError("invalid_output", "the fake cannot build a value that matches this schema")
        return json.dumps(instance, ensure_ascii=False)
    return f"echo: {request.prompt[:200]}"


def sample_instance(schema: Any, *, root: Mapping[str, Any], name: str = "value", depth: int = 0) -> Any:
    """A value for `schema` built from its keywords alone: the same schema always gives the same value.

    It covers what extraction schemas use (types, properties, items, enum, const, bounds, formats, local $refs,
    anyOf/oneOf/allOf); the caller validates the result, since keywords like `pattern` are not honoured.
    """
    simple = _simplify(schema, root)
    if simple is None or depth > _MAX_DEPTH:
        return None
    for keyword in ("const", "default"):
        if keyword in simple:
            return simple[keyword]
    for keyword in ("enum", "examples"):
        if simple.get(keyword):
            return simple[keyword][0]
    return _by_type(simple, _type_of(simple), root=root, name=name, depth=depth)


def _simplify(schema: Any, root: Mapping[str, Any]) -> dict[str, Any] | None:
    """Follow $refs, take the first choice of anyOf/oneOf, merge allOf: a schema with none of those left."""
    for _ in range(_MAX_DEPTH):
        if not isinstance(schema, dict):
            return None
        if "$ref" in schema:
            schema = _resolve(root, schema["$ref"])
        elif schema.get("anyOf") or schema.get("oneOf"):
            schema = (schema.get("anyOf") or schema["oneOf"])[0]
        elif schema.get("allOf"):
            merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
            for raw in schema["allOf"]:
                part = _simplify(raw, root) or {}
                properties = {**merged.get("properties", {}), **part.get("properties", {})}
                required = [*merged.get("required", []), *part.get("required", [])]
                merged = {**merged, **part, "properties": properties, "required": required}
            schema = merged
        else:
            return schema
    return None


def _type_of(schema: Mapping[str, Any]) -> str:
    declared = schema.get("type")
    if isinstance(declared, list):
        # Prefer a real value over null when a field is nullable.
        declared = next((t for t in declared if t != "null"), "null")
    if isinstance(declared, str):
        return declared
    if "properties" in schema:
        return "object"
    if "items" in schema or "prefixItems" in schema:
        return "array"
    return "string"


def _by_type(schema: Mapping[str, Any], kind: str, *, root: Mapping[str, Any], name: str, depth: int) -> Any:
    if kind == "object":
        properties: dict[str, Any] = dict(schema.get("properties") or {})
        extra = schema.get("additionalProperties")
        for key in schema.get("required") or []:
            properties.setdefault(key, extra if isinstance(extra, dict) else {})
        return {key: sample_instance(sub, root=root, name=key, depth=depth + 1) for key, sub in properties.items()}
    if kind == "array":
        return _array(schema, root=root, name=name, depth=depth)
    if kind in ("integer", "number"):
        return _number(schema, integer=kind == "integer")
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return _string(schema, name)


def _array(schema: Mapping[str, Any], *, root: Mapping[str, Any], name: str, depth: int) -> list[Any]:
    prefix = [sample_instance(sub, root=root, name=name, depth=depth + 1) for sub in schema.get("prefixItems") or []]
    wanted = max(int(schema.get("minItems", 1)), len(prefix))
    if schema.get("maxItems") is not None:
        wanted = min(wanted, int(schema["maxItems"]))
    items = schema.get("items")
    if not isinstance(items, dict):
        return prefix[:wanted]
    return [*prefix, *[sample_instance(items, root=root, name=name, depth=depth + 1)] * (wanted - len(prefix))]


def _number(schema: Mapping[str, Any], *, integer: bool) -> int | float:
    def bound(keyword: str) -> float | None:
        value = schema.get(keyword)
        return value if isinstance(value, int | float) and not isinstance(value, bool) else None

    low, high = bound("minimum"), bound("maximum")
    above, below = bound("exclusiveMinimum"), bound("exclusiveMaximum")
    if integer:
        lows = [math.ceil(low)] if low is not None else []
        lows += [math.floor(above) + 1] if above is not None else []
        highs = [math.floor(high)] if high is not None else []
        highs += [math.ceil(below) - 1] if below is not None else []
        step = schema.get("multipleOf")
        step = step if isinstance(step, int) and not isinstance(step, bool) and step > 0 else 1
        # The value nearest zero within the bounds, on the step's grid.
        if lows and max(lows) > 0:
            return math.ceil(max(lows) / step) * step
        if highs and min(highs) < 0:
            return math.floor(min(highs) / step) * step
        return 0
    value = 0.0 if low is None else max(0.0, float(low))
    if above is not None and value <= above:
        value = above + 1
    if high is not None and value > high:
        value = high
    if below is not None and value >= below:
        floor = low if low is not None else above if above is not None else below - 2
        value = (floor + below) / 2
    return float(value)


def _string(schema: Mapping[str, Any], name: str) -> str:
    sample = _SAMPLE_FORMATS.get(str(schema.get("format")), name)
    min_length = int(schema.get("minLength", 0))
    if len(sample) < min_length:
        sample = sample.ljust(min_length, "x")
    if schema.get("maxLength") is not None:
        sample = sample[: int(schema["maxLength"])]
    return sample


def _resolve(root: Mapping[str, Any], ref: Any) -> Any:
    if not isinstance(ref, str) or not ref.startswith("#"):
        return None
    node: Any = root
    for part in ref.lstrip("#").strip("/").split("/"):
        if not part:
            continue
        key = part.replace("~1", "/").replace("~0", "~")
        node = node.get(key) if isinstance(node, dict) else None
    return node
