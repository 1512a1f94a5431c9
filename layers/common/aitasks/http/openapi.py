"""OpenAPI response declarations shared by the routes: every error is an RFC 9457 problem."""

from __future__ import annotations

from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse

from aitasks.http.problems import PROBLEM_JSON


class FieldError(BaseModel):
    field: str = Field(description="the offending field, dotted (payload.prompt)")
    message: str


class Problem(BaseModel):
    """RFC 9457 problem details, as every error response carries them."""

    type: str = Field(description="a URI under https://aitasks.dev/problems/ naming the kind of problem")
    title: str
    status: int
    detail: str
    instance: str = Field(description="the request path")
    traceId: str = Field(description="the request id, also sent as X-Trace-Id")
    errors: list[FieldError] | None = Field(default=None, description="validation errors, field by field")


def responses(success: int, model: Any, *errors: int, description: str = "OK") -> dict[int, OpenAPIResponse]:
    """The success response with its body model, then each error status as a problem."""
    declared: dict[int, OpenAPIResponse] = {
        success: {"description": description, "content": {"application/json": {"model": model}}}
    }
    for status in (*errors, 500):
        declared[status] = {
            "description": HTTPStatus(status).phrase,
            "content": {PROBLEM_JSON: {"model": Problem}},
        }
    return declared


def document(resolvers: list[Any]) -> str:
    """One OpenAPI document for the routes of several resolvers (one per Lambda function), as stable JSON."""
    import json

    from aws_lambda_powertools.event_handler.openapi.models import HTTPBearer, Server

    merged: dict[str, Any] = {}
    for resolver in resolvers:
        part = json.loads(
            resolver.get_openapi_json_schema(
                title="aitasks API",
                version="1.0.0",
                description=(
                    "Asynchronous AI tasks. Authenticate with `Authorization: Bearer <API key>`. Errors are "
                    "RFC 9457 problems (application/problem+json); types are listed in docs/api.md."
                ),
                servers=[Server(url="/v1", description="the API's stage; routes are under /api/v1")],
                security_schemes={"apiKey": HTTPBearer(description="an API key from `aitasks keys create`")},
                security=[{"apiKey": []}],
            )
        )
        if not merged:
            merged = part
            continue
        for path, operations in part["paths"].items():
            merged["paths"].setdefault(path, {}).update(operations)
        merged.setdefault("components", {}).setdefault("schemas", {}).update(
            part.get("components", {}).get("schemas", {})
        )
    merged["paths"] = dict(sorted(merged["paths"].items()))
    for operations in merged["paths"].values():
        for operation in operations.values():
            # Powertools declares a 422 on every route; routes that take no input never answer it.
            if "HTTPValidationError" in json.dumps(operation["responses"].get("422", {})):
                del operation["responses"]["422"]
    text = json.dumps(merged["paths"])
    # Drop Powertools' own validation-error schemas where no route refers to them (ours are problems).
    for unused in ("HTTPValidationError", "ValidationError", "ResponseValidationError"):
        if f'/{unused}"' not in text and unused in merged["components"]["schemas"]:
            del merged["components"]["schemas"][unused]
    merged["components"]["schemas"] = dict(sorted(merged["components"]["schemas"].items()))
    return json.dumps(merged, indent=2, sort_keys=False) + "\n"
