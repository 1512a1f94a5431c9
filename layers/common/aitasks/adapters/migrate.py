"""Numbered plain-SQL migrations: ordered, idempotent, checksummed, one runner at a time (advisory lock)."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from importlib import resources
from typing import TYPE_CHECKING

import psycopg

from aitasks.domain.errors import MigrationError

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from aitasks.adapters.postgres import Connection

# pg_advisory_lock key: "aitasks" in ASCII. Every runner takes it, so two runners never interleave.
LOCK_KEY = int.from_bytes(b"aitasks", "big")
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

_SCHEMA_MIGRATIONS = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


@dataclasses.dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(directory: Path | None = None) -> list[Migration]:
    """The migration files in version order; a stray or duplicate file name is an error, not a silent skip."""
    folder = directory or resources.files("aitasks.adapters").joinpath("migrations")
    found: dict[int, Migration] = {}
    for entry in folder.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _FILE.match(entry.name)
        if match is None:
            raise MigrationError(f"migration file {entry.name!r} is not named NNNN_name.sql")
        version = int(match[1])
        if version in found:
            raise MigrationError(f"two migration files have version {version}")
        found[version] = Migration(version, match[2], entry.read_text())
    return [found[v] for v in sorted(found)]


def migrate(conn: Connection, migrations: Sequence[Migration] | None = None) -> list[Migration]:
    """Apply what is pending, each file in its own transaction; return what was applied.

    Refuses (and applies nothing) when an applied file changed or the database has a version this code lacks.
    """
    pending_all = list(migrations if migrations is not None else load_migrations())
    # A migration may rewrite a big table, or wait for another migrator's lock: not bound by the service's timeouts.
    conn.execute("SET statement_timeout = 0")
    conn.execute("SET lock_timeout = 0")
    conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
    try:
        conn.execute(_SCHEMA_MIGRATIONS)
        applied = {row["version"]: row for row in conn.execute("SELECT version, name, checksum FROM schema_migrations")}
        known = {m.version for m in pending_all}
        for m in pending_all:
            row = applied.get(m.version)
            if row is not None and row["checksum"] != m.checksum:
                raise MigrationError(
                    f"migration {m.version:04d}_{m.name}.sql changed after it was applied; "
                    "add a new migration instead of editing an applied one"
                )
        unknown = sorted(set(applied) - known)
        if unknown:
            raise MigrationError(f"the database has migrations this code does not know: {unknown}")
        done: list[Migration] = []
        for m in pending_all:
            if m.version in applied:
                continue
            with conn.transaction():
                conn.execute(m.sql.encode())  # no parameters: sent as a simple query, several statements allowed
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                    (m.version, m.name, m.checksum),
                )
            done.append(m)
        return done
    except psycopg.Error as exc:
        raise MigrationError(f"migration failed: {exc}") from exc
    finally:
        if not conn.broken and not conn.closed:
            conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
