"""Every route and every error status through the real handlers, on PostgreSQL, with REST (v1) proxy events."""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urljoin, urlparse

import pytest

from aitasks import bootstrap
from aitasks.adapters.postgres import connect
from tests.conftest import LambdaContext, load_handler, rest_event

BODY = {"type": "chat", "payload": {"prompt": "Say hi", "context": {"lang": "pt"}}, "priority": 2}
API = "https://example.test/v1/api/v1/"


class Reply:
    def __init__(self, raw: dict[str, Any]) -> None:
        self.status = raw["statusCode"]
        self.headers = {k.lower(): v for k, v in (raw.get("headers") or {}).items()}
        for k, v in (raw.get("multiValueHeaders") or {}).items():
            self.headers[k.lower()] = ", ".join(v)
        self.body = json.loads(raw["body"]) if raw.get("body") else None

    def __repr__(self) -> str:
        return f"<{self.status} {self.body}>"


def call(
    function: str, method: str, path: str, *, tenant: str | None = "tenant-a", environment: str = "", **kwargs: Any
) -> Reply:
    event = rest_event(method, path, tenant=tenant, **kwargs)
    handler = load_handler(function, environment=environment).lambda_handler
    return Reply(handler(event, LambdaContext(aws_request_id=str(uuid.uuid4()))))


def create(
    body: dict[str, Any] | None = None, *, tenant: str = "tenant-a", key: str | None = None, environment: str = ""
) -> Reply:
    headers = {"Idempotency-Key": key} if key else None
    return call(
        "create_task",
        "POST",
        "/api/v1/tasks",
        body=body or BODY,
        tenant=tenant,
        headers=headers,
        environment=environment,
    )


def get(path: str, *, tenant: str = "tenant-a", **query: str) -> Reply:
    return call("query_tasks", "GET", path, tenant=tenant, query=query or None)


def cancel(task_id: str, *, tenant: str = "tenant-a") -> Reply:
    return call("cancel_task", "POST", f"/api/v1/tasks/{task_id}/cancel", tenant=tenant)


def set_status(db, task_id: str, status: str, **extra: Any) -> None:
    assignments = ", ".join(f"{k} = %({k})s" for k in extra)
    db().execute(
        f"UPDATE tasks SET status = %(status)s{', ' + assignments if assignments else ''} WHERE id = %(id)s".encode(),
        {"status": status, "id": task_id, **extra},
    )


def is_problem(reply: Reply, status: int, slug: str) -> None:
    assert reply.status == status, reply
    assert reply.headers["content-type"] == "application/problem+json"
    assert reply.body["status"] == status
    assert reply.body["type"] == f"https://aitasks.dev/problems/{slug}"
    assert reply.body["traceId"] and reply.headers["x-trace-id"] == reply.body["traceId"]
    assert {"title", "detail", "instance"} <= reply.body.keys()


def count_tasks(db) -> int:
    return db().execute("SELECT count(*) AS n FROM tasks").fetchone()["n"]


# --- create and read -----------------------------------------------------------------------------------------


def test_create_then_read_every_route(api, db) -> None:
    created = create()
    assert created.status == 202
    task = created.body
    assert urljoin(API + "tasks", created.headers["location"]) == f"{API}tasks/{task['id']}"
    assert {k: task[k] for k in ("type", "priority", "status", "attemptCount", "maxAttempts", "cancelRequested")} == {
        "type": "chat",
        "priority": 2,
        "status": "queued",
        "attemptCount": 0,
        "maxAttempts": 3,
        "cancelRequested": False,
    }
    assert (task["tokensIn"], task["tokensOut"], task["cost"]) == (0, 0, None)
    assert [m.task_id for m in api.sent] == [uuid.UUID(task["id"])]

    assert get(f"/api/v1/tasks/{task['id']}").body == task
    assert get(f"/api/v1/tasks/{task['id']}/attempts").body == []
    assert get(f"/api/v1/tasks/{task['id']}/artifacts").body == []
    listed = get("/api/v1/tasks")
    assert (listed.status, listed.body, listed.headers["x-total-count"]) == (200, [task], "1")
    assert "link" not in listed.headers


