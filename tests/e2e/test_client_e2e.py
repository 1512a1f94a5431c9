"""aitasks_client against the local stack: create with a lost answer retried into one task, wait over the
live-updates WebSocket, watch, pages, problems as exceptions, the async client."""

from __future__ import annotations

import asyncio
import uuid

import httpx2
import pytest
from aitasks_client import AsyncClient, Client, NotFoundError, TaskStatus, UnprocessableEntityError

from tests.e2e.conftest import Stack, new_tenant

pytestmark = pytest.mark.e2e


class Recording(httpx2.HTTPTransport):
    """The real transport, remembering each request; the first `lose` answers to a create are replaced by a 503
    (a gateway that failed after the function ran)."""

    def __init__(self, lose: int = 0) -> None:
        super().__init__()
        self.requests: list[httpx2.Request] = []
        self.lose = lose

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        response = super().handle_request(request)
        if request.method == "POST" and request.url.path.endswith("/tasks") and self.lose:
            self.lose -= 1
            response.read()
            return httpx2.Response(503, headers={"Retry-After": "1"}, json={"message": "Service Unavailable"})
        return response


def test_a_create_whose_answer_was_lost_makes_one_task_and_wait_follows_it_live(stack: Stack) -> None:
    _, key = new_tenant("client")  # a tenant of its own: its list holds only this test's tasks
    transport = Recording(lose=1)
    with Client(stack.url, key, transport=transport) as client:
        task = client.create(
            "chat", "Say hi to the client", params={"fake": {"latencyMs": 3000}}, idempotency_key=f"e2e-{uuid.uuid4()}"
        )  # a model that takes 3 s: the wait starts before the end
        posts = [r for r in transport.requests if r.method == "POST" and r.url.path.endswith("/tasks")]
        assert len(posts) == 2 and posts[0].headers["Idempotency-Key"] == posts[1].headers["Idempotency-Key"]
        assert [t.id for t in client.list()] == [task.id]  # one task for the two tries

        # with the socket open the task is read on its events and re-read every 15 s (poll_interval 60): never every
        # poll_interval. How soon MiniStack pushes an event varies (15 s and more on a loaded CI machine; the
        # dashboard's e2e allows 90 s), so only the path is checked here; tests/integration/test_client.py times
        # the live reads against a real WebSocket server.
        done = client.wait(task.id, timeout=120, poll_interval=60)
        assert done.status is TaskStatus.SUCCEEDED, done
        assert any(r.method == "POST" and r.url.path.endswith("/websocket-tickets") for r in transport.requests)
        reads = [r for r in transport.requests if r.method == "GET" and r.url.path.endswith(str(task.id))]
        assert 2 <= len(reads) <= 8
        assert "Say hi to the client" in (client.artifacts(task.id)[0].content or "")


def test_watch_pages_and_problems(stack: Stack) -> None:
    _, key = new_tenant("client-pages")
    with Client(stack.url, key) as client:
        made = [client.create("chat", f"page {i}", priority=1) for i in range(5)]
        states = [t.status for t in client.watch(made[0].id, timeout=90)]
        assert states[-1] is TaskStatus.SUCCEEDED and len(states) == len(set(states))
        assert sorted(t.id for t in client.list(page_size=2)) == sorted(t.id for t in made)
        with pytest.raises(NotFoundError) as missing:
            client.get(uuid.uuid4())
        assert missing.value.problem.type.endswith("/task-not-found") and missing.value.trace_id
        with pytest.raises(UnprocessableEntityError) as invalid:
            client.create("chat", "")
        assert [e.field for e in invalid.value.problem.errors or []] == ["payload.prompt"]


def test_the_async_client_on_the_stack(stack: Stack) -> None:
    _, key = new_tenant("client-async")

    async def scenario() -> list[TaskStatus]:
        async with AsyncClient(stack.url, key) as client:
            made = await asyncio.gather(*(client.create("chat", f"async {i}") for i in range(3)))
            done = await asyncio.gather(*(client.wait(t.id, timeout=90) for t in made))
            return [t.status for t in done]

    assert asyncio.run(scenario()) == [TaskStatus.SUCCEEDED] * 3
