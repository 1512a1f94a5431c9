"""The OpenAPI document is generated from the routes; the committed copies (docs/ and the one the API serves)
must be what the routes generate now."""

from __future__ import annotations

import json
from pathlib import Path

from aitasks.domain.task_types import REGISTRY
from aitasks.http.models import TaskType
from aitasks.http.openapi import document
from aitasks_cli.main import API_FUNCTIONS, OPENAPI_COPIES
from tests.conftest import load_handler

ROOT = Path(__file__).parents[2]


def test_committed_copies_match_the_routes(lambda_context) -> None:
    generated = document([load_handler(name).app for name in API_FUNCTIONS])
    for copy in OPENAPI_COPIES:
        assert (ROOT / copy).read_text() == generated, f"{copy} is stale: run `make openapi`"


def test_the_route_serves_the_document(lambda_context) -> None:
    from tests.conftest import rest_event

    reply = load_handler("query_tasks").lambda_handler(rest_event("GET", "/api/v1/openapi.json"), lambda_context)
    assert reply["statusCode"] == 200
    assert json.loads(reply["body"]) == json.loads((ROOT / "docs" / "openapi.json").read_text())


def test_errors_are_documented_as_problems_and_types_as_the_registry() -> None:
    doc = json.loads((ROOT / "docs" / "openapi.json").read_text())
    create = doc["paths"]["/api/v1/tasks"]["post"]
    assert set(create["responses"]) >= {"202", "400", "401", "409", "413", "415", "422", "429", "500", "503"}
    assert "application/problem+json" in create["responses"]["422"]["content"]
    assert doc["components"]["schemas"]["CreateTaskRequest"]["properties"]["type"]["enum"] == list(REGISTRY)
    assert set(TaskType.__args__) == set(REGISTRY)
    assert doc["paths"]["/api/v1/health"]["get"]["security"] == [{}]