def test_attempts_and_artifacts_are_served_in_order(api, db) -> None:
    task_id = create().body["id"]
    now = datetime.now(UTC)
    db().execute(
        "INSERT INTO task_attempts (id, task_id, attempt_no, status, started_at, ended_at, model, tokens_in,"
        " tokens_out, cost, latency_ms, error_code, error_detail) VALUES"
        " (gen_random_uuid(), %(t)s, 2, 'succeeded', %(n)s, %(n)s, 'gpt-4o-mini', 10, 5, 0.0000045, 120, NULL, NULL),"
        " (gen_random_uuid(), %(t)s, 1, 'failed', %(n)s, %(n)s, 'gpt-4o-mini', 10, 0, 0.0000015, 80, 'rate_limit',"
        "  'slow down')",
        {"t": task_id, "n": now},
    )
    db().execute(
        "INSERT INTO task_artifacts (id, task_id, kind, content, uri, created_at) VALUES"
        " (gen_random_uuid(), %(t)s, 'text', 'hello', NULL, %(n)s),"
        " (gen_random_uuid(), %(t)s, 'link', NULL, 's3://bucket/x', %(later)s)",
        {"t": task_id, "n": now, "later": now + timedelta(seconds=1)},
    )
    attempts = get(f"/api/v1/tasks/{task_id}/attempts").body
    assert [(a["attemptNo"], a["status"], a["errorCode"]) for a in attempts] == [
        (1, "failed", "rate_limit"),
        (2, "succeeded", None),
    ]
    assert attempts[1] | {"startedAt": None, "endedAt": None} == {
        "attemptNo": 2,
        "status": "succeeded",
        "model": "gpt-4o-mini",
        "tokensIn": 10,
        "tokensOut": 5,
        "cost": "0.00000450",
        "costEstimated": False,
        "latencyMs": 120,
        "errorCode": None,
        "errorDetail": None,
        "startedAt": None,
        "endedAt": None,
    }
    artifacts = get(f"/api/v1/tasks/{task_id}/artifacts").body
    assert [(a["kind"], a["content"], a["uri"]) for a in artifacts] == [
        ("text", "hello", None),
        ("link", None, "s3://bucket/x"),
    ]


# --- validation and problems ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"type": "poem", "payload": {"prompt": "x"}}, {"type"}),
        ({"type": "chat", "payload": {"prompt": ""}}, {"payload.prompt"}),
        ({"type": "chat", "payload": {"prompt": "x"}, "priority": -1}, {"priority"}),
        ({"type": "chat", "payload": {"prompt": "x"}, "maxAttempts": 0}, {"maxAttempts"}),
        ({"type": "chat", "payload": {"prompt": "x"}, "scheduledAt": "tomorrow"}, {"scheduledAt"}),
        ({"type": "chat", "payload": {"prompt": "x"}, "scheduledAt": 0}, {"scheduledAt"}),
        ({"type": "chat", "payload": {"prompt": "x"}, "priority": False}, {"priority"}),
        ({"type": "chat", "payload": {"prompt": "x"}, "maxAttempts": "3"}, {"maxAttempts"}),
        ({"type": "chat", "payload": {"prompt": 7}}, {"payload.prompt"}),
        ({"type": "chat", "payload": {"prompt": "x"}, "scheduledAt": "2026-01-01T10:00:00"}, {"scheduledAt"}),
        (
            {
                "type": "chat",
                "payload": {"prompt": "x"},
                "scheduledAt": (datetime.now(UTC) + timedelta(days=366)).isoformat(),
            },
            {"scheduledAt"},
        ),
        ({"type": "summarize", "payload": {"prompt": "sum it up"}}, {"payload.context"}),
        ({"type": "extract", "payload": {"prompt": "x", "context": "y"}}, {"payload.params.schema"}),
        (
            {"type": "extract", "payload": {"prompt": "x", "params": {"schema": {"type": 12}}}},
            {"payload.params.schema"},
        ),
        ({"type": "chat", "payload": {"prompt": "x", "surprise": 1}}, {"payload.surprise"}),
        ([1, 2], {"body"}),
        ({"type": "chat", "payload": {"prompt": "a\u0000b"}}, {"payload.prompt"}),
        ({"type": "chat", "payload": {"prompt": "x", "context": {"k\u0000": "v"}}}, {"payload.context"}),
    ],
)
def test_invalid_tasks_are_422_with_field_errors_and_change_nothing(api, db, body, fields) -> None:
    reply = create(body)
    is_problem(reply, 422, "validation")
    assert fields <= {e["field"] for e in reply.body["errors"]}, reply.body
    assert count_tasks(db) == 0
    assert api.sent == []


