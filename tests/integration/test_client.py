"""aitasks_client against the real handlers in process (the authorizer, then each route's function, on PostgreSQL):
models, retries that make one task, pages, problems as exceptions, wait and watch (polling with ETags, and live
over a real WebSocket server standing in for API Gateway's)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from uuid import uuid4

import httpx2
import pytest
from aitasks_client import (
    AsyncClient,
    AuthenticationError,
    BudgetExceededError,
    Client,
    NotFoundError,
    ServiceUnavailableError,
    Task,
    TaskStatus,
    UnprocessableEntityError,
    WaitTimeoutError,
)

from aitasks import bootstrap
from aitasks.adapters.postgres import PostgresApiKeyRepository, PostgresLimitsRepository
from aitasks.domain.apikey import hash_api_key
from aitasks.domain.task import TenantId
from tests.support.handler_transport import BASE, AsyncHandlerTransport, HandlerTransport, drain
from tests.support.task_example import TASK_JSON
from tests.support.tcp_proxy import PausableProxy

if TYPE_CHECKING:
    from collections.abc import Iterator

KEY = "ait_client-test-key"
ACME = TenantId("acme")


@pytest.fixture
def transport(api, db) -> HandlerTransport:
    PostgresApiKeyRepository(db).add(tenant_id=ACME, name="client", key_hash=hash_api_key(KEY), now=datetime.now(UTC))
    return HandlerTransport()


@pytest.fixture
def client(transport: HandlerTransport) -> Iterator[Client]:
    with Client(BASE, KEY, transport=transport, sleep=lambda _: None) as c:
        yield c


def stored(db, where: str = "TRUE") -> int:
    return db().execute(f"SELECT count(*) AS n FROM tasks WHERE {where}").fetchone()["n"]


def test_create_get_and_a_tasks_records_as_models(client: Client, api, db) -> None:
    task = client.create("chat", "Say hi", priority=2, params={"maxTokens": 20})
    assert isinstance(task, Task) and task.status is TaskStatus.QUEUED and task.priority == 2
    assert task.payload == {"prompt": "Say hi", "params": {"maxTokens": 20}}
    drain(api)
    done = client.get(task.id)
    assert done.status is TaskStatus.SUCCEEDED and done.done and done.cost is not None and done.cost > 0
    (attempt,) = client.attempts(task.id)
    assert attempt.attempt_no == 1 and attempt.tokens_out and attempt.latency_ms is not None
    (artifact,) = client.artifacts(task.id)
    assert artifact.kind == "text" and artifact.content
    events = client.events(task.id)
    assert [e.event_type for e in events][:2] == ["task.created", "task.queued"]
    assert [e.seq for e in events] == sorted(e.seq for e in events)
    usage = client.usage()
    assert usage.spent_usd == done.cost and usage.running == 0 and usage.by_model[0].attempts == 1


def test_a_create_whose_answer_was_lost_is_retried_with_its_key_and_makes_one_task(transport, db) -> None:
    # given: the first answer to a create is lost after the server made the task (a cut connection, a 503 from the
    # gateway after the function ran)
    seen: list[httpx2.Request] = []

    class LosesFirstAnswer(httpx2.BaseTransport):
        def handle_request(self, request: httpx2.Request) -> httpx2.Response:
            seen.append(request)
            response = transport.handle_request(request)
            if len(seen) == 1:
                return httpx2.Response(503, headers={"Retry-After": "0"}, json={"message": "Service Unavailable"})
            return response

    with Client(BASE, KEY, transport=LosesFirstAnswer(), sleep=lambda _: None) as client:
        task = client.create("chat", "once")
    # then: two tries with the same key, one task, the one the second answer names
    assert len(seen) == 2 and seen[0].headers["Idempotency-Key"] == seen[1].headers["Idempotency-Key"]
    assert stored(db) == 1
    assert str(task.id) == str(db().execute("SELECT id FROM tasks").fetchone()["id"])


def test_a_connection_error_is_retried_and_an_exhausted_retry_raises_the_problem(transport, db) -> None:
    calls = {"n": 0}

    class Flaky(httpx2.BaseTransport):
        def handle_request(self, request: httpx2.Request) -> httpx2.Response:
            calls["n"] += 1
            if calls["n"] == 1:
                raise httpx2.ConnectError("refused", request=request)
            if calls["n"] == 2:
                raise httpx2.ReadTimeout("no answer", request=request)  # the create may have run: safe with its key
            return transport.handle_request(request)

    with Client(BASE, KEY, transport=Flaky(), sleep=lambda _: None) as client:
        client.create("chat", "after two failures")
    assert calls["n"] == 3 and stored(db) == 1

    waits: list[float] = []
    always = httpx2.MockTransport(lambda r: httpx2.Response(503, headers={"Retry-After": "2"}, json={
        "type": "https://aitasks.dev/problems/unavailable", "title": "Service Unavailable", "status": 503,
        "detail": "the database is unavailable", "instance": "/api/v1/tasks", "traceId": "t-1"}))  # fmt: skip
    with (
        Client(BASE, KEY, transport=always, sleep=waits.append, max_retries=3) as client,
        pytest.raises(ServiceUnavailableError) as caught,
    ):
        client.get(uuid4())
    assert waits == [2.0, 2.0, 2.0]  # Retry-After honoured, then the problem raised
    assert (caught.value.status, caught.value.trace_id) == (503, "t-1")
    assert caught.value.type == "https://aitasks.dev/problems/unavailable"


def test_a_cancel_is_not_repeated_after_it_may_have_reached_the_server(transport) -> None:
    calls = {"n": 0}

    def timeout(request: httpx2.Request) -> httpx2.Response:
        calls["n"] += 1
        raise httpx2.ReadTimeout("no answer", request=request)

    with (
        Client(BASE, KEY, transport=httpx2.MockTransport(timeout), sleep=lambda _: None) as client,
        pytest.raises(Exception, match="no answer"),
    ):
        client.cancel(uuid4())
    assert calls["n"] == 1


def test_a_create_retried_across_a_database_pause_makes_exactly_one_task(via_proxy, proxy: PausableProxy, db) -> None:
    PostgresApiKeyRepository(db).add(tenant_id=ACME, name="client", key_hash=hash_api_key(KEY), now=datetime.now(UTC))
    transport = HandlerTransport()
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        proxy.resume()  # the database answers again while the client waits
        time.sleep(min(seconds, 3))

    with Client(BASE, KEY, transport=transport, sleep=sleep, max_retries=8) as client:
        client.create("chat", "warm up")
        proxy.pause()
        task = client.create("chat", "across the pause", idempotency_key="pause-1")
    statuses = [r.headers.get("Idempotency-Key") for r in transport.requests]
    assert statuses.count("pause-1") >= 2 and waits  # a real 503 (or 409 in progress), retried with the same key
    assert stored(db, "idempotency_key = 'pause-1'") == 1
    assert task.status is TaskStatus.QUEUED


def test_list_iterates_every_page_once(client: Client, transport: HandlerTransport) -> None:
    made = {client.create("summarize", "Summarize", context=f"text {i}").id for i in range(7)}
    before = len(transport.requests)
    listed = [t.id for t in client.list(page_size=3)]
    assert sorted(listed) == sorted(made) and len(listed) == 7
    assert len(transport.requests) - before == 3  # pages of 3, 3 and 1
    page = client.list_page(type="summarize", page_size=5)
    assert (page.total, len(page.items), page.has_next) == (7, 5, True)
    assert list(client.list(status=["succeeded"])) == []


def test_problems_are_typed_exceptions_with_their_documents(client: Client, transport, db) -> None:
    with pytest.raises(NotFoundError) as not_found:
        client.get(uuid4())
    assert not_found.value.problem.type.endswith("/task-not-found") and not_found.value.trace_id

    with pytest.raises(UnprocessableEntityError) as invalid:
        client.create("poem", "")
    assert {e.field for e in invalid.value.problem.errors or []} == {"type", "payload.prompt"}

    with Client(BASE, "ait_wrong", transport=transport) as stranger, pytest.raises(AuthenticationError) as refused:
        stranger.usage()
    assert refused.value.status == 401

    PostgresLimitsRepository(db).set_monthly_budget(ACME, Decimal(0), now=datetime.now(UTC))
    with pytest.raises(BudgetExceededError) as broke:
        client.create("chat", "one more")
    extra = broke.value.problem.model_extra or {}
    assert broke.value.status == 402 and extra["budgetUsd"] == "0.000000" and "periodEnd" in extra


def test_wait_polls_with_etags_until_the_task_ends(transport: HandlerTransport, api) -> None:
    ticks: list[float] = []

    def sleep(seconds: float) -> None:
        ticks.append(seconds)
        if len(ticks) == 3:
            drain(api)  # the executor runs the task while the client waits

    with Client(BASE, KEY, transport=transport, sleep=sleep) as client:
        task = client.create("chat", "wait for me")
        done = client.wait(task.id, timeout=60, poll_interval=0.5, live=False)
    assert done.status is TaskStatus.SUCCEEDED and ticks == [0.5, 0.5, 0.5]
    reads = [r for r in transport.requests if r.method == "GET"]
    assert len(reads) == 4 and all("If-None-Match" in r.headers for r in reads[1:])


def test_wait_gives_up_after_its_timeout_with_the_last_state(client: Client) -> None:
    task = client.create("chat", "never run", scheduled_at=datetime.now(UTC) + timedelta(days=1))
    with Client(BASE, KEY, transport=HandlerTransport(), sleep=time.sleep) as slow:
        started = time.monotonic()
        with pytest.raises(WaitTimeoutError) as caught:
            slow.wait(task.id, timeout=0.3, poll_interval=0.1, live=False)
    assert caught.value.task.status is TaskStatus.QUEUED and caught.value.task.waiting_for == "schedule"
    assert time.monotonic() - started < 5


class LiveServer:
    """A WebSocket server in API Gateway's place: checks the ticket, then sends what the test pushes."""

    def __init__(self) -> None:
        from websockets.sync.server import serve

        self.tickets: list[str] = []
        self.connections: list[Any] = []
        self.server = serve(self._handler, "127.0.0.1", 0)
        self.url = f"ws://127.0.0.1:{self.server.socket.getsockname()[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _handler(self, connection: Any) -> None:
        self.tickets.append(connection.request.path.split("ticket=")[1])
        self.connections.append(connection)
        connection.wait_closed()

    def connected(self, count: int = 1) -> list[Any]:
        """The connections once `count` are open: the client's connect returns before the server's handler runs."""
        deadline = time.monotonic() + 5
        while len(self.connections) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(self.connections) >= count
        return self.connections

    def push(self, event: str, task_id: Any) -> None:
        for connection in self.connected():
            connection.send(json.dumps({"event": event, "detail": {"taskId": str(task_id)}}))

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def live(monkeypatch: pytest.MonkeyPatch) -> Iterator[LiveServer]:
    server = LiveServer()
    monkeypatch.setattr(bootstrap, "websocket_url", lambda: server.url)
    yield server
    server.close()


