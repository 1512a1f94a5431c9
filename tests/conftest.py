"""Shared helpers: API Gateway REST (v1) proxy events and a Lambda context, as API Gateway sends them."""

from __future__ import annotations

import json
import os
import threading
import uuid
from dataclasses import dataclass
from typing import Any

import pytest

# No X-Ray daemon in tests; set before any handler module builds its Tracer.
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "aitasks-test")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "aitasks-test")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


@dataclass
class LambdaContext:
    function_name: str = "test"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:000000000000:function:test"
    aws_request_id: str = "req-00000000"
    log_stream_name: str = "2026/11/24/[$LATEST]test"
    remaining_ms: int = 300_000  # as long as the executor's timeout: time for every model call it starts

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def rest_event(
    method: str,
    path: str,
    *,
    body: Any = None,
    tenant: str | None = "tenant-a",
    headers: dict[str, str] | None = None,
    raw_body: str | None = None,
    query: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A REST API (payload 1.0) proxy event; the tenant sits where a Lambda authorizer puts it."""
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    authorizer = {"principalId": tenant, "tenantId": tenant, "integrationLatency": 3} if tenant else {}
    return {
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": all_headers,
        "multiValueHeaders": {k: [v] for k, v in all_headers.items()},
        "queryStringParameters": query,
        "multiValueQueryStringParameters": {k: [v] for k, v in query.items()} if query else None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": path,
            "httpMethod": method,
            "path": f"/v1{path}",
            "stage": "v1",
            "requestId": str(uuid.uuid4()),
            "accountId": "000000000000",
            "apiId": "abc123",
            "identity": {"sourceIp": "127.0.0.1"},
            "authorizer": authorizer,
        },
        "body": raw_body if raw_body is not None else (json.dumps(body) if body is not None else None),
        "isBase64Encoded": False,
    }


def wake_up(tenant: str = "tenant-a", task_id: object = None) -> str:
    """A work-queue message body (application/ports.WakeUp)."""
    return json.dumps({"tenantId": tenant, **({"taskId": str(task_id)} if task_id else {})})


def sqs_event(*bodies: str) -> dict[str, Any]:
    return {
        "Records": [
            {
                "messageId": f"msg-{i}",
                "receiptHandle": f"rh-{i}",
                "body": body,
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:work",
                "awsRegion": "us-east-1",
            }
            for i, body in enumerate(bodies)
        ]
    }


@pytest.fixture
def lambda_context() -> LambdaContext:
    return LambdaContext(aws_request_id=str(uuid.uuid4()))


_load_lock = threading.Lock()


def load_handler(name: str, *, environment: str = "") -> Any:
    """Import functions/<name>/app.py as its own module, as Lambda does (every function's module is `app`).

    A module serves one request at a time (Powertools keeps the current request on its resolver), as a Lambda
    environment does; tests that call concurrently give each thread its own `environment`, i.e. its own copy.
    """
    with _load_lock:
        return _load(name, environment)


def _load(name: str, environment: str) -> Any:
    import importlib.util
    import pathlib
    import sys

    path = pathlib.Path(__file__).parents[1] / "functions" / name / "app.py"
    module_name = f"handler_{name}{environment}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module