def test_the_other_error_statuses(api, db) -> None:
    is_problem(call("create_task", "POST", "/api/v1/tasks", raw_body='{"type": '), 400, "malformed-json")
    for content_type in ("application/x-www-form-urlencoded", "text/plain", "multipart/form-data"):
        headers = {"Content-Type": content_type, "Idempotency-Key": "k"}
        reply = call("create_task", "POST", "/api/v1/tasks", raw_body=json.dumps(BODY), headers=headers)
        is_problem(reply, 415, "unsupported-media-type")
    huge = {"type": "chat", "payload": {"prompt": "x" * 200_000, "context": "y" * 70_000}}
    is_problem(create(huge), 413, "too-large")
    is_problem(get("/api/v1/nothing-here"), 404, "not-found")
    is_problem(get(f"/api/v1/tasks/{uuid.uuid4()}"), 404, "task-not-found")
    is_problem(call("query_tasks", "GET", "/api/v1/tasks", tenant=None), 401, "unauthorized")
    is_problem(get("/api/v1/tasks/not-a-uuid"), 422, "validation")
    assert count_tasks(db) == 0


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("DELETE", "/api/v1/tasks", "GET, POST"),
        ("PUT", f"/api/v1/tasks/{uuid.uuid4()}", "GET"),
        ("GET", f"/api/v1/tasks/{uuid.uuid4()}/cancel", "POST"),
        ("POST", "/api/v1/health", "GET"),
    ],
)
def test_a_wrong_method_on_a_known_path_is_405_with_allow(api, method: str, path: str, allow: str) -> None:
    reply = call("query_tasks", method, path)
    is_problem(reply, 405, "method-not-allowed")
    assert reply.headers["allow"] == allow


def test_a_scheduled_time_in_the_past_runs_now_and_a_future_one_is_delayed(api) -> None:
    past = create({**BODY, "scheduledAt": "2020-01-01T00:00:00+00:00"})
    soon = create({**BODY, "scheduledAt": (datetime.now(UTC) + timedelta(minutes=5)).isoformat()})
    assert (past.status, soon.status) == (202, 202)
    delays = {str(m.task_id): m.delay_s for m in api.sent}
    assert delays[past.body["id"]] == 0
    assert 290 <= delays[soon.body["id"]] <= 300


def test_a_database_outage_is_503_with_retry_after(api, monkeypatch) -> None:
    from aitasks.adapters.postgres import ConnectionProvider, PostgresTaskRepository

    dead = ConnectionProvider(lambda: "postgresql://postgres@127.0.0.1:1/x?connect_timeout=1")
    monkeypatch.setattr(bootstrap, "task_repository", lambda: PostgresTaskRepository(dead))
    reply = create()
    is_problem(reply, 503, "unavailable")
    assert reply.headers["retry-after"] == "5"


