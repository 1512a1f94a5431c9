"""Hardening on real PostgreSQL: a database that stops answering, hostile input, leaky logs, events in order."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

from aitasks.adapters.postgres import ConnectionProvider, PostgresOutbox, PostgresTaskRepository, connect
from aitasks.application.events import RelayOutbox, detail
from aitasks.domain.task import Task, TenantId
from aitasks.domain.task_types import MAX_JSON_DEPTH
from tests.conftest import LambdaContext, load_handler, rest_event
from tests.integration.conftest import wire_handlers
from tests.support.tcp_proxy import PausableProxy

if TYPE_CHECKING:
    from collections.abc import Iterator

    from aitasks.application.ports import OutboxEvent

API_TIMEOUT_MS = 10_000  # the template's API functions' timeout


def call(name: str, event: dict[str, Any], remaining_ms: int = API_TIMEOUT_MS) -> tuple[int, dict[str, str], Any]:
    context = LambdaContext(aws_request_id=str(uuid.uuid4()), remaining_ms=remaining_ms)
    response = load_handler(name).lambda_handler(event, context)
    body = json.loads(response["body"]) if response.get("body") else None
    headers = {k.lower(): v for k, v in (response.get("headers") or {}).items()}
    headers.update({k.lower(): v[0] for k, v in (response.get("multiValueHeaders") or {}).items()})
    return response["statusCode"], headers, body


def create(key: str | None = None, body: Any = None, **kwargs: Any) -> tuple[int, dict[str, str], Any]:
    headers = {"Idempotency-Key": key} if key else {}
    event = rest_event(
        "POST", "/api/v1/tasks", body=body or {"type": "chat", "payload": {"prompt": "hi"}}, headers=headers
    )
    return call("create_task", event, **kwargs)


# -- a database that stops answering --------------------------------------------------------------------------------


def test_every_connection_has_the_service_timeouts_and_keepalives(db: ConnectionProvider) -> None:
    conn = db()
    shown = {
        name: conn.execute(f"SHOW {name}").fetchone()[name]  # type: ignore[index]
        for name in ("statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout")
    }
    assert shown == {"statement_timeout": "10s", "lock_timeout": "5s", "idle_in_transaction_session_timeout": "30s"}
    params = conn.info.get_parameters()
    assert (params["keepalives"], params["keepalives_idle"], params["tcp_user_timeout"]) == ("1", "5", "10000")
    assert conn.prepare_threshold == 2  # repeated statements prepared: planned once per connection


def test_behind_rds_proxy_no_statement_is_prepared(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from aitasks import bootstrap
    from aitasks.settings import get_settings

    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("DATABASE_PREPARED_STATEMENTS", "false")  # what the template sets with DatabaseMode aurora
    get_settings.cache_clear()
    bootstrap.connection.cache_clear()
    try:
        provider = bootstrap.connection()
        for _ in range(3):
            provider().execute("SELECT 1 AS one").fetchone()
        prepared = provider().execute("SELECT count(*) AS n FROM pg_prepared_statements").fetchone()
        assert provider().prepare_threshold is None and prepared == {"n": 0}
        provider.close()
        # and the default: a statement run twice is prepared, once per connection
        direct = ConnectionProvider(lambda: database_url)
        for _ in range(3):
            direct().execute("SELECT 1 AS one").fetchone()
        assert direct().execute("SELECT count(*) AS n FROM pg_prepared_statements").fetchone()["n"] >= 1
        direct.close()
    finally:
        get_settings.cache_clear()
        bootstrap.connection.cache_clear()


def test_a_slow_statement_is_cancelled_by_the_server_and_the_connection_kept(db: ConnectionProvider) -> None:
    with pytest.raises(psycopg.errors.QueryCanceled):
        db().execute("SELECT pg_sleep(11)")
    assert db().execute("SELECT 1 AS one").fetchone() == {"one": 1}


def test_a_paused_database_is_a_503_in_time_and_the_warm_function_recovers(
    via_proxy: Any, proxy: PausableProxy, db
) -> None:
    # given: a warm function, its connection open
    assert create()[0] == 202
    # when: the database stops answering, a client creates with an Idempotency-Key
    with proxy.paused():
        started = time.monotonic()
        status, headers, problem = create("k-1")
        waited = time.monotonic() - started
        # then: a 503 problem with Retry-After, well before the function's own timeout (the gateway's 502)
        assert (status, problem["type"]) == (503, "https://aitasks.dev/problems/unavailable"), problem
        assert int(headers["retry-after"]) > 0
        assert waited < API_TIMEOUT_MS / 1000 - 1
        # a function whose connection was cut opens a new one - and gives up in time too while nothing answers
        started = time.monotonic()
        assert create("k-1")[0] == 503
        assert time.monotonic() - started < API_TIMEOUT_MS / 1000 - 1
    # when the database answers again, the same function serves the client's retry: one task for the key
    time.sleep(API_TIMEOUT_MS / 1000)  # the cut requests' idempotency records expire with their functions' time
    status, _, task = create("k-1")
    assert status == 202, task
    n = db().execute("SELECT count(*) AS n FROM tasks WHERE idempotency_key = 'k-1'").fetchone()["n"]
    assert n == 1


def test_a_function_whose_connection_the_server_closed_reconnects_without_failing_a_request(api, db) -> None:
    assert create()[0] == 202
    # the server ends every other session (a restart, a failover)
    db().execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE pid <> pg_backend_pid() AND datname = current_database()"
    )
    time.sleep(0.2)
    assert create()[0] == 202


def test_the_authorizer_gives_up_in_time_when_the_database_does_not_answer(
    via_proxy: Any, proxy: PausableProxy
) -> None:
    event = {"type": "REQUEST", "methodArn": "arn:aws:execute-api:us-east-1:000000000000:abc123/v1/GET/api/v1/tasks",
             "headers": {"Authorization": "Bearer ait_nope"}}  # fmt: skip
    with proxy.paused():
        started = time.monotonic()
        # an error that is not "Unauthorized": API Gateway answers AUTHORIZER_FAILURE, a 503 + Retry-After problem
        with pytest.raises(Exception, match="database is unavailable"):
            load_handler("authorizer").lambda_handler(event, LambdaContext(remaining_ms=API_TIMEOUT_MS))
        assert time.monotonic() - started < API_TIMEOUT_MS / 1000 - 1


# -- hostile input --------------------------------------------------------------------------------------------------


def test_the_whole_payload_counts_toward_its_size_limit(api, db) -> None:
    big = {"type": "chat", "payload": {"prompt": "p", "params": {"padding": "x" * (300 * 1024)}}}
    status, _, problem = create(body=big)
    assert (status, problem["type"]) == (413, "https://aitasks.dev/problems/too-large")
    assert "payload takes" in problem["detail"]
    assert db().execute("SELECT count(*) AS n FROM tasks").fetchone()["n"] == 0


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"prompt": "p", "context": {"a": {"b": "\ud800"}}}, "payload.context.a.b"),
        ({"prompt": "\udfff lone"}, "payload.prompt"),
        ({"prompt": "p", "params": {"x": ["ok", "nul\x00"]}}, "payload.params.x.1"),
        ({"prompt": "p", "context": {"k\ud800": 1}}, "payload.context"),
    ],
)
def test_invalid_text_anywhere_is_a_422_naming_the_field(api, db, payload: dict[str, Any], field: str) -> None:
    status, _, problem = create(body={"type": "chat", "payload": payload})
    assert status == 422, problem
    assert [e["field"] for e in problem["errors"]] == [field]
    assert db().execute("SELECT count(*) AS n FROM tasks").fetchone()["n"] == 0


def test_json_nesting_and_size_are_bounded(api) -> None:
    deep: Any = "leaf"
    for _ in range(MAX_JSON_DEPTH + 1):
        deep = {"d": deep}
    status, _, problem = create(body={"type": "chat", "payload": {"prompt": "p", "context": deep}})
    assert status == 422 and "nested more than" in problem["errors"][0]["message"]
    wide = {"type": "chat", "payload": {"prompt": "p", "context": {str(i): i for i in range(25_000)}}}
    status, _, problem = create(body=wide)
    assert status == 422 and problem["errors"][0]["field"] == "body"
    # nested past what the JSON parser itself recurses through: a problem too, not a 500
    raw = '{"type":"chat","payload":{"prompt":"p","context":' + '{"a":' * 100_000 + "1" + "}" * 100_000 + "}}"
    status, _, problem = call("create_task", rest_event("POST", "/api/v1/tasks", raw_body=raw))
    assert status in (400, 422), problem


def test_a_list_page_leaves_out_large_payloads(api) -> None:
    small = create(body={"type": "chat", "payload": {"prompt": "small"}})[2]
    large = create(body={"type": "chat", "payload": {"prompt": "large " + "y" * (40 * 1024)}})[2]
    _, _, page = call("query_tasks", rest_event("GET", "/api/v1/tasks", query={"pageSize": "100"}))
    by_id = {t["id"]: t for t in page}
    assert by_id[small["id"]]["payload"] == {"prompt": "small"}
    assert by_id[large["id"]]["payload"] is None and by_id[large["id"]]["payloadBytes"] > 40 * 1024
    # the task itself serves it
    _, _, task = call("query_tasks", rest_event("GET", f"/api/v1/tasks/{large['id']}"))
    assert task["payload"]["prompt"].startswith("large ")


EVIL = {"type": "object", "properties": {"code": {"type": "string", "pattern": "^(a+)+$"}}, "required": ["code"]}


def test_a_pattern_re2_cannot_run_is_refused_at_create(api) -> None:
    schema = {"type": "object", "properties": {"w": {"type": "string", "pattern": "^(\\w)\\1$"}}}  # a backreference
    status, _, problem = create(
        body={"type": "extract", "payload": {"prompt": "p", "context": "c", "params": {"schema": schema}}}
    )
    assert status == 422 and problem["errors"][0]["field"] == "payload.params.schema"
    assert "RE2" in problem["errors"][0]["message"]


def test_a_catastrophic_pattern_checks_a_models_answer_in_linear_time() -> None:
    from aitasks.application.ai import AiError
    from aitasks.application.executor import _valid_json

    started = time.monotonic()
    with pytest.raises(AiError, match="does not match the schema's pattern"):
        _valid_json(json.dumps({"code": "a" * 5_000 + "b"}), EVIL)
    assert _valid_json(json.dumps({"code": "a" * 5_000}), EVIL)
    # Python's re needs about 2**30 steps for 30 a's and a b; RE2, one pass
    assert time.monotonic() - started < 1


# -- logs -----------------------------------------------------------------------------------------------------------


@pytest.fixture
def json_logs() -> Iterator[list[str]]:
    """Every line the handlers log - their own Powertools logger's and our modules' - as the functions print them
    (the handlers' JSON formatter, with the invocation's keys), whatever stream pytest gave the handlers."""
    load_handler("create_task")  # the service's logger and our modules' exist, set up as in a function
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    loggers = [logging.getLogger("aitasks"), logging.getLogger(os.environ["POWERTOOLS_SERVICE_NAME"])]
    collector = Collect()
    collector.setFormatter(loggers[0].handlers[0].formatter)
    for logger in loggers:
        logger.addHandler(collector)
    yield lines
    for logger in loggers:
        logger.removeHandler(collector)


def test_a_second_invocation_carries_none_of_the_first_ones_keys(api, json_logs: list[str]) -> None:
    task = create()[2]
    call("cancel_task", rest_event("POST", f"/api/v1/tasks/{task['id']}/cancel"))  # appends tenant_id and task_id
    assert any('"task_id"' in line for line in json_logs)
    json_logs.clear()
    # when: the next invocation logs before it knows a tenant (a request without the authorizer's tenant)
    status, _, _ = call("cancel_task", rest_event("POST", f"/api/v1/tasks/{task['id']}/cancel", tenant=None))
    assert status == 401
    lines = [json.loads(line) for line in json_logs]
    warning = next(line for line in lines if line["message"] == "a request came without the authorizer's tenant")
    assert "tenant_id" not in warning and "task_id" not in warning


MARK = "SECRET-PROMPT-7f3a"


def test_no_request_content_reaches_a_log_line_on_any_failing_path(via_proxy, proxy, json_logs, caplog) -> None:
    caplog.set_level("DEBUG")
    marked = {"type": "chat", "payload": {"prompt": MARK, "context": {"k": MARK + "\ud800"}}}
    bodies = [
        marked,  # invalid text
        {"type": "chat", "payload": {"prompt": MARK, "params": {"pad": MARK * 30_000}}},  # too large
        {
            "type": "extract",
            "payload": {"prompt": MARK, "context": MARK, "params": {"schema": {"pattern": "(" + MARK}}},
        },
        {"type": "chat", "payload": {"prompt": MARK}, "unknown": MARK},  # not in the contract
        {"type": "chat", "payload": {"prompt": MARK, "params": {"maxTokens": MARK}}},  # a rule of the task type
    ]
    for body in bodies:
        assert create(body=body)[0] in (413, 422)
    assert call("create_task", rest_event("POST", "/api/v1/tasks", raw_body='{"type": "' + MARK))[0] == 400
    with proxy.paused():
        assert create(body={"type": "chat", "payload": {"prompt": MARK}})[0] == 503
    logged = "\n".join(json_logs)
    assert "database is unavailable" in logged  # the failing paths did log
    assert MARK not in logged
    # nor at DEBUG from our modules
    assert MARK not in "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("aitasks"))


# -- events in order ------------------------------------------------------------------------------------------------


def test_parallel_relays_publish_each_tasks_events_in_seq_order(db: ConnectionProvider, database_url: str) -> None:
    # given: tasks with several unpublished events each
    repo = PostgresTaskRepository(db)
    now = datetime.now(UTC)
    tasks = [
        repo.add(Task.submit(tenant_id=TenantId("t"), type="chat", payload={"prompt": "p"}, now=now)) for _ in range(30)
    ]
    for task in tasks[::2]:
        assert repo.cancel(TenantId("t"), task.id, now=now) is not None  # a third event: task.cancelled
    published: list[tuple[str, int]] = []
    lock = threading.Lock()

    def publisher(events: list[OutboxEvent]) -> set[uuid.UUID]:
        time.sleep(0.01)  # the relays interleave
        with lock:
            published.extend((str(e.task_id), detail(e)["seq"]) for e in events)
        return {e.id for e in events}

    class Publisher:
        def publish(self, events: list[OutboxEvent]) -> set[uuid.UUID]:
            return publisher(events)

    # when: four relays run side by side, a few events per batch
    def relay() -> None:
        provider = ConnectionProvider(lambda: database_url)
        RelayOutbox(PostgresOutbox(provider), Publisher(), batch_size=3)(budget_s=10)
        provider.close()

    threads = [threading.Thread(target=relay) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # then: every event once, and each task's in seq order
    with connect(database_url) as conn:
        expected = conn.execute("SELECT count(*) AS n FROM outbox_messages").fetchone()["n"]
    assert len(published) == expected == len(set(published))
    by_task: dict[str, list[int]] = {}
    for task_id, seq in published:
        by_task.setdefault(task_id, []).append(seq)
    assert all(seqs == sorted(seqs) for seqs in by_task.values()), by_task
    assert any(len(seqs) > 2 for seqs in by_task.values())


def test_idempotency_keys_of_tenants_whose_ids_contain_a_separator_never_collide(api, db) -> None:
    body = {"type": "chat", "payload": {"prompt": "hi"}}
    first = call(
        "create_task", rest_event("POST", "/api/v1/tasks", body=body, tenant="a:b", headers={"Idempotency-Key": "c"})
    )
    second = call(
        "create_task", rest_event("POST", "/api/v1/tasks", body=body, tenant="a", headers={"Idempotency-Key": "b:c"})
    )
    assert (first[0], second[0]) == (202, 202)
    assert "idempotent-replayed" not in second[1]
    assert first[2]["id"] != second[2]["id"]
    assert db().execute("SELECT count(DISTINCT tenant_id) AS n FROM tasks").fetchone()["n"] == 2


def test_at_the_connection_limit_a_request_is_a_503_with_retry_after_then_served(
    db: ConnectionProvider, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given: a role allowed one connection, and that one taken (as when the server's slots are all in use)
    role = f"limited_{uuid.uuid4().hex[:8]}"
    admin = db()
    admin.execute(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 1".encode())  # a name we generated
    admin.execute(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}".encode())
    admin.execute(f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}".encode())
    url = psycopg.conninfo.make_conninfo(database_url, user=role)
    wiring = wire_handlers(monkeypatch, url)
    next(wiring)
    try:
        with connect(url):
            # when: a function has to open its connection
            status, headers, problem = create()
            # then: a 503 problem the client can retry, not a 500
            assert (status, problem["type"]) == (503, "https://aitasks.dev/problems/unavailable")
            assert int(headers["retry-after"]) > 0
        # once a slot is free, the same function serves
        assert create()[0] == 202
    finally:
        wiring.close()
        admin.execute(f"DROP OWNED BY {role}".encode())
        admin.execute(f"DROP ROLE {role}".encode())


def test_a_prepared_statement_a_migration_changed_is_planned_anew_without_failing_the_request(
    db: ConnectionProvider, database_url: str
) -> None:
    # given: a warm function whose `SELECT * FROM tasks WHERE id` is prepared (run twice)
    repository = PostgresTaskRepository(db)
    task = repository.add(
        Task.submit(tenant_id=TenantId("t"), type="chat", payload={"prompt": "hi"}, now=datetime.now(UTC))
    )
    assert task is not None
    for _ in range(3):
        assert repository.get(TenantId("t"), task.id) is not None
    assert db().execute("SELECT count(*) AS n FROM pg_prepared_statements").fetchone()["n"] >= 1
    # when: a migration (another connection) adds a column to tasks: the prepared statement's result changes
    with psycopg.connect(database_url, autocommit=True) as migration:
        migration.execute("ALTER TABLE tasks ADD COLUMN zz_added integer")
    try:
        # then: the same read succeeds, planned anew, and so does the next
        assert repository.get(TenantId("t"), task.id) is not None
        assert repository.get(TenantId("t"), task.id) is not None
    finally:
        with psycopg.connect(database_url, autocommit=True) as migration:
            migration.execute("ALTER TABLE tasks DROP COLUMN zz_added")
