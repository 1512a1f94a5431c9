"""Unit tests: no network (pytest-socket), fakes instead of adapters, the real handlers."""

from __future__ import annotations

from typing import TYPE_CHECKING

import aws_xray_sdk.core  # noqa: F401 - its recorder opens a UDP socket (unused) at import: import it before the guard
import pytest
from pytest_socket import disable_socket, enable_socket

from aitasks import bootstrap
from aitasks.adapters.memory import (
    InMemoryApiKeyRepository,
    InMemoryIdempotencyStore,
    InMemoryRetention,
    InMemoryTaskRepository,
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
    return tasks, queue, keys