def test_watch_follows_a_task_over_the_websocket_and_reads_it_on_each_of_its_events(
    client: Client, transport: HandlerTransport, api, live: LiveServer
) -> None:
    task = client.create("chat", "watch me")
    other = client.create("chat", "not me")
    seen: list[TaskStatus] = []
    # poll_interval is long: only the socket's events can bring the changes in time
    with Client(BASE, KEY, transport=transport, sleep=time.sleep) as watcher:
        started = time.monotonic()
        for state in watcher.watch(task.id, timeout=30, poll_interval=60):
            seen.append(state.status)
            if len(seen) == 1:
                live.push("task.started", other.id)  # another task's event: no read
                drain(api)
                live.push("task.succeeded", task.id)
    assert seen == [TaskStatus.QUEUED, TaskStatus.SUCCEEDED] and time.monotonic() - started < 10
    assert len(live.tickets) == 1 and live.tickets[0].startswith("wst_")
    reads = [r for r in transport.requests if r.method == "GET" and str(task.id) in r.url.path]
    assert len(reads) == 2


def test_watch_falls_back_to_polling_when_the_websocket_cannot_open(client: Client, transport, api) -> None:
    # the in-process API's WebSocket URL points nowhere (nothing listens on it)
    task = client.create("chat", "poll me")
    polls: list[float] = []

    def sleep(seconds: float) -> None:
        polls.append(seconds)
        drain(api)

    with Client(BASE, KEY, transport=transport, sleep=sleep) as watcher:
        states = [t.status for t in watcher.watch(task.id, timeout=30, poll_interval=0.5)]
    assert states == [TaskStatus.QUEUED, TaskStatus.SUCCEEDED] and polls == [0.5]
    assert any(r.method == "POST" and r.url.path.endswith("/websocket-tickets") for r in transport.requests)


