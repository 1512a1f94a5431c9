"""Postgres adapters on psycopg 3: named queries from .sql files, a lazily opened connection, the repositories."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import logging
import math
import os
import re
import select
import socket
import threading
import time
from datetime import UTC, datetime
from importlib import resources
from typing import TYPE_CHECKING, Any, cast
from uuid import UUID, uuid4

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from aitasks.application.ai import ModelPrice, PriceTable
from aitasks.application.ports import (
    ArtifactRecord,
    AttemptRecord,
    EventRecord,
    Lease,
    ModelSpend,
    ModelStatus,
    OutboxEvent,
    Principal,
    TaskFilter,
    TenantLimits,
    TenantPlan,
)
from aitasks.domain.errors import DependencyUnavailableError, IdempotencyKeyTakenError
from aitasks.domain.task import EVENT_FOR_STATUS, Task, TaskStatus, TenantId, WaitingFor
from aitasks.domain.tenant import Tier

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence
    from decimal import Decimal

    from psycopg.rows import DictRow

    from aitasks.application.ports import FinishedRun

logger = logging.getLogger(__name__)

Connection = psycopg.Connection[dict[str, Any]]

_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)


def parse_queries(text: str) -> dict[str, str]:
    """Split a .sql file into its `-- name: x` queries; the SQL text is kept exactly as written."""
    parts = _NAME.split(text)
    return {name: body.strip().rstrip(";") for name, body in zip(parts[1::2], parts[2::2], strict=True)}


@functools.cache
def queries(module: str) -> dict[str, str]:
    """The named queries of adapters/sql/<module>.sql, read once per process."""
    return parse_queries(resources.files("aitasks.adapters").joinpath("sql", f"{module}.sql").read_text())


# Client-side socket settings (libpq's): a peer that vanished - a host down, a network partition - is noticed in
# about 10 s instead of the kernel's two hours. The server-side timeouts (statement, lock, idle transaction) are the
# role's defaults in this database (migration 0010): RDS Proxy refuses them as startup options.
KEEPALIVES: dict[str, int] = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
}
# The longest a statement is waited for without a request's deadline: past the server's statement_timeout (10 s), so a
# slow statement is normally cancelled by the server and the connection kept; this cap is for a server that stopped
# answering at all (paused, partitioned), which no server-side timeout can end.
STATEMENT_CAP_S = 12.0
CONNECT_TIMEOUT_S = 5.0


class StalePlanError(DependencyUnavailableError):
    """A prepared statement the schema has changed under (a migration since it was prepared); run it again."""


def _stale_plan(exc: psycopg.errors.FeatureNotSupported) -> bool:
    # PostgreSQL gives this case no SQLSTATE of its own (0A000 is any unsupported feature): its message tells.
    return "cached plan must not change result type" in (exc.diag.message_primary or "")


PREPARE_THRESHOLD = 2  # a statement run twice on a connection is prepared (psycopg's default is 5)


def connect(
    url: str, *, application_name: str = "aitasks", connect_timeout: float = CONNECT_TIMEOUT_S, prepare: bool = True
) -> Connection:
    """A new autocommit connection (each statement commits on its own; multi-statement work uses transaction()).

    With `prepare`, a statement run PREPARE_THRESHOLD times is prepared server-side, planned once for the
    connection's life (about a third of the executor's database time per task). Without it none is: a prepared
    statement pins the session to one database connection behind RDS Proxy (DATABASE_PREPARED_STATEMENTS)."""
    try:
        return psycopg.connect(
            url,
            autocommit=True,
            row_factory=dict_row,
            application_name=application_name,
            connect_timeout=max(2, math.ceil(connect_timeout)),  # libpq's minimum is 2 s
            prepare_threshold=PREPARE_THRESHOLD if prepare else None,
            **cast("dict[str, Any]", KEEPALIVES),
        )
    except psycopg.OperationalError as exc:
        raise DependencyUnavailableError("database") from exc


class _Watchdog:
    """Ends statements that run past their deadline by shutting their connection's socket from another thread: the
    call blocked on it fails at once (OperationalError), the connection is then broken and the next use opens a new
    one. A server that stopped answering - paused, or behind a partition - never ends a statement otherwise.

    One daemon thread per process serves every armed statement."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._armed: dict[int, tuple[float, int]] = {}  # token -> (deadline on the monotonic clock, socket fd)
        self._fired: set[int] = set()
        self._tokens = itertools.count()
        self._thread: threading.Thread | None = None
        self._wakes_at = math.inf  # when the watchdog next looks (it is only woken for an earlier deadline)

    def arm(self, fd: int, at: float) -> int:
        with self._cond:
            token = next(self._tokens)
            self._armed[token] = (at, fd)
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="db-watchdog", daemon=True)
                self._thread.start()
            if at < self._wakes_at:
                self._cond.notify()
            return token

    def disarm(self, token: int) -> bool:
        """Stop watching; True if the deadline passed and the socket was shut."""
        with self._cond:
            self._armed.pop(token, None)
            if token in self._fired:
                self._fired.discard(token)
                return True
            return False

    def _watch(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                for token, (at, fd) in list(self._armed.items()):
                    if at <= now:
                        del self._armed[token]
                        self._fired.add(token)
                        _shut(fd)
                first = min((at for at, _ in self._armed.values()), default=math.inf)
                self._wakes_at = first
                self._cond.wait(None if first == math.inf else max(0.0, first - now))
                self._wakes_at = -math.inf  # awake: arming needs no notify until it waits again


def _shut(fd: int) -> None:
    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError:
        return  # already closed
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        sock.close()  # the duplicate only: the connection's own descriptor stays open until psycopg closes it


_WATCHDOG = _Watchdog()


class ConnectionProvider:
    """One connection per process (per Lambda environment), opened on first use and reopened when it broke.

    `url` is a callable so the secret behind it is only read when a connection is actually needed. Every statement
    run through `statement()` ends by its deadline: the request's (`deadline()`), else STATEMENT_CAP_S from its start.
    """

    def __init__(
        self,
        url: Callable[[], str],
        *,
        application_name: str = "aitasks",
        statement_cap_s: float = STATEMENT_CAP_S,
        prepare: bool = True,
    ) -> None:
        self._url = url
        self._prepare = prepare
        self._application_name = application_name
        self._statement_cap_s = statement_cap_s
        self._conn: Connection | None = None
        self._deadline: float | None = None  # on the monotonic clock

    def __call__(self) -> Connection:
        conn = self._conn
        if conn is not None and not (conn.closed or conn.broken) and _hung_up(conn):
            # The server closed it while it was idle (a restart, a failover, an idle timeout): not worth a failed
            # request to find out.
            conn.close()
        if conn is None or conn.closed or conn.broken:
            if conn is not None:
                logger.warning("database connection lost; reconnecting")
                conn.close()
            self._conn = None
            timeout = CONNECT_TIMEOUT_S if self._deadline is None else self._deadline - time.monotonic()
            if timeout < 1:
                raise DependencyUnavailableError("database")
            conn = self._conn = connect(
                self._url(),
                application_name=self._application_name,
                connect_timeout=min(timeout, CONNECT_TIMEOUT_S),
                prepare=self._prepare,
            )
        return conn

    @contextlib.contextmanager
    def deadline(self, seconds: float) -> Iterator[None]:
        """Within this block, every statement (and a new connection) ends `seconds` from now at the latest."""
        outer = self._deadline
        at = time.monotonic() + seconds
        self._deadline = at if outer is None else min(outer, at)
        try:
            yield
        finally:
            self._deadline = outer

    @contextlib.contextmanager
    def statement(self) -> Iterator[Connection]:
        """The connection for one statement (or one transaction), cut off at its deadline: a statement past it raises
        DependencyUnavailableError, as a database that cannot be reached does."""
        conn = self()
        at = time.monotonic() + self._statement_cap_s
        if self._deadline is not None:
            at = min(at, self._deadline)
        if at <= time.monotonic():
            raise DependencyUnavailableError("database")
        token = _WATCHDOG.arm(conn.fileno(), at)
        try:
            yield conn
        except psycopg.errors.FeatureNotSupported as exc:
            if not _stale_plan(exc):
                raise
            # A migration changed what a prepared statement returns: the server refuses to run it again. Forget
            # this connection's prepared statements (psycopg's cache with them); the statement may be run again.
            logger.warning("a migration changed a prepared statement's result; prepared statements dropped")
            with contextlib.suppress(psycopg.Error):
                conn.execute("DEALLOCATE ALL")
            raise StalePlanError("database") from exc
        finally:
            if _WATCHDOG.disarm(token):
                logger.warning("a database statement ran past its deadline; the connection was dropped")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _hung_up(conn: Connection) -> bool:
    """Whether an idle connection has something to read: the server's goodbye (an error, or the end of the stream).
    A connection another thread is using is not idle, and not looked at."""
    if not conn.lock.acquire(blocking=False):
        return False
    try:
        readable, _, _ = select.select([conn.fileno()], [], [], 0)
    except (OSError, ValueError):
        return True
    finally:
        conn.lock.release()
    return bool(readable)


@contextlib.contextmanager
def _using(connection: Callable[[], Connection]) -> Iterator[Connection]:
    """A provider's connection under its deadlines; any other callable's (a test's own connection) as it is."""
    if isinstance(connection, ConnectionProvider):
        with connection.statement() as conn:
            yield conn
    else:
        yield connection()


class _Repository:
    _module: str

    def __init__(self, connection: Callable[[], Connection]) -> None:
        self._connection = connection

    def _fetchone(self, query: str, params: Mapping[str, Any], *, module: str | None = None) -> DictRow | None:
        rows = self._fetchall(query, params, module=module)
        return rows[0] if rows else None

    def _fetchall(self, query: str, params: Mapping[str, Any], *, module: str | None = None) -> list[DictRow]:
        try:
            return self._run(query, params, module=module)
        except StalePlanError:
            return self._run(query, params, module=module)  # failed, so nothing was done: once more, planned anew

    def _run(self, query: str, params: Mapping[str, Any], *, module: str | None = None) -> list[DictRow]:
        sql = queries(module or self._module)[query]
        try:
            with _using(self._connection) as conn, conn.cursor() as cur:
                # The SQL text is one of our .sql files, never assembled from input: values go in as parameters.
                return cur.execute(cast("Any", sql), params).fetchall()
        except psycopg.errors.UniqueViolation as exc:
            if exc.diag.constraint_name == "tasks_tenant_idempotency_key_key":
                raise IdempotencyKeyTakenError from exc
            raise
        except psycopg.OperationalError as exc:
            raise DependencyUnavailableError("database") from exc


# The statuses finish_run may set (its `-- transition:` lines).
_FINISHED = frozenset({TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.DEAD_LETTER, TaskStatus.CANCELLED})


def _task(row: Mapping[str, Any] | None) -> Task | None:
    if row is None:
        return None
    return Task(
        id=row["id"],
        tenant_id=TenantId(row["tenant_id"]),
        type=row["type"],
        priority=row["priority"],
        status=TaskStatus(row["status"]),
        payload=row["payload"],
        max_attempts=row["max_attempts"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        available_at=row["available_at"],
        scheduled_at=row["scheduled_at"],
        idempotency_key=row["idempotency_key"],
        attempt_count=row["attempt_count"],
        locked_by=row["locked_by"],
        locked_until=row["locked_until"],
        last_error=row["last_error"],
        cancel_requested_at=row["cancel_requested_at"],
        tokens_in=row["tokens_in"],
        tokens_out=row["tokens_out"],
        cost=row["cost"],
        budget_from=row["budget_from"],
        redrive_count=row["redrive_count"],
        model=row["model"],
        input_tokens=row["input_tokens"],
        max_output_tokens=row["max_output_tokens"],
        worst_cost=row["worst_cost"],
        max_cost_usd=row["max_cost_usd"],
        model_key=row["model_key"],
        rate_tokens=row["rate_tokens"],
        deferred_until=row.get("wake_at"),
        deferred_for="rate_limit" if row.get("wake_at") else None,
        wake_slots=row.get("wake_slots"),
        waiting_for=cast("WaitingFor | None", row.get("waiting_for")),
    )


def _tasks(rows: list[DictRow]) -> list[Task]:
    return [t for t in map(_task, rows) if t is not None]


def _text(value: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL: a model's answer or an error that has one keeps a replacement character."""
    return value.replace("\x00", "\ufffd") if value else value


def _finished_row(run: FinishedRun) -> dict[str, Any]:
    """One run's end as a row of finish_runs' JSON array (its keys are the statement's column names)."""
    outcome = run.outcome
    if outcome.status not in _FINISHED:
        raise ValueError(f"a run cannot end as {outcome.status}")
    artifact = outcome.artifact
    return {
        "id": str(run.task_id),
        "attempt_no": run.attempt_no,
        "status": outcome.status.value,
        "event_type": EVENT_FOR_STATUS[outcome.status],
        "attempt_status": outcome.attempt_status,
        "last_error": _text(outcome.last_error),
        "available_at": outcome.available_at.isoformat() if outcome.available_at else None,
        "model": outcome.model,
        "tokens_in": outcome.tokens_in,
        "tokens_out": outcome.tokens_out,
        "cost": format(outcome.cost, "f") if outcome.cost is not None else None,  # exact, not a float
        "latency_ms": outcome.latency_ms,
        "error_code": outcome.error_code,
        "error_detail": _text(outcome.error_detail),
        "artifact_kind": artifact.kind if artifact else None,
        "artifact_content": _text(artifact.content) if artifact else None,
        "charge_held": outcome.charge_held,
        "pause_until": outcome.pause_until.isoformat() if outcome.pause_until else None,
    }


class PostgresTaskRepository(_Repository):
    _module = "tasks"

    def add(self, task: Task) -> Task | None:
        row = self._fetchone(
            "insert_task",
            {
                "id": task.id,
                "tenant_id": task.tenant_id,
                "type": task.type,
                "priority": task.priority,
                "payload": Jsonb(dict(task.payload)),
                "idempotency_key": task.idempotency_key,
                "scheduled_at": task.scheduled_at,
                "available_at": task.available_at,
                "max_attempts": task.max_attempts,
                "now": task.created_at,
                "model": task.model,
                "model_key": task.model_key,
                "input_tokens": task.input_tokens,
                "rate_tokens": task.rate_tokens,
                "max_output_tokens": task.max_output_tokens,
                "worst_cost": task.worst_cost,
                "max_cost_usd": task.max_cost_usd,
            },
        )
        return _task(row)

    def get(self, tenant_id: TenantId, task_id: UUID) -> Task | None:
        return _task(self._fetchone("get_task", {"tenant_id": tenant_id, "id": task_id}))

    def claim_due(self, *, limit: int, locked_by: str, lease_until: datetime, now: datetime) -> list[Task]:
        params = {"limit": limit, "locked_by": locked_by, "lease_until": lease_until, "now": now}
        return _tasks(self._fetchall("claim_due", params))

    def finish_runs(self, runs: Sequence[FinishedRun], *, locked_by: str, now: datetime) -> list[Task]:
        if not runs:
            return []
        rows = [_finished_row(run) for run in runs]
        return _tasks(self._fetchall("finish_runs", {"runs": Jsonb(rows), "locked_by": locked_by, "now": now}))

    def extend_leases(
        self, runs: Sequence[tuple[UUID, int]], *, locked_by: str, lease_until: datetime
    ) -> dict[tuple[UUID, int], Lease]:
        params = {
            "ids": [task_id for task_id, _ in runs],
            "attempt_nos": [attempt_no for _, attempt_no in runs],
            "locked_by": locked_by,
            "lease_until": lease_until,
        }
        rows = self._fetchall("extend_leases", params)
        return {
            (row["id"], row["attempt_count"]): Lease(cancel_requested=row["cancel_requested_at"] is not None)
            for row in rows
        }

    def wake_freed(self, freed: Mapping[TenantId, int], *, now: datetime) -> list[Task]:
        tenants = sorted(freed)
        params = {"tenants": tenants, "counts": [freed[t] for t in tenants], "now": now}
        return _tasks(self._fetchall("wake_freed", params))

    def abandon_expired(self, task_ids: Sequence[UUID], *, now: datetime) -> list[Task]:
        return _tasks(self._fetchall("abandon_expired_run", {"ids": list(task_ids), "now": now}))

    def expired_leases(self, *, now: datetime, limit: int) -> list[UUID]:
        return [row["id"] for row in self._fetchall("expired_leases", {"now": now, "limit": limit})]

    def redispatch_due(self, *, now: datetime, due_before: datetime, limit: int) -> list[Task]:
        return _tasks(self._fetchall("redispatch_due", {"now": now, "due_before": due_before, "limit": limit}))

    def redrive(
        self,
        *,
        now: datetime,
        limit: int,
        task_id: UUID | None = None,
        tenant_id: TenantId | None = None,
        types: Sequence[str] | None = None,
        since: datetime | None = None,
    ) -> list[Task]:
        params = {
            "now": now,
            "limit": limit,
            "id": task_id,
            "tenant_id": tenant_id,
            "types": list(types) if types else None,
            "since": since,
        }
        return _tasks(self._fetchall("redrive", params))

    def dead_letters(
        self, *, limit: int, types: Sequence[str] | None = None, since: datetime | None = None
    ) -> list[Task]:
        params = {"limit": limit, "types": list(types) if types else None, "since": since}
        return _tasks(self._fetchall("dead_letters", params))

    def get_by_id(self, task_id: UUID) -> Task | None:
        return _task(self._fetchone("get_task_by_id", {"id": task_id}))

    def find_by_idempotency_key(self, tenant_id: TenantId, key: str) -> Task | None:
        return _task(self._fetchone("get_task_by_idempotency_key", {"tenant_id": tenant_id, "idempotency_key": key}))

    def cancel(self, tenant_id: TenantId, task_id: UUID, *, now: datetime) -> Task | None:
        return _task(self._fetchone("cancel_task", {"tenant_id": tenant_id, "id": task_id, "now": now}))

    def request_cancel(self, tenant_id: TenantId, task_id: UUID, *, now: datetime) -> Task | None:
        return _task(self._fetchone("request_cancel", {"tenant_id": tenant_id, "id": task_id, "now": now}))

    # The read side (TaskQueries).

    def list_tasks(
        self, tenant_id: TenantId, filters: TaskFilter, *, offset: int, limit: int
    ) -> tuple[list[Task], int]:
        params = {
            "tenant_id": tenant_id,
            "statuses": sorted(filters.statuses),
            "types": sorted(filters.types),
            "offset": offset,
            "limit": limit,
        }
        page = _tasks(self._fetchall("list_tasks", params))
        total = self._fetchone("count_tasks", params)
        return page, int(total["total"]) if total else 0

    def attempts(self, tenant_id: TenantId, task_id: UUID) -> list[AttemptRecord] | None:
        rows = self._fetchall("list_attempts", {"tenant_id": tenant_id, "id": task_id})
        if not rows:
            return None
        return [
            AttemptRecord(
                attempt_no=r["attempt_no"],
                status=r["status"],
                model=r["model"],
                tokens_in=r["tokens_in"],
                tokens_out=r["tokens_out"],
                cost=r["cost"],
                latency_ms=r["latency_ms"],
                error_code=r["error_code"],
                error_detail=r["error_detail"],
                started_at=r["started_at"],
                ended_at=r["ended_at"],
                cost_estimated=bool(r["cost_estimated"]),
            )
            for r in rows
            if r["attempt_no"] is not None
        ]

    def artifacts(self, tenant_id: TenantId, task_id: UUID) -> list[ArtifactRecord] | None:
        rows = self._fetchall("list_artifacts", {"tenant_id": tenant_id, "id": task_id})
        if not rows:
            return None
        return [
            ArtifactRecord(
                id=r["artifact_id"], kind=r["kind"], uri=r["uri"], content=r["content"], created_at=r["created_at"]
            )
            for r in rows
            if r["artifact_id"] is not None
        ]

    def history(self, tenant_id: TenantId, task_id: UUID) -> list[EventRecord] | None:
        rows = self._fetchall("list_events", {"tenant_id": tenant_id, "id": task_id})
        if not rows:
            return None
        return [
            EventRecord(
                id=r["event_id"],
                seq=r["seq"],
                event_type=r["event_type"],
                status=r["payload"].get("status"),
                attempt_no=int(r["payload"].get("attemptNo") or 0),
                occurred_at=r["occurred_at"],
            )
            for r in rows
            if r["event_id"] is not None
        ]


class PostgresOutbox(_Repository):
    _module = "outbox"

    def publish_pending(self, limit: int, publish: Callable[[list[OutboxEvent]], set[UUID]]) -> int:
        try:
            with _using(self._connection) as conn, conn.transaction(), conn.cursor() as cur:
                sql = queries("outbox")
                rows = cur.execute(cast("Any", sql["claim_unpublished"]), {"limit": limit}).fetchall()
                if not rows:
                    return 0
                published = publish([OutboxEvent(**row) for row in rows])
                if not published:
                    return 0
                marked = cur.execute(
                    cast("Any", sql["mark_published"]), {"ids": list(published), "now": datetime.now(UTC)}
                ).fetchall()
                return len(marked)
        except psycopg.OperationalError as exc:
            raise DependencyUnavailableError("database") from exc

    def backlog(self, *, before: datetime) -> int:
        row = self._fetchone("backlog", {"before": before})
        return int(row["n"]) if row else 0


class PostgresRetention(_Repository):
    _module = "tasks"

    def prune_finished(self, *, cutoff: datetime, limit: int) -> int:
        return len(self._fetchall("prune_finished", {"cutoff": cutoff, "limit": limit}))

    def prune_published(self, *, cutoff: datetime, limit: int) -> int:
        return len(self._fetchall("prune_published", {"cutoff": cutoff, "limit": limit}, module="outbox"))

    def prune_expired_keys(self, *, now: datetime, limit: int) -> int:
        params = {"now_s": int(now.timestamp()), "limit": limit}
        return len(self._fetchall("prune_expired", params, module="idempotency"))

    def prune_expired_tickets(self, *, now: datetime, limit: int) -> int:
        return len(self._fetchall("prune_expired_tickets", {"now": now, "limit": limit}, module="live"))

    def prune_stale_connections(self, *, cutoff: datetime, limit: int) -> int:
        return len(self._fetchall("prune_stale_connections", {"cutoff": cutoff, "limit": limit}, module="live"))

    def prune_model_calls(self, *, cutoff: datetime, limit: int) -> int:
        return len(self._fetchall("prune_calls", {"cutoff": cutoff, "limit": limit}, module="models"))


class PostgresTicketStore(_Repository):
    _module = "live"

    def add(self, *, ticket_hash: bytes, tenant_id: TenantId, expires_at: datetime) -> None:
        self._fetchone("insert_ticket", {"ticket_hash": ticket_hash, "tenant_id": tenant_id, "expires_at": expires_at})

    def redeem(self, ticket_hash: bytes, *, now: datetime) -> TenantId | None:
        row = self._fetchone("redeem_ticket", {"ticket_hash": ticket_hash, "now": now})
        return TenantId(row["tenant_id"]) if row else None


class PostgresConnectionRegistry(_Repository):
    _module = "live"

    def add(self, connection_id: str, tenant_id: TenantId, *, now: datetime) -> None:
        self._fetchone("add_connection", {"connection_id": connection_id, "tenant_id": tenant_id, "now": now})

    def remove(self, connection_id: str) -> bool:
        return self._fetchone("remove_connection", {"connection_id": connection_id}) is not None

    def of_tenant(self, tenant_id: TenantId) -> list[str]:
        return [r["connection_id"] for r in self._fetchall("connections_of_tenant", {"tenant_id": tenant_id})]


class PostgresApiKeyRepository(_Repository):
    _module = "api_keys"

    def add(self, *, tenant_id: TenantId, name: str, key_hash: bytes, now: datetime) -> UUID:
        row = self._fetchone(
            "insert_api_key", {"id": uuid4(), "tenant_id": tenant_id, "name": name, "key_hash": key_hash, "now": now}
        )
        assert row is not None
        return cast("UUID", row["id"])

    def principal_for(self, key_hash: bytes) -> Principal | None:
        row = self._fetchone("principal_for_key", {"key_hash": key_hash})
        return Principal(TenantId(row["tenant_id"]), row["usage_key"]) if row else None

    def revoke(self, key_id: UUID, *, now: datetime) -> bool:
        return self._fetchone("revoke_api_key", {"id": key_id, "now": now}) is not None


class PostgresTenantRepository(_Repository):
    _module = "tenants"

    def get(self, tenant_id: TenantId) -> TenantPlan | None:
        row = self._fetchone("get_tenant", {"tenant_id": tenant_id})
        if row is None:
            return None
        return TenantPlan(TenantId(row["tenant_id"]), Tier(row["tier"]), row["usage_key_id"], row["usage_key"])

    def save(self, plan: TenantPlan, *, now: datetime) -> None:
        self._fetchone("save_tenant", {**dataclasses.asdict(plan), "tier": plan.tier.value, "now": now})


class PostgresLimitsRepository(_Repository):
    _module = "tenants"

    def set_max_concurrency(self, tenant_id: TenantId, value: int | None, *, now: datetime) -> None:
        self._fetchone("set_max_concurrency", {"tenant_id": tenant_id, "max_concurrency": value, "now": now})

    def set_monthly_budget(self, tenant_id: TenantId, usd: Decimal | None, *, now: datetime) -> None:
        self._fetchone("set_monthly_budget", {"tenant_id": tenant_id, "monthly_budget_usd": usd, "now": now})

    def set_weight(self, tenant_id: TenantId, weight: Decimal | None, *, now: datetime) -> None:
        self._run("set_weight", {"tenant_id": tenant_id, "weight": weight, "now": now})

    def model_tpm(self, model_key: str) -> int | None:
        row = self._fetchone("model_tpm", {"model_key": model_key}, module="tasks")
        return row["tpm"] if row else None

    def limits(self, tenant_id: TenantId, *, now: datetime) -> TenantLimits:
        row = self._fetchone("limits", {"tenant_id": tenant_id, "now": now})
        assert row is not None  # the query always returns its one row
        return TenantLimits(
            tenant_id=tenant_id,
            tier=Tier(row["tier"]) if row["tier"] else None,
            max_concurrency=row["max_concurrency"],
            max_concurrency_override=row["max_concurrency_override"],
            running=row["running"],
            queued=row["queued"],
            monthly_budget_usd=row["monthly_budget_usd"],
            budget_override=row["budget_override"],
            spent_usd=row["spent_usd"],
            reserved_usd=row["reserved_usd"],
            weight=row["weight"],
            weight_override=row["weight_override"],
        )

    def spend_by_model(self, tenant_id: TenantId, *, now: datetime) -> list[ModelSpend]:
        rows = self._fetchall("spend_by_model", {"tenant_id": tenant_id, "now": now})
        return [ModelSpend(**row) for row in rows]


class PostgresModelRepository(_Repository):
    """Prices and limits per model. The price table is read once and kept `max_age_s` (a Lambda environment reads
    it again after that; a sync reaches every function within that time)."""

    _module = "models"

    def __init__(self, connection: Callable[[], Connection], *, max_age_s: float = 300) -> None:
        super().__init__(connection)
        self._max_age_s = max_age_s
        self._table: tuple[float, PriceTable] | None = None

    def price_table(self) -> PriceTable:
        import time

        if self._table is None or time.monotonic() - self._table[0] > self._max_age_s:
            rows = self._fetchall("prices", {})
            prices = {
                r["model"]: ModelPrice(r["input_per_m"], r["output_per_m"], r["cached_input_per_m"], r["provider"])
                for r in rows
            }
            self._table = (time.monotonic(), PriceTable.of(prices, effective_date=datetime.now(UTC).date()))
        return self._table[1]

    def save_prices(self, prices: Mapping[str, tuple[str, ModelPrice, str]], *, now: datetime) -> int:
        sql = queries("models")
        try:
            with _using(self._connection) as conn, conn.transaction(), conn.cursor() as cur:
                for model, (provider, price, source) in prices.items():
                    params = {
                        "model": model,
                        "provider": provider,
                        "input_per_m": price.input_per_m,
                        "output_per_m": price.output_per_m,
                        "cached_input_per_m": price.cached_input_per_m,
                        "source": source,
                        "now": now,
                    }
                    cur.execute(cast("Any", sql["save_price"]), params)
                cur.execute(cast("Any", sql["forget_prices_not_in"]), {"models": list(prices)})
        except psycopg.OperationalError as exc:
            raise DependencyUnavailableError("database") from exc
        self._table = None
        return len(prices)

    def set_limits(self, model: str, *, rpm: int | None, tpm: int | None, now: datetime) -> str:
        key = self.price_table().key(model)
        self._fetchone("set_limits", {"model": key, "rpm": rpm, "tpm": tpm, "now": now})
        return key

    def resume(self, model: str, *, now: datetime) -> str | None:
        key = self.price_table().key(model)
        return key if self._fetchone("resume_model", {"model": key, "now": now}) else None

    def due_tasks(self, model: str, *, now: datetime, limit: int) -> list[Task]:
        key = self.price_table().key(model)
        return _tasks(self._fetchall("model_wake_list", {"model": key, "now": now, "limit": limit}))

    def models(self, *, now: datetime) -> list[ModelStatus]:
        return [ModelStatus(**row) for row in self._fetchall("models", {"now": now})]


@functools.cache
def _secrets() -> Any:
    """Powertools' Secrets Manager provider (its cache is per provider), with timeouts a request can wait for."""
    from aws_lambda_powertools.utilities.parameters import SecretsProvider
    from botocore.config import Config

    return SecretsProvider(
        boto_config=Config(connect_timeout=2, read_timeout=3, retries={"max_attempts": 2, "mode": "standard"})
    )


def database_url_from_secret(
    secret_id: str,
    *,
    max_age_s: int = 300,
    host: str | None = None,
    port: int | None = None,
    dbname: str | None = None,
) -> str:
    """A libpq URL from a Secrets Manager secret in the RDS format, read through Powertools Parameters (cached).

    An RDS-managed master secret holds only the username and password: `host` (an RDS Proxy endpoint, say),
    `port` and `dbname` then come from the caller, and win over the secret's when both are there.
    """
    from psycopg.conninfo import make_conninfo

    try:
        secret = _secrets().get(secret_id, transform="json", max_age=max_age_s)
    except Exception as exc:  # Powertools wraps every failure (throttled, timed out, denied) in GetParameterError
        raise DependencyUnavailableError("database secret") from exc
    if not isinstance(secret, dict):
        raise DependencyUnavailableError("database secret")
    return make_conninfo(
        host=host or secret["host"],
        port=str(port or secret.get("port", 5432)),
        user=secret["username"],
        password=secret["password"],
        dbname=dbname or secret.get("dbname", "postgres"),
        sslmode=secret.get("sslmode", "require"),
    )
