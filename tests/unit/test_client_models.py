"""The client's models against the API's OpenAPI document (docs/openapi.json): the same fields, requiredness, JSON
types and enumerations, so that the two cannot drift apart."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aitasks_client import _base, models
from pydantic import BaseModel

DOCUMENT = json.loads(Path("docs/openapi.json").read_text())
SCHEMAS: dict[str, Any] = DOCUMENT["components"]["schemas"]
MODELS = [
    m
    for m in vars(models).values()
    if isinstance(m, type) and issubclass(m, BaseModel) and m is not models._Model and m.__module__ == models.__name__
]


def schema_name(model: type[BaseModel]) -> str:
    return (model.__doc__ or "").split(":")[0].split(".")[0].strip()


def kinds(schema: dict[str, Any], defs: dict[str, Any]) -> set[str]:
    """What a property may be, as comparable words: JSON types, and enumerations by their values."""
    if "$ref" in schema:
        target = defs[schema["$ref"].rsplit("/", 1)[1]]
        return kinds(target, defs) if "enum" in target else {"object"}
    if "anyOf" in schema:
        return set().union(*(kinds(s, defs) for s in schema["anyOf"]))
    if "enum" in schema:
        return {"enum:" + ",".join(sorted(map(str, schema["enum"])))}
    if "const" in schema:
        return {f"enum:{schema['const']}"}
    kind = schema.get("type")
    return set(kind) if isinstance(kind, list) else {kind or "any"}


def test_every_model_names_a_schema_of_the_document() -> None:
    assert MODELS
    assert {schema_name(m) for m in MODELS} <= set(SCHEMAS)
    # every response schema of the document has its model (requests are built by the client's methods)
    assert set(SCHEMAS) - {schema_name(m) for m in MODELS} == {"CreateTaskRequest", "TaskPayload", "TaskStatus"}


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_a_model_has_the_fields_requiredness_and_types_of_its_schema(model: type[BaseModel]) -> None:
    document = SCHEMAS[schema_name(model)]
    ours = model.model_json_schema(mode="serialization", by_alias=True)
    assert set(ours["properties"]) == set(document["properties"])
    if model is not models.Problem:  # made from API Gateway's bare answers too: its members have defaults
        assert set(ours.get("required", [])) == set(document.get("required", []))
    for name, prop in document["properties"].items():
        assert kinds(ours["properties"][name], ours.get("$defs", {})) == kinds(prop, SCHEMAS), name


def test_the_task_status_enumeration_is_the_documents() -> None:
    assert {s.value for s in models.TaskStatus} == set(SCHEMAS["TaskStatus"]["enum"])


def test_a_create_request_uses_only_the_documents_fields() -> None:
    call = _base.create_call(
        "chat", "hi", payload=None, context={"a": 1}, model="m", params={"maxTokens": 5}, priority=1,
        scheduled_at=datetime(2027, 1, 1, tzinfo=UTC), max_attempts=2, max_cost_usd="0.5", idempotency_key=None,
    )  # fmt: skip
    assert set(call.json) == set(SCHEMAS["CreateTaskRequest"]["properties"])
    assert set(call.json["payload"]) == set(SCHEMAS["TaskPayload"]["properties"])
    assert call.json["type"] in SCHEMAS["CreateTaskRequest"]["properties"]["type"]["enum"]


def test_a_schema_change_is_caught() -> None:
    # the check can fail: a field the document gains, or a type it changes, is a difference
    changed = json.loads(json.dumps(SCHEMAS["AttemptView"]))
    changed["properties"]["latencyMs"] = {"type": "number"}
    ours = models.Attempt.model_json_schema(mode="serialization", by_alias=True)
    assert kinds(ours["properties"]["latencyMs"], {}) != kinds(changed["properties"]["latencyMs"], SCHEMAS)