def test_an_unexpected_error_is_a_500_without_internals(api, monkeypatch) -> None:
    class Broken:
        def get(self, *args: Any) -> None:
            raise RuntimeError("secret internals: password=hunter2")

    monkeypatch.setattr(bootstrap, "task_repository", Broken)
    reply = get(f"/api/v1/tasks/{uuid.uuid4()}")
    is_problem(reply, 500, "internal")
    assert "hunter2" not in json.dumps(reply.body)


# --- cancel --------------------------------------------------------------------------------------------------


def test_cancel_a_queued_task_at_once_twice_is_fine(api, db) -> None:
    task_id = create().body["id"]
    first = cancel(task_id)
    assert (first.status, first.body["status"], first.body["cancelRequested"]) == (202, "cancelled", True)
    again = cancel(task_id)
    assert (again.status, again.body["status"]) == (202, "cancelled")
    events = [
        r["event_type"] for r in db().execute("SELECT event_type FROM outbox_messages WHERE task_id = %s", (task_id,))
    ]
    assert events.count("task.cancelled") == 1


def test_cancel_a_running_task_records_the_request(api, db) -> None:
    task_id = create().body["id"]
    set_status(db, task_id, "running", locked_by="run-1", locked_until=datetime.now(UTC) + timedelta(minutes=2))
    reply = cancel(task_id)
    assert (reply.status, reply.body["status"], reply.body["cancelRequested"]) == (202, "running", True)


@pytest.mark.parametrize("status", ["succeeded", "dead_letter"])
def test_cancel_a_finished_task_is_409(api, db, status: str) -> None:
    task_id = create().body["id"]
    set_status(db, task_id, status)
    is_problem(cancel(task_id), 409, "invalid-state")
    assert get(f"/api/v1/tasks/{task_id}").body["status"] == status


# --- listing -------------------------------------------------------------------------------------------------


def make_tasks(db, n: int, tenant: str = "tenant-a", **columns: str) -> None:
    """n tasks with distinct creation times, inserted directly (faster than n handler calls)."""
    db().execute(
        "INSERT INTO tasks (id, tenant_id, type, priority, status, payload, available_at, created_at, updated_at)"
        ' SELECT gen_random_uuid(), %(tenant)s, %(type)s, 5, %(status)s, \'{"prompt": "p"}\','
        " now(), now() - g * interval '1 second', now() FROM generate_series(1, %(n)s) AS g",
        {"tenant": tenant, "n": n, "type": columns.get("type", "chat"), "status": columns.get("status", "queued")},
    )


def links(reply: Reply) -> dict[str, dict[str, list[str]]]:
    out = {}
    for part in reply.headers.get("link", "").split(","):
        if part.strip():
            target, rel = part.split(";")
            url = target.strip()[1:-1]
            out[rel.split("=")[1].strip('"')] = {"path": urlparse(url).path, **parse_qs(urlparse(url).query)}
    return out


def test_pages_newest_first_with_total_and_links(api, db) -> None:
    make_tasks(db, 45)
    first = get("/api/v1/tasks")
    assert (len(first.body), first.headers["x-total-count"]) == (20, "45")
    created = [t["createdAt"] for t in first.body]
    assert created == sorted(created, reverse=True)
    assert links(first) == {"next": {"path": "tasks", "page": ["2"], "pageSize": ["20"]}}
    last = get("/api/v1/tasks", page="3")
    assert len(last.body) == 5
    assert links(last) == {"prev": {"path": "tasks", "page": ["2"], "pageSize": ["20"]}}
    beyond = get("/api/v1/tasks", page="9")
    assert (beyond.status, beyond.body, beyond.headers["x-total-count"]) == (200, [], "45")
    assert links(beyond)["prev"]["page"] == ["3"]
    everything = get("/api/v1/tasks", pageSize="100")
    assert len(everything.body) == 45 and "link" not in everything.headers
    ids = [t["id"] for p in (1, 2, 3) for t in get("/api/v1/tasks", page=str(p)).body]
    assert len(set(ids)) == 45  # pages neither repeat nor skip


