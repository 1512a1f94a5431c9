"""The real handlers on PostgreSQL (the work queue and usage plans as fakes): translation of events to use cases
and back."""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Any

import pytest

from aitasks.adapters.postgres import PostgresApiKeyRepository, PostgresTaskRepository, PostgresTenantRepository
from aitasks.application.auth import SetTier
from aitasks.domain.apikey import hash_api_key
from aitasks.domain.task import TaskStatus, TenantId
from aitasks.domain.tenant import Tier
from tests.conftest import load_handler, rest_event, sqs_event, wake_up
from tests.support.fakes import InMemoryUsagePlans

if TYPE_CHECKING:
    from aitasks.adapters.postgres import ConnectionProvider

BODY = {"type": "chat", "payload": {"prompt": "Say hi"}}


def call(name: str, event: dict[str, Any], ctx: Any) -> tuple[int, dict[str, str], Any]:
    response = load_handler(name).lambda_handler(event, ctx)
    body = json.loads(response["body"]) if response.get("body") else None
    headers = {k.lower(): v for k, v in (response.get("headers") or {}).items()}
    headers.update({k.lower(): v[0] for k, v in (response.get("multiValueHeaders") or {}).items()})
    return response["statusCode"], headers, body


def task_count(db: ConnectionProvider) -> int:
    return db().execute("SELECT count(*) AS n FROM tasks").fetchone()["n"]


def test_create_accepts_stores_queues_and_points_to_the_task(api, db, lambda_context) -> None:
    status, headers, body = call("create_task", rest_event("POST", "/api/v1/tasks", body=BODY), lambda_context)
    assert status == 202
    assert headers["location"] == f"tasks/{body['id']}"
    assert body["status"] == "queued"
    assert (body["priority"], body["maxAttempts"], body["attemptCount"]) == (5, 3, 0)
    assert body["payload"] == {"prompt": "Say hi"}
    stored = PostgresTaskRepository(db).get_by_id(uuid.UUID(body["id"]))
    assert stored.tenant_id == "tenant-a"
    assert [(m.tenant_id, m.task_id, m.delay_s) for m in api.sent] == [("tenant-a", stored.id, 0)]


def test_the_tenant_comes_from_the_authorizer_only(api, db, lambda_context) -> None:
    event = rest_event("POST", "/api/v1/tasks", body={**BODY, "tenantId": "tenant-b"}, headers={"X-Tenant": "b"})
    status, _, body = call("create_task", event, lambda_context)
    assert status == 422  # an unknown field is refused, it does not pick a tenant
    assert task_count(db) == 0
    status, _, body = call("create_task", rest_event("POST", "/api/v1/tasks", body=BODY, tenant=None), lambda_context)
    assert status == 401
    assert body["status"] == 401
    assert task_count(db) == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"type": "chat", "payload": {"prompt": ""}}, "payload.prompt"),
        ({"type": "poem", "payload": {"prompt": "x"}}, "type"),
        ({"type": "chat", "payload": {"prompt": "x"}, "priority": 10}, "priority"),
        ({"type": "chat", "payload": {"prompt": "x"}, "maxAttempts": 11}, "maxAttempts"),
        ({"type": "chat", "payload": {"prompt": "x"}, "scheduledAt": "2026-01-01T00:00:00"}, "scheduledAt"),
        ({"type": "chat"}, "payload"),
    ],
)
def test_invalid_bodies_are_422_problems_and_change_nothing(api, db, lambda_context, body, field) -> None:
    status, headers, problem = call("create_task", rest_event("POST", "/api/v1/tasks", body=body), lambda_context)
    assert status == 422
    assert headers["content-type"] == "application/problem+json"
    assert {"type", "title", "status", "detail", "instance", "traceId"} <= problem.keys()
    assert problem["traceId"] == lambda_context.aws_request_id
    assert field in {e["field"] for e in problem["errors"]}
    assert task_count(db) == 0
    assert not api.sent


def test_malformed_json_is_a_400_problem(api, db, lambda_context) -> None:
    event = rest_event("POST", "/api/v1/tasks", raw_body='{"type": "chat",')
    status, _headers, problem = call("create_task", event, lambda_context)
    assert (status, problem["status"]) == (400, 400)
    assert problem["type"].endswith("/malformed-json")
    assert task_count(db) == 0


