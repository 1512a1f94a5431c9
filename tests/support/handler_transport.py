"""An httpx2 transport that answers like the deployed API, in-process: each request goes through the real
authorizer and then the real handler of its route, as API Gateway REST (payload 1.0) events."""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

import httpx2

from tests.conftest import LambdaContext, load_handler, rest_event

BASE = "http://api.test/v1/api/v1"
_STAGE_PREFIX = "/v1"


def _function(method: str, path: str) -> str:
    if method == "POST" and path == "/api/v1/tasks":
        return "create_task"
    if method == "POST" and re.fullmatch(r"/api/v1/tasks/[^/]+/(cancel|retry)", path):
        return "cancel_task"
    if method == "POST" and path == "/api/v1/websocket-tickets":
        return "dashboard"
    return "query_tasks"


FUNCTIONS = ("authorizer", "create_task", "cancel_task", "query_tasks", "dashboard", "executor")


class HandlerTransport(httpx2.BaseTransport):
    def __init__(self, on_request: Callable[[httpx2.Request], None] | None = None) -> None:
        self.on_request = on_request
        self.requests: list[httpx2.Request] = []
        self.handler_output = io.StringIO()
        # Imported now, not under a CliRunner: each handler's Logger keeps the stdout it found at import.
        for name in FUNCTIONS:
            load_handler(name)

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        # The handlers' metrics (EMF) are printed: keep them out of the command's own stdout.
        with contextlib.redirect_stdout(self.handler_output):
            return self._handle(request)

    def _handle(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        if self.on_request is not None:
            self.on_request(request)
        path = request.url.path.removeprefix(_STAGE_PREFIX)
        headers = {k.title(): v for k, v in request.headers.items()}
        context = LambdaContext()
        arn = f"arn:aws:execute-api:us-east-1:000000000000:abc123/v1/{request.method}{path}"
        try:
            allowed = load_handler("authorizer").lambda_handler(
                {"type": "REQUEST", "methodArn": arn, "headers": headers}, context
            )
        except Exception as exc:
            if str(exc) == "Unauthorized":
                return httpx2.Response(401, json={"message": "Unauthorized"})
            # any other failure is the template's AUTHORIZER_FAILURE gateway response
            problem = {"type": "https://aitasks.dev/problems/unavailable", "title": "Service Unavailable",
                       "status": 503, "detail": "authentication is unavailable; retry later", "instance": path,
                       "traceId": "gateway"}  # fmt: skip
            return httpx2.Response(503, headers={"Retry-After": "5"}, json=problem)
        query = dict(parse_qsl(request.url.query.decode())) or None
        body = request.content.decode() or None
        event = rest_event(request.method, path, tenant=allowed["context"]["tenantId"], headers=headers,
                           raw_body=body, query=query)  # fmt: skip
        answer: dict[str, Any] = load_handler(_function(request.method, path)).lambda_handler(event, context)
        out_headers = dict(answer.get("headers") or {})
        for name, values in (answer.get("multiValueHeaders") or {}).items():
            out_headers[name] = values[0]
        content = answer.get("body") or ""
        return httpx2.Response(answer["statusCode"], headers=out_headers, content=content.encode())


def drain(queue: Any, context: Any = None) -> int:
    """Deliver every wake-up the fake queue holds to the executor, in one batch; how many were delivered."""
    from tests.conftest import sqs_event

    sent = list(queue.sent)
    queue.sent.clear()
    if sent:
        bodies = [m.wake.body() for m in sent]
        with contextlib.redirect_stdout(io.StringIO()):
            load_handler("executor").lambda_handler(sqs_event(*bodies), context or LambdaContext())
    return len(sent)


class AsyncHandlerTransport(httpx2.AsyncBaseTransport):
    """The same, for an async client: each request answered on a worker thread (a Lambda environment of its own)."""

    def __init__(self, sync: HandlerTransport) -> None:
        self.sync = sync

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        import asyncio

        await request.aread()
        return await asyncio.to_thread(self.sync.handle_request, request)
