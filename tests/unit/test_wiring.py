"""bootstrap's wiring of the executor and the sweeper from the settings (nothing connects: the builders are lazy)."""

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


def test_the_sweeper_watches_the_leases_only_when_told_to(environment: pytest.MonkeyPatch) -> None:
    assert bootstrap.sweep().watch_s == 0  # one look, as tests and the CLI want it
    environment.setenv("SWEEPER_WATCH_SECONDS", "50")
    environment.setenv("SWEEPER_LEASE_INTERVAL_SECONDS", "10")
    get_settings.cache_clear()
    sweep = bootstrap.sweep()
    assert (sweep.watch_s, sweep.lease_every_s, sweep.after_freeing) == (50, 10, bootstrap.publish_events_soon)
