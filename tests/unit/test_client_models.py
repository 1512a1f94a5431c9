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

from tests.support.task_example import TASK_JSON

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


def differences(model: type[BaseModel], document: dict[str, Any], schemas: dict[str, Any]) -> list[str]:
    """How a model differs from its schema in the document: fields, requiredness, JSON types, enumerations."""
    ours = model.model_json_schema(mode="serialization", by_alias=True)
    found = []
    if set(ours["properties"]) != set(document["properties"]):
        found.append(f"fields {sorted(set(ours['properties']) ^ set(document['properties']))}")
    # Problem is made from API Gateway's bare answers too: its members have defaults
    if model is not models.Problem and set(ours.get("required", [])) != set(document.get("required", [])):
        found.append("required")
    for name, prop in document["properties"].items():
        if name in ours["properties"] and kinds(ours["properties"][name], ours.get("$defs", {})) != kinds(
            prop, schemas
        ):
            found.append(f"type of {name}")
    return found


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_a_model_has_the_fields_requiredness_and_types_of_its_schema(model: type[BaseModel]) -> None:
    assert differences(model, SCHEMAS[schema_name(model)], SCHEMAS) == []


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
    # the check can fail: a field the document gains, a type or an enumeration it changes are differences
    schemas = json.loads(json.dumps(SCHEMAS))
    schemas["AttemptView"]["properties"]["latencyMs"] = {"type": "number"}
    schemas["AttemptView"]["properties"]["region"] = {"type": "string"}
    schemas["AttemptView"]["required"].append("region")
    schemas["TaskStatus"]["enum"].append("paused")
    assert differences(models.Attempt, schemas["AttemptView"], schemas) == [
        "fields ['region']",
        "required",
        "type of latencyMs",
    ]
    assert differences(models.Task, schemas["TaskView"], schemas) == ["type of status"]


def test_values_a_newer_api_adds_are_kept_not_refused() -> None:
    task = models.Task.model_validate({**TASK_JSON, "status": "paused", "waitingFor": "gpu", "shard": 3})
    assert task.status == "paused" and not task.done and task.waiting_for == "gpu"
    assert task.model_extra == {"shard": 3}
    assert models.TaskStatus("queued") is models.TaskStatus.QUEUED
