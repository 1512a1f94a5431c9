"""The registry of task types: what each accepts. The executor's prompts per type live with the AI adapters."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from typing import Any

from aitasks.domain.errors import InvalidTaskError, PayloadTooLargeError

MAX_INPUT_BYTES = 256 * 1024
# The most output tokens a task may ask for (payload.params.maxTokens).
MAX_OUTPUT_TOKENS = 128_000

Check = Callable[[Mapping[str, Any]], list[tuple[str, str]]]


def _no_rules(payload: Mapping[str, Any]) -> list[tuple[str, str]]:
    return []


def _needs_context(payload: Mapping[str, Any]) -> list[tuple[str, str]]:
    context = payload.get("context")
    return [] if context else [("payload.context", "summarize needs the text to summarise in context")]


def _needs_json_schema(payload: Mapping[str, Any]) -> list[tuple[str, str]]:
    schema = (payload.get("params") or {}).get("schema")
    if not isinstance(schema, dict):
        return [("payload.params.schema", "extract needs a JSON Schema (an object) in params.schema")]
    # jsonschema is imported by the one check that needs it: it is a tenth of a cold start otherwise.
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        return [("payload.params.schema", f"not a valid JSON Schema: {exc.message}")]
    return []


@dataclasses.dataclass(frozen=True, slots=True)
class TaskType:
    name: str
    description: str
    check: Check = _no_rules
    artifact_kind: str = "text"
    default_max_tokens: int = 1024  # a call's output cap when params.maxTokens does not set one


REGISTRY: Mapping[str, TaskType] = {
    t.name: t
    for t in (
        TaskType("chat", "answer the prompt"),
        TaskType("summarize", "summarise the context as the prompt asks", _needs_context, default_max_tokens=512),
        TaskType("extract", "extract JSON matching params.schema from the context", _needs_json_schema, "json"),
    )
}


def max_output_tokens(type_name: str, payload: Mapping[str, Any]) -> int:
    """The output cap of a call: params.maxTokens, else the type's default."""
    asked = (payload.get("params") or {}).get("maxTokens")
    return asked if isinstance(asked, int) else REGISTRY[type_name].default_max_tokens


def _max_tokens_rule(payload: Mapping[str, Any]) -> list[tuple[str, str]]:
    asked = (payload.get("params") or {}).get("maxTokens", 1)
    if isinstance(asked, bool) or not isinstance(asked, int) or not 1 <= asked <= MAX_OUTPUT_TOKENS:
        return [("payload.params.maxTokens", f"a whole number of tokens from 1 to {MAX_OUTPUT_TOKENS}")]
    return []


def input_size(payload: Mapping[str, Any]) -> int:
    """Bytes of prompt plus context (a structured context counts as its compact JSON)."""
    context = payload.get("context")
    if context is None:
        context_bytes = 0
    elif isinstance(context, str):
        context_bytes = len(context.encode())
    else:
        context_bytes = len(json.dumps(context, separators=(",", ":"), ensure_ascii=False).encode())
    return len(str(payload.get("prompt", "")).encode()) + context_bytes


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, Mapping):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def validate_task(type_name: str, payload: Mapping[str, Any]) -> TaskType:
    """The task's type, or InvalidTaskError / PayloadTooLargeError naming what is wrong."""
    size = input_size(payload)
    if size > MAX_INPUT_BYTES:
        raise PayloadTooLargeError(size, MAX_INPUT_BYTES)
    if _has_nul(payload):
        # PostgreSQL text and jsonb cannot hold U+0000; no model needs it either.
        raise InvalidTaskError([("payload", "text must not contain the NUL character (U+0000)")])
    task_type = REGISTRY.get(type_name)
    if task_type is None:
        raise InvalidTaskError([("type", f"unknown task type; one of: {', '.join(sorted(REGISTRY))}")])
    errors = _max_tokens_rule(payload) + task_type.check(payload)
    if errors:
        raise InvalidTaskError(errors)
    return task_type
