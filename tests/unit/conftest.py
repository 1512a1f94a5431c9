"""Unit tests: no network (pytest-socket), fakes instead of adapters, the real handlers."""

from __future__ import annotations

from typing import TYPE_CHECKING

import aws_xray_sdk.core  # noqa: F401 - its recorder opens a UDP socket (unused) at import: import it before the guard
import pytest
from pytest_socket import disable_socket, enable_socket

from aitasks import bootstrap
from aitasks.adapters.memory import (
    InMemoryApiKeyRepository,
    InMemoryConnectionRegistry,
    InMemoryIdempotencyStore,
    InMemoryPusher,
    InMemoryRetention,
    InMemoryTaskRepository,
    InMemoryTicketStore,
    InMemoryWorkQueue,
)
from aitasks.application.maintenance import Prune

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture(autouse=True)
def _no_network() -> Iterator[None]:
    disable_socket(allow_unix_socket=False)
    yield
    enable_socket()


@pytest.fixture
def fakes(
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[InMemoryTaskRepository, InMemoryWorkQueue, InMemoryApiKeyRepository]:
    tasks, queue, keys = InMemoryTaskRepository(), InMemoryWorkQueue(), InMemoryApiKeyRepository()
    monkeypatch.setattr(bootstrap, "task_repository", lambda: tasks)
    monkeypatch.setattr(bootstrap, "task_queries", lambda: tasks)
    monkeypatch.setattr(bootstrap, "prune", lambda: Prune(InMemoryRetention(tasks)))
    store = InMemoryIdempotencyStore()
    monkeypatch.setattr(bootstrap, "idempotency_store", lambda: store)
    monkeypatch.setattr(bootstrap, "work_queue", lambda: queue)
    monkeypatch.setattr(bootstrap, "api_key_repository", lambda: keys)
    monkeypatch.setattr(bootstrap, "websocket_url", lambda: WEBSOCKET_URL)
    return tasks, queue, keys


WEBSOCKET_URL = "wss://ws123.execute-api.us-east-1.amazonaws.com/v1"


@pytest.fixture
def live(
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[InMemoryTicketStore, InMemoryConnectionRegistry, InMemoryPusher]:
    """The live-updates ports as fakes: tickets, the connections table, and API Gateway's @connections."""
    tickets, connections, pusher = InMemoryTicketStore(), InMemoryConnectionRegistry(), InMemoryPusher()
    monkeypatch.setattr(bootstrap, "ticket_store", lambda: tickets)
    monkeypatch.setattr(bootstrap, "connection_registry", lambda: connections)
    monkeypatch.setattr(bootstrap, "pusher", lambda: pusher)
    monkeypatch.setattr(bootstrap, "websocket_url", lambda: WEBSOCKET_URL)
    return tickets, connections, pusher
