"""bootstrap's wiring of the executor from the settings (nothing connects: the builders are lazy)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from aitasks import bootstrap
from aitasks.settings import get_settings
from tests.support.fakes import InMemoryWorkQueue

if TYPE_CHECKING:
    from collections.abc import Iterator

CACHED = (get_settings, bootstrap.connection, bootstrap.heartbeat_connection, bootstrap.task_repository)


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    monkeypatch.setenv("DATABASE_URL", "postgresql://nowhere.invalid/aitasks")
    monkeypatch.setattr(bootstrap, "work_queue", InMemoryWorkQueue)
    for builder in (*CACHED, bootstrap.lease_repository):
        builder.cache_clear()
    yield monkeypatch
    for builder in (*CACHED, bootstrap.lease_repository):
        builder.cache_clear()


def test_the_executors_heartbeat_has_a_connection_of_its_own(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("AI_MAX_PAUSE_SECONDS", "120")
    environment.setenv("AI_ACCOUNT_PAUSE_SECONDS", "600")
    engine = bootstrap.execute()
    assert engine.leases is not None and engine.leases is not engine.tasks
    assert engine.leases._connection is bootstrap.heartbeat_connection()  # type: ignore[attr-defined]
    assert bootstrap.heartbeat_connection() is not bootstrap.connection()
    assert bootstrap.heartbeat_connection()._conn is None  # opened by the first beat, not before
    assert (engine.max_pause_s, engine.account_pause_s) == (120, 600)