def test_a_dropped_socket_turns_watch_to_polling_and_leaving_watch_closes_it(
    client: Client, transport: HandlerTransport, api, live: LiveServer
) -> None:
    task = client.create("chat", "drop me")
    polls: list[float] = []

    def sleep(seconds: float) -> None:
        polls.append(seconds)
        drain(api)

    with Client(BASE, KEY, transport=transport, sleep=sleep) as watcher:
        states = []
        for state in watcher.watch(str(task.id).upper(), timeout=30, poll_interval=0.5):  # any spelling of the id
            states.append(state.status)
            if len(states) == 1:
                live.connected()[0].close()  # API Gateway drops the socket
    assert states == [TaskStatus.QUEUED, TaskStatus.SUCCEEDED] and polls == [0.5]

    # leaving a watch early (break) closes its socket
    other = client.create("chat", "leave me")
    with Client(BASE, KEY, transport=transport) as watcher:
        for _ in watcher.watch(other.id, timeout=30):
            break
    deadline = time.monotonic() + 5
    live.connected(2)
    while live.connections[-1].state.name != "CLOSED" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(live.connections) == 2 and live.connections[-1].state.name == "CLOSED"


def test_the_async_client_does_the_same(transport: HandlerTransport, api, db) -> None:
    async def scenario() -> tuple[Task, list[Task], int]:
        async with AsyncClient(BASE, KEY, transport=AsyncHandlerTransport(transport)) as client:
            made = await asyncio.gather(*(client.create("chat", f"async {i}") for i in range(5)))
            drain(api)
            done = await client.wait(made[0].id, timeout=30, poll_interval=0.05, live=False)
            listed = [t async for t in client.list(page_size=2)]
            with pytest.raises(NotFoundError):
                await client.get(uuid4())
            return done, listed, len(made)

    done, listed, made = asyncio.run(scenario())
    assert done.status is TaskStatus.SUCCEEDED and len(listed) == made == stored(db) == 5


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AITASKS_API_URL", "http://example.test/v1/api/v1")
    monkeypatch.setenv("AITASKS_API_KEY", "ait_from_env")
    with Client() as client:
        assert client.base_url == "http://example.test/v1/api/v1/"
        assert client._http.headers["Authorization"] == "Bearer ait_from_env"
        assert client._http.headers["User-Agent"].startswith("aitasks-client/")
    monkeypatch.delenv("AITASKS_API_KEY")
    with pytest.raises(Exception, match="AITASKS_API_KEY"):
        Client()