def test_get_returns_the_task_and_another_tenants_task_is_404(api, lambda_context) -> None:
    _, _, created = call("create_task", rest_event("POST", "/api/v1/tasks", body=BODY), lambda_context)
    path = f"/api/v1/tasks/{created['id']}"
    status, _, body = call("query_tasks", rest_event("GET", path), lambda_context)
    assert (status, body) == (200, created)
    status, _, problem = call("query_tasks", rest_event("GET", path, tenant="tenant-b"), lambda_context)
    assert (status, problem["type"].rsplit("/", 1)[1]) == (404, "task-not-found")
    status, _, problem = call("query_tasks", rest_event("GET", "/api/v1/tasks/not-a-uuid"), lambda_context)
    assert status == 422


def test_health_needs_no_tenant(lambda_context) -> None:
    status, _, body = call("query_tasks", rest_event("GET", "/api/v1/health", tenant=None), lambda_context)
    assert (status, body) == (200, {"status": "ok"})


def test_the_executor_runs_a_task_once_and_drops_malformed_messages(api, db, lambda_context) -> None:
    _, _, created = call("create_task", rest_event("POST", "/api/v1/tasks", body=BODY), lambda_context)
    message = wake_up("tenant-a", created["id"])
    event = sqs_event(message, "not json", json.dumps({"taskId": "nope"}), message)  # a duplicate, too
    result = load_handler("executor").lambda_handler(event, lambda_context)
    assert result == {"batchItemFailures": []}
    task = PostgresTaskRepository(db).get(TenantId("tenant-a"), uuid.UUID(created["id"]))
    assert task.status is TaskStatus.SUCCEEDED
    attempts = db().execute("SELECT task_id, attempt_no, status FROM task_attempts").fetchall()
    assert [(a["task_id"], a["attempt_no"], a["status"]) for a in attempts] == [(task.id, 1, "succeeded")]


def test_the_authorizer_allows_a_valid_key_with_its_tenant_and_denies_others(api, db, lambda_context) -> None:
    from datetime import UTC, datetime

    PostgresApiKeyRepository(db).add(
        tenant_id=TenantId("acme"), name="k", key_hash=hash_api_key("ait_good"), now=datetime.now(UTC)
    )
    arn = "arn:aws:execute-api:us-east-1:000000000000:abc123/v1/GET/api/v1/tasks"
    handler = load_handler("authorizer").lambda_handler

    def event(auth: str | None) -> dict[str, Any]:
        return {"type": "REQUEST", "methodArn": arn, "headers": {"Authorization": auth} if auth else {}}

    allowed = handler(event("Bearer ait_good"), lambda_context)
    assert allowed["principalId"] == "acme"
    assert allowed["context"] == {"tenantId": "acme"}
    assert allowed["policyDocument"]["Statement"][0]["Effect"] == "Allow"
    # No tier yet: no usage plan key, so API Gateway refuses (every authorized route requires one).
    assert "usageIdentifierKey" not in allowed
    tenants = PostgresTenantRepository(db)
    SetTier(tenants, InMemoryUsagePlans())(TenantId("acme"), Tier.PRO)
    tiered = load_handler("authorizer").lambda_handler(event("Bearer ait_good"), lambda_context)
    assert tiered["usageIdentifierKey"] == tenants.get(TenantId("acme")).usage_key
    for bad in (None, "Bearer ait_bad", "Basic ait_good", "Bearer"):
        with pytest.raises(Exception, match=r"^Unauthorized$"):
            handler(event(bad), lambda_context)


def test_the_executor_publishes_a_batchs_counts_and_totals_once_and_each_runs_latency(
    api, lambda_context, capsys
) -> None:
    create = rest_event("POST", "/api/v1/tasks", body=BODY)
    ids = [call("create_task", create, lambda_context)[2]["id"] for _ in "abc"]
    capsys.readouterr()
    event = sqs_event(*(wake_up("tenant-a", i) for i in ids))
    assert load_handler("executor").lambda_handler(event, lambda_context) == {"batchItemFailures": []}
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    attempts = [m for m in emf if "Attempts" in m]
    assert [(m["outcome"], m["Attempts"]) for m in attempts] == [("succeeded", [3])]  # one count a batch
    batch = next(m for m in emf if "ModelLatency" in m)
    assert len(batch["ModelLatency"]) == len(batch["QueueToStartDelay"]) == 3  # one value a run: percentiles
    assert len(batch["TokensIn"]) == len(batch["CostUSD"]) == 1 and batch["TokensIn"][0] > 0  # one total a batch