def test_an_empty_list(api) -> None:
    empty = get("/api/v1/tasks")
    assert (empty.status, empty.body, empty.headers["x-total-count"]) == (200, [], "0")


def test_filters_by_status_and_type_lists(api, db) -> None:
    make_tasks(db, 3, status="queued")
    make_tasks(db, 2, status="succeeded")
    make_tasks(db, 4, status="failed", type="extract")
    assert get("/api/v1/tasks", status="succeeded").headers["x-total-count"] == "2"
    assert get("/api/v1/tasks", status="queued,succeeded").headers["x-total-count"] == "5"
    assert get("/api/v1/tasks", type="extract").headers["x-total-count"] == "4"
    both = get("/api/v1/tasks", status="failed,queued", type="chat", pageSize="2")
    assert (both.headers["x-total-count"], len(both.body)) == ("3", 2)
    assert links(both)["next"] == {
        "path": "tasks",
        "status": ["failed,queued"],
        "type": ["chat"],
        "page": ["2"],
        "pageSize": ["2"],
    }


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"status": "done"}, "status"),
        ({"type": "poem"}, "type"),
        ({"pageSize": "101"}, "pageSize"),
        ({"pageSize": "0"}, "pageSize"),
        ({"page": "0"}, "page"),
        ({"page": "x"}, "page"),
    ],
)
def test_bad_list_queries_are_422(api, query, field) -> None:
    reply = get("/api/v1/tasks", **query)
    is_problem(reply, 422, "validation")
    assert field in {e["field"] for e in reply.body["errors"]}


# --- tenants -------------------------------------------------------------------------------------------------


def test_another_tenant_gets_404_on_every_route_and_never_sees_the_task(api, db) -> None:
    task_id = create(tenant="tenant-a").body["id"]
    for path in (f"/api/v1/tasks/{task_id}", f"/api/v1/tasks/{task_id}/attempts", f"/api/v1/tasks/{task_id}/artifacts"):
        is_problem(get(path, tenant="tenant-b"), 404, "task-not-found")
    is_problem(cancel(task_id, tenant="tenant-b"), 404, "task-not-found")
    listed = get("/api/v1/tasks", tenant="tenant-b")
    assert (listed.body, listed.headers["x-total-count"]) == ([], "0")
    assert get(f"/api/v1/tasks/{task_id}", tenant="tenant-a").body["status"] == "queued"  # B changed nothing


# --- Idempotency-Key -----------------------------------------------------------------------------------------


def test_the_same_key_and_body_replays_the_first_response(api, db) -> None:
    first = create(key="k-1")
    again = create(key="k-1")
    assert (again.status, again.body, again.headers["location"]) == (202, first.body, first.headers["location"])
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert count_tasks(db) == 1
    assert len(api.sent) == 1


def test_key_order_in_the_body_does_not_matter_but_content_does(api, db) -> None:
    first = create({"payload": BODY["payload"], "priority": 2, "type": "chat"}, key="k-2")
    assert create(BODY, key="k-2").body["id"] == first.body["id"]
    is_problem(create({**BODY, "priority": 3}, key="k-2"), 422, "idempotency-key-reused")
    assert count_tasks(db) == 1


def test_keys_belong_to_their_tenant(api, db) -> None:
    a = create(key="shared", tenant="tenant-a")
    b = create(key="shared", tenant="tenant-b")
    assert a.body["id"] != b.body["id"]
    assert "idempotent-replayed" not in b.headers


def test_fifty_concurrent_creates_with_one_key_make_one_task(api, db) -> None:
    replies: list[Reply] = []
    barrier = threading.Barrier(50)
    for i in range(50):  # fifty Lambda environments, each with its own module and connection
        load_handler("create_task", environment=f"-env{i}")

    def client(i: int) -> None:
        barrier.wait()
        replies.append(create(key="burst", environment=f"-env{i}"))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert count_tasks(db) == 1
    statuses = sorted({r.status for r in replies})
    assert set(statuses) <= {202, 409}, replies
    ids = {r.body["id"] for r in replies if r.status == 202}
    assert len(ids) == 1
    assert sum(1 for r in replies if r.status == 202 and "idempotent-replayed" not in r.headers) == 1
    for r in replies:
        if r.status == 409:
            is_problem(r, 409, "request-in-progress")


