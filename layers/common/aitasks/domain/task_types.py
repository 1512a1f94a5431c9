"""The registry of task types: what each accepts. The executor's prompts per type live with the AI adapters."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from typing import Any

from aitasks.domain.errors import InvalidTaskError, PayloadTooLargeError
from aitasks.domain.schemas import schema_problems

# The whole payload as compact JSON (prompt, context, model, params with an extract's schema): what a task stores,
# sends to its model and serves back.
MAX_PAYLOAD_BYTES = 256 * 1024
# Any JSON a task carries (context, params): how deep it nests, and how many values it holds in all.
MAX_JSON_DEPTH = 32
MAX_JSON_NODES = 20_000
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
    return [("payload.params.schema", problem) for problem in schema_problems(schema)]


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


def payload_size(payload: Mapping[str, Any]) -> int:
    """Bytes of the whole payload as compact JSON: prompt, context, model and params (an extract's schema too)."""
    return len(json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode())


def _bad_text(text: str) -> str | None:
    if "\x00" in text:
        # PostgreSQL text and jsonb cannot hold U+0000; no model needs it either.
        return "text must not contain the NUL character (U+0000)"
    try:
        text.encode()
    except UnicodeEncodeError:
        return "text must be valid Unicode: a lone surrogate (such as \\ud800) is not"
    return None


def json_problems(value: Any, field: str) -> list[tuple[str, str]]:
    """What makes a JSON value unfit to store or send to a model: text that is not valid Unicode or holds a NUL,
    nesting deeper than MAX_JSON_DEPTH, more than MAX_JSON_NODES values in all. Each problem names its field
    (payload.context.rows.3.name; `field` "" for a whole body); walked without recursion, so no input can exhaust
    the stack."""
    nodes = 0
    stack: list[tuple[Any, str, int]] = [(value, field, 0)]
    while stack:
        item, path, depth = stack.pop()
        nodes += 1
        if nodes > MAX_JSON_NODES:
            return [(field or "body", f"at most {MAX_JSON_NODES} values (keys, items and scalars) in all")]
        if isinstance(item, str):
            problem = _bad_text(item)
            if problem:
                return [(path, problem)]
        elif isinstance(item, Mapping | list):
            if depth >= MAX_JSON_DEPTH:
                return [(path, f"nested more than {MAX_JSON_DEPTH} levels deep")]
            pairs = item.items() if isinstance(item, Mapping) else enumerate(item)
            for key, child in pairs:
                if isinstance(key, str):
                    problem = _bad_text(key)
                    if problem:
                        return [(path or "body", f"a key: {problem}")]
                stack.append((child, f"{path}.{key}" if path else str(key), depth + 1))
    return []


def validate_task(type_name: str, payload: Mapping[str, Any]) -> TaskType:
    """The task's type, or InvalidTaskError / PayloadTooLargeError naming what is wrong."""
    problems = json_problems(payload, "payload")
    if problems:
        raise InvalidTaskError(problems)
    size = payload_size(payload)
    if size > MAX_PAYLOAD_BYTES:
        raise PayloadTooLargeError(size, MAX_PAYLOAD_BYTES)
    task_type = REGISTRY.get(type_name)
    if task_type is None:
        raise InvalidTaskError([("type", f"unknown task type; one of: {', '.join(sorted(REGISTRY))}")])
    errors = _max_tokens_rule(payload) + task_type.check(payload)
    if errors:
        raise InvalidTaskError(errors)
    return task_type