def test_the_async_watch_follows_the_websocket_too(client: Client, transport, api, live: LiveServer) -> None:
    task = client.create("chat", "watch me, async")

    async def scenario() -> list[TaskStatus]:
        seen: list[TaskStatus] = []
        async with AsyncClient(BASE, KEY, transport=AsyncHandlerTransport(transport)) as watcher:
            async for state in watcher.watch(task.id, timeout=30, poll_interval=60):
                seen.append(state.status)
                if len(seen) == 1:
                    await asyncio.to_thread(drain, api)
                    live.push("task.succeeded", task.id)
        return seen

    started = time.monotonic()
    assert asyncio.run(scenario()) == [TaskStatus.QUEUED, TaskStatus.SUCCEEDED]
    assert time.monotonic() - started < 10 and len(live.tickets) == 1


def test_the_async_client_retries_with_its_sleep_and_keeps_to_a_waits_timeout() -> None:
    answers = iter(
        [
            httpx2.Response(503, headers={"Retry-After": "2"}, json={"message": "x"}),
            httpx2.Response(200, json=TASK_JSON),
        ]
    )
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    async def scenario() -> None:
        transport = httpx2.MockTransport(lambda r: next(answers, httpx2.Response(200, json=TASK_JSON)))
        async with AsyncClient(BASE, "ait_k", transport=transport, sleep=sleep) as c:
            assert (await c.get(TASK_JSON["id"])).status == "queued"
            with pytest.raises(WaitTimeoutError):
                await c.wait(TASK_JSON["id"], timeout=0.2, poll_interval=0.05, live=False)

    asyncio.run(scenario())
    assert slept[0] == 2.0 and all(s <= 0.2 for s in slept[1:])


def test_an_event_that_never_comes_is_made_up_for_by_early_rereads(
    client: Client, transport: HandlerTransport, api, live: LiveServer
) -> None:
    # the socket opens but stays silent (a cold stack's notifier, a lost push): the re-reads find the end anyway,
    # after 0.3, 0.6, 1.2 ... s rather than 15
    task = client.create("chat", "nobody tells me")
    threading.Timer(0.5, drain, args=(api,)).start()
    with Client(BASE, KEY, transport=transport) as watcher:
        started = time.monotonic()
        done = watcher.wait(task.id, timeout=30, poll_interval=0.3)
    assert done.status is TaskStatus.SUCCEEDED and time.monotonic() - started < 5
    assert len(live.tickets) == 1  # it was live, not polling