def record_state(db) -> list[dict[str, Any]]:
    return db().execute("SELECT status, response_data IS NOT NULL AS has_response FROM idempotency_records").fetchall()


def test_a_request_in_flight_is_409(api, db) -> None:
    far = int((time.time() + 60) * 1000)
    # The first request took the key and is still running (its in-progress record has not expired).
    first = create(key="slow")
    db().execute(
        "UPDATE idempotency_records SET status = 'INPROGRESS', response_data = NULL, in_progress_expires_at = %s",
        (far,),
    )
    is_problem(create(key="slow"), 409, "request-in-progress")
    assert count_tasks(db) == 1
    assert first.status == 202


def test_crash_after_taking_the_key_before_storing_the_task(api, db) -> None:
    # given: a first request took the key and died before inserting the task (its time ran out)
    crashed = create(key="crash-1")
    db().execute("DELETE FROM tasks")
    db().execute(
        "UPDATE idempotency_records SET status = 'INPROGRESS', response_data = NULL, in_progress_expires_at = %s",
        (int((time.time() - 1) * 1000),),
    )
    # when: the client retries
    retry = create(key="crash-1")
    # then: the retry makes the task; the key points to it
    assert retry.status == 202 and "idempotent-replayed" not in retry.headers
    assert count_tasks(db) == 1
    assert create(key="crash-1").body["id"] == retry.body["id"] != crashed.body["id"]


def test_crash_after_storing_the_task_before_completing_the_key(api, db, monkeypatch) -> None:
    # given: the task is stored but the process dies before the key's record says COMPLETED
    def die(self: object, data_record: object) -> None:
        raise SystemExit(1)

    with monkeypatch.context() as patch, pytest.raises(SystemExit):
        patch.setattr(type(bootstrap.idempotency_store()), "_update_record", die)
        create(key="crash-2")
    assert count_tasks(db) == 1
    assert [r["status"] for r in record_state(db)] == ["INPROGRESS"]
    stored = db().execute("SELECT id FROM tasks").fetchone()["id"]
    # when: the in-progress record expires and the client retries with the same body
    db().execute("UPDATE idempotency_records SET in_progress_expires_at = %s", (int((time.time() - 1) * 1000),))
    retry = create(key="crash-2")
    # then: the same task comes back, never a second one
    assert (retry.status, retry.body["id"]) == (202, str(stored))
    assert count_tasks(db) == 1
    assert record_state(db) == [{"status": "COMPLETED", "has_response": True}]
    # and a different body under that key is refused
    db().execute("DELETE FROM idempotency_records")
    is_problem(create({**BODY, "priority": 9}, key="crash-2"), 422, "idempotency-key-reused")
    assert count_tasks(db) == 1


def test_a_failed_first_request_releases_the_key(api, db) -> None:
    is_problem(create({"type": "summarize", "payload": {"prompt": "x"}}, key="fix-it"), 422, "validation")
    assert record_state(db) == []
    fixed = create({"type": "summarize", "payload": {"prompt": "x", "context": "text"}}, key="fix-it")
    assert fixed.status == 202


def test_expired_keys_can_be_used_again(api, db) -> None:
    first = create(key="old")
    db().execute("UPDATE idempotency_records SET expires_at = %s", (int(time.time()) - 1,))
    again = create(key="old")
    assert again.status == 202
    # a new task: the old one keeps the key in its row, so the backstop returns it as the same request
    assert again.body["id"] == first.body["id"]
    assert count_tasks(db) == 1
    with connect(db._url()) as conn:
        assert conn.execute("SELECT count(*) AS n FROM idempotency_records").fetchone() == {"n": 1}
