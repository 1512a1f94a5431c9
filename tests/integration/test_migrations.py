"""`aitasks migrate`: the schema it makes, idempotence, concurrency, and refusing what it must refuse."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from decimal import Decimal
from pathlib import Path

import pytest

from aitasks.adapters.migrate import Migration, load_migrations, migrate
from aitasks.adapters.postgres import connect
from aitasks.domain.errors import MigrationError

SNAPSHOT = Path(__file__).with_name("schema.snapshot")

# Columns, constraints (not the NOT NULL ones PostgreSQL 18 also lists), indexes and functions of the public schema:
# what the application relies on, in a form that PostgreSQL 15 and 18 print alike.
CATALOG = """
SELECT 'column ' || table_name || '.' || column_name || ' ' || data_type
       || CASE WHEN is_nullable = 'NO' THEN ' not null' ELSE '' END
       || COALESCE(' default ' || column_default, '')
FROM information_schema.columns WHERE table_schema = 'public'
UNION ALL
SELECT 'constraint ' || conrelid::regclass || ' ' || conname || ' ' || pg_get_constraintdef(oid)
FROM pg_constraint WHERE connamespace = 'public'::regnamespace AND contype IN ('p', 'u', 'f', 'c')
UNION ALL
SELECT 'index ' || indexdef FROM pg_indexes WHERE schemaname = 'public'
UNION ALL
SELECT 'function ' || proname || '(' || pg_get_function_identity_arguments(oid) || ') ' || pg_get_function_result(oid)
FROM pg_proc WHERE pronamespace = 'public'::regnamespace
ORDER BY 1
"""


def schema_of(url: str) -> str:
    with connect(url) as conn:
        return "\n".join(next(iter(row.values())) for row in conn.execute(CATALOG)) + "\n"


def test_all_migrations_on_an_empty_database_give_the_snapshot(databases) -> None:
    url = databases.create()
    with connect(url) as conn:
        applied = migrate(conn)
    assert [m.version for m in applied] == [m.version for m in load_migrations()]
    actual = schema_of(url)
    if os.environ.get("UPDATE_SNAPSHOT"):
        SNAPSHOT.write_text(actual)
    assert actual == SNAPSHOT.read_text(), "schema differs from tests/integration/schema.snapshot"


def test_a_second_run_applies_nothing_and_changes_nothing(databases) -> None:
    url = databases.create()
    with connect(url) as conn:
        migrate(conn)
        before = schema_of(url)
        assert migrate(conn) == []
    assert schema_of(url) == before


def test_two_runners_at_once_apply_each_migration_once(databases) -> None:
    url = databases.create()
    results: list[list[Migration] | BaseException] = []
    barrier = threading.Barrier(4)

    def runner() -> None:
        with connect(url) as conn:
            barrier.wait()
            try:
                results.append(migrate(conn))
            except BaseException as exc:  # collected and asserted on below
                results.append(exc)

    threads = [threading.Thread(target=runner) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(isinstance(r, list) for r in results), results
    assert sorted(len(r) for r in results if isinstance(r, list)) == [0, 0, 0, len(load_migrations())]
    with connect(url) as conn:
        count = conn.execute("SELECT count(*) AS n FROM schema_migrations").fetchone()
    assert count == {"n": len(load_migrations())}


def test_a_changed_applied_file_is_refused_and_nothing_is_applied(databases, tmp_path: Path) -> None:
    url = databases.create()
    first = load_migrations()[0]
    with connect(url) as conn:
        migrate(conn, [first])
        edited = Migration(first.version, first.name, first.sql + "\n-- edited\n")
        later = Migration(9999, "later", "CREATE TABLE later (id int)")
        with pytest.raises(MigrationError, match="changed after it was applied"):
            migrate(conn, [edited, later])
        assert conn.execute("SELECT to_regclass('later') AS t").fetchone() == {"t": None}


def test_a_database_ahead_of_the_code_is_refused(databases) -> None:
    url = databases.create()
    with connect(url) as conn:
        migrate(conn)
        conn.execute("INSERT INTO schema_migrations (version, name, checksum) VALUES (9998, 'future', 'x')")
        with pytest.raises(MigrationError, match="does not know"):
            migrate(conn)


def test_a_failing_migration_rolls_back_whole(databases) -> None:
    url = databases.create()
    broken = Migration(1, "broken", "CREATE TABLE half (id int); SELECT no_such_function();")
    with connect(url) as conn:
        with pytest.raises(MigrationError, match="no_such_function"):
            migrate(conn, [broken])
        assert conn.execute("SELECT to_regclass('half') AS t").fetchone() == {"t": None}
        assert conn.execute("SELECT count(*) AS n FROM schema_migrations").fetchone() == {"n": 0}


def test_file_names_must_be_numbered(tmp_path: Path) -> None:
    (tmp_path / "0001_ok.sql").write_text("SELECT 1")
    (tmp_path / "second.sql").write_text("SELECT 1")
    with pytest.raises(MigrationError, match=r"NNNN_name\.sql"):
        load_migrations(tmp_path)


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    aitasks = Path(sys.executable).with_name("aitasks")
    return subprocess.run([str(aitasks), *args], capture_output=True, text=True, env=env, timeout=60, check=False)


def test_cli_migrate_applies_then_reports_up_to_date(databases) -> None:
    url = databases.create()
    first = cli("migrate", "--database-url", url)
    assert first.returncode == 0, first.stderr
    assert "applied 0001_initial" in first.stdout
    again = cli("migrate", "--database-url", url)
    assert again.returncode == 0
    up_to_date, prices = again.stdout.strip().splitlines()
    assert up_to_date == "schema is up to date"
    assert re.fullmatch(r"\d{2,} model prices written", prices)  # genai-prices' and the fake model's
    with connect(url) as conn:
        fake = conn.execute("SELECT input_per_m, output_per_m FROM model_prices WHERE model = 'fake-echo-1'").fetchone()
    assert fake == {"input_per_m": Decimal("0.5"), "output_per_m": Decimal("1.5")}


def test_cli_migrate_against_a_database_that_is_down_says_so_in_one_line() -> None:
    done = cli("migrate", "--database-url", "postgresql://postgres@127.0.0.1:1/postgres?connect_timeout=2")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: cannot connect to the database")
    assert "Traceback" not in done.stderr


def test_cli_migrate_with_a_changed_file_says_so_in_one_line(databases) -> None:
    url = databases.create()
    assert cli("migrate", "--database-url", url).returncode == 0
    with connect(url) as conn:
        conn.execute("UPDATE schema_migrations SET checksum = 'tampered' WHERE version = 1")
    done = cli("migrate", "--database-url", url)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: migration 0001_initial.sql changed after it was applied; "
        "add a new migration instead of editing an applied one"
    ]
