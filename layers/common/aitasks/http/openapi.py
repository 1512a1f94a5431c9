"""OpenAPI response declarations shared by the routes: every error is an RFC 9457 problem."""

from __future__ import annotations

from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse, OpenAPIResponseHeader

from aitasks.http.examples import PROBLEM
from aitasks.http.problems import PROBLEM_JSON


class FieldError(BaseModel):
    field: str = Field(description="the offending field, dotted (payload.prompt)")
    message: str


class Problem(BaseModel):
    """RFC 9457 problem details, as every error response carries them."""

    model_config = ConfigDict(json_schema_extra={"examples": [PROBLEM]})

    type: str = Field(description="a URI under https://aitasks.dev/problems/ naming the kind of problem")
    title: str
    status: int
    detail: str
    instance: str = Field(description="the request path")
    traceId: str = Field(description="the request id, also sent as X-Trace-Id")
    errors: list[FieldError] | None = Field(default=None, description="validation errors, field by field")


ETAG = "a hash of the body; send it back in If-None-Match"
IF_NONE_MATCH = "the ETag of the copy the client holds: an unchanged resource answers 304 with no body"
PAGE_HEADERS: dict[str, OpenAPIResponseHeader] = {
    "X-Total-Count": {"description": "the number of matching items, on every page", "schema": {"type": "integer"}},
    "Link": {
        "description": "RFC 8288 links rel=next and rel=prev, relative to the list's URL",
        "schema": {"type": "string"},
    },
}
LOCATION: dict[str, OpenAPIResponseHeader] = {
    "Location": {
        "description": "the task's URL, relative to the request's (`tasks/{id}`)",
        "schema": {"type": "string"},
    }
}


def responses(
    success: int,
    model: Any,
    *errors: int,
    description: str = "OK",
    headers: dict[str, OpenAPIResponseHeader] | None = None,
    etag: bool = False,
) -> dict[int, OpenAPIResponse]:
    """The success response with its body model, then each error status as a problem; with `etag`, the success
    carries an ETag and a 304 answers a matching If-None-Match (http.middleware.conditional_get)."""
    success_headers = dict(headers or {})
    if etag:
        success_headers["ETag"] = {"description": ETAG, "schema": {"type": "string"}}
    declared: dict[int, OpenAPIResponse] = {
        success: {"description": description, "content": {"application/json": {"model": model}}}
    }
    if success_headers:
        declared[success]["headers"] = success_headers
    if etag:
        declared[304] = {
            "description": "Not Modified: unchanged since the ETag sent in If-None-Match; no body",
            "headers": {"ETag": {"description": ETAG, "schema": {"type": "string"}}},
        }
    for status in (*errors, 500):
        declared[status] = {
            "description": HTTPStatus(status).phrase,
            "content": {PROBLEM_JSON: {"model": Problem}},
        }
    return declared


# The operations' tags, in the order Swagger UI shows them.
TAGS = {
    "tasks": "Submit tasks, follow them (state, attempts, outputs, history), cancel and retry them.",
    "usage": "The tenant's month: budget, spend, concurrency and work in progress.",
    "live updates": "Tickets that open the live-updates WebSocket.",
    "meta": "Liveness and this document; no key needed.",
}
DESCRIPTION = (
    "Asynchronous AI tasks: submit a prompt as a task, follow it while it is queued, retried and run, read its "
    "attempts and outputs, cancel it. Authenticate with `Authorization: Bearer <API key>`. Errors are RFC 9457 "
    "problems (application/problem+json); their types are listed in docs/api.md. `GET /api/v1/tasks/{task_id}` "
    "answers with an `ETag`; send it back in `If-None-Match` to get a bodiless 304 while the task is unchanged."
)


def document(resolvers: list[Any]) -> str:
    """One OpenAPI document for the routes of several resolvers (one per Lambda function), as stable JSON."""
    import json

    from aws_lambda_powertools.event_handler.openapi.merge import OpenAPIMerge
    from aws_lambda_powertools.event_handler.openapi.models import Contact, HTTPBearer, License, Server, Tag

    schemes: dict[str, Any] = {"apiKey": HTTPBearer(description="an API key from `aitasks keys create`")}
    merge = OpenAPIMerge(
        title="aitasks API",
        version="1.0.0",
        description=DESCRIPTION,
        tags=[Tag(name=name, description=text) for name, text in TAGS.items()],
        servers=[Server(url="/v1", description="the API's stage; routes are under /api/v1")],
        contact=Contact(name="aitasks maintainers", url="https://github.com/aitasks/aitasks/issues"),
        license_info=License(name="Apache-2.0", identifier="Apache-2.0"),
        security_schemes=schemes,
        security=[{"apiKey": []}],
        on_conflict="error",
    )
    for resolver in resolvers:
        merge.add_schema(json.loads(resolver.get_openapi_json_schema(security_schemes=schemes)))
    merged: dict[str, Any] = json.loads(merge.get_openapi_json_schema())
    merged["paths"] = dict(sorted(merged["paths"].items()))
    for operations in merged["paths"].values():
        for operation in operations.values():
            # Powertools declares a 422 on every route; routes that take no input never answer it.
            if "HTTPValidationError" in json.dumps(operation["responses"].get("422", {})):
                del operation["responses"]["422"]
            # ... and gives every response without content the route's body; a 304 has none.
            operation["responses"].get("304", {}).pop("content", None)
    text = json.dumps(merged["paths"])
    # Drop Powertools' own validation-error schemas where no route refers to them (ours are problems).
    for unused in ("HTTPValidationError", "ValidationError", "ResponseValidationError"):
        if f'/{unused}"' not in text and unused in merged["components"]["schemas"]:
            del merged["components"]["schemas"][unused]
    merged["components"]["schemas"] = dict(sorted(merged["components"]["schemas"].items()))
    return json.dumps(merged, indent=2, sort_keys=False) + "\n"
