"""API discovery: every operation is described, the document and Swagger UI are public, and ETags answer 304."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tests.conftest import load_handler, rest_event

ROOT = Path(__file__).parents[2]
DOCUMENT = json.loads((ROOT / "docs" / "openapi.json").read_text())
OPERATIONS = [(f"{method.upper()} {path}", op) for path, ops in DOCUMENT["paths"].items() for method, op in ops.items()]


def get(path: str, lambda_context: Any, **kwargs: Any) -> dict[str, Any]:
    reply: dict[str, Any] = load_handler("query_tasks").lambda_handler(
        rest_event("GET", path, **kwargs), lambda_context
    )
    reply["headers"] = {k.lower(): v for k, v in (reply.get("headers") or {}).items()} | {
        k.lower(): ", ".join(v) for k, v in (reply.get("multiValueHeaders") or {}).items()
    }
    return reply


def test_every_operation_has_an_id_a_summary_a_description_and_known_tags() -> None:
    declared_tags = {tag["name"] for tag in DOCUMENT["tags"]}
    for name, operation in OPERATIONS:
        assert re.fullmatch(r"[a-z][A-Za-z]+", operation.get("operationId", "")), name
        assert operation.get("summary") and operation.get("description"), name
        assert operation.get("tags") and set(operation["tags"]) <= declared_tags, name
    ids = [operation["operationId"] for _, operation in OPERATIONS]
    assert len(ids) == len(set(ids))
    assert {"createTask", "listTasks", "getTask", "cancelTask", "retryTask", "getUsage", "getHealth"} <= set(ids)
    assert DOCUMENT["info"]["contact"] and DOCUMENT["info"]["license"]


def test_bodies_have_examples() -> None:
    schemas = DOCUMENT["components"]["schemas"]
    for name in ("CreateTaskRequest", "TaskView", "AttemptView", "ArtifactView", "EventView", "UsageView", "Problem"):
        assert schemas[name].get("examples"), name


def test_the_document_and_swagger_ui_are_served_without_a_key(lambda_context) -> None:
    document = get("/openapi.json", lambda_context, tenant=None)
    assert document["statusCode"] == 200
    assert json.loads(document["body"]) == DOCUMENT
    assert document["headers"]["etag"]

    page = get("/docs", lambda_context, tenant=None)
    assert page["statusCode"] == 200
    assert page["headers"]["content-type"].startswith("text/html")
    html = page["body"]
    assert "SwaggerUIBundle" in html and "cdn" not in html.lower().split("<script>", 1)[0]
    spec = json.loads(re.search(r'<script id="openapi" type="application/json">(.*?)</script>', html, re.S)[1])
    assert spec == DOCUMENT
    policy = dict(d.strip().split(" ", 1) for d in page["headers"]["content-security-policy"].split(";"))
    assert (policy["default-src"], policy["connect-src"], policy["frame-ancestors"]) == ("'none'", "'self'", "'none'")
    assert policy["script-src"].count("'sha256-") == 2  # the bundle and its start, and nothing else
    assert "unsafe" not in policy["script-src"]


def test_the_document_answers_a_matching_if_none_match_with_304(lambda_context) -> None:
    tag = get("/openapi.json", lambda_context, tenant=None)["headers"]["etag"]
    again = get("/openapi.json", lambda_context, tenant=None, headers={"If-None-Match": tag})
    assert (again["statusCode"], again.get("body") or "", again["headers"]["etag"]) == (304, "", tag)
    assert "content-type" not in again["headers"]
    assert get("/openapi.json", lambda_context, tenant=None, headers={"If-None-Match": '"x"'})["statusCode"] == 200


def test_the_document_under_the_api_prefix_is_the_same(lambda_context) -> None:
    reply = get("/api/v1/openapi.json", lambda_context)
    assert reply["statusCode"] == 200
    assert json.loads(reply["body"]) == DOCUMENT
    assert DOCUMENT["paths"]["/api/v1/openapi.json"]["get"]["deprecated"] is True
