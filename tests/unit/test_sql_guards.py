"""The guarded UPDATEs (the named queries of adapters/sql/tasks.sql and the functions the migrations define) agree
with the transition table of domain/task.py."""

from __future__ import annotations

import re

import pytest

from aitasks.adapters.migrate import load_migrations
from aitasks.adapters.postgres import parse_queries, queries
from aitasks.domain.task import TaskStatus, require_path

STATUS = "|".join(s.value for s in TaskStatus)
_FUNCTION = re.compile(r"CREATE (?:OR REPLACE )?FUNCTION (\w+)\(.*?\$\$(.*?)\$\$", re.DOTALL)


def functions() -> dict[str, str]:
    """The body of every SQL function as the last migration that (re)defines it left it."""
    found: dict[str, str] = {}
    for migration in load_migrations():
        found.update({f"function {name}": body for name, body in _FUNCTION.findall(migration.sql)})
    return found


STATEMENTS = {**queries("tasks"), **functions()}


def code(sql: str) -> str:
    """The SQL without its comments."""
    return re.sub(r"--[^\n]*", "", sql)


def transitions(sql: str) -> list[list[TaskStatus]]:
    return [
        [TaskStatus(s.strip()) for s in line.split("->")]
        for line in re.findall(r"^--\s*transition:\s*(.+)$", sql, re.MULTILINE)
    ]


def guarded_statements() -> list[str]:
    """Statements that change a task's status."""
    return [name for name, sql in STATEMENTS.items() if re.search(r"\bUPDATE tasks\s+SET status\b", code(sql))]


def test_every_status_change_is_found_and_annotated() -> None:
    assert {
        "function claim_tasks",
        "function finish_runs",
        "function abandon_expired_runs",
        "cancel_task",
        "redrive",
    } <= set(guarded_statements())
    for name in guarded_statements():
        assert transitions(STATEMENTS[name]), f"{name} changes a status but declares no transition"


@pytest.mark.parametrize("name", guarded_statements())
def test_the_where_names_exactly_the_allowed_sources_and_the_set_the_target(name: str) -> None:
    sql = STATEMENTS[name]
    paths = transitions(sql)
    for path in paths:
        require_path(None, path[0], *path[1:])  # raises if the table forbids a step
    body = code(sql)
    sources: set[TaskStatus] = set()
    targets: set[TaskStatus] = set()
    for start in (m.start() for m in re.finditer(r"UPDATE tasks\s+SET status", body)):
        update = body[start:]
        where = update[update.index("WHERE") : update.index("RETURNING")]
        guard = re.search(r"status IN \(([^)]*)\)", where)
        assert guard, f"{name}: the UPDATE is not guarded by status IN (...)"
        sources |= {TaskStatus(s) for s in re.findall(rf"'({STATUS})'", guard[1])}
        # The SET names the target: one literal, a CASE over literals, or (a run's end) the caller's value.
        set_clause = update[update.index("SET status =") : update.index("WHERE")]
        first = set_clause.split(",")[0]
        if re.search(r"%\(status\)s|\b(run|c)\.status\b", first):
            targets |= {p[-1] for p in paths}
            continue
        if "CASE" in first:
            targets |= {TaskStatus(s) for s in re.findall(rf"'({STATUS})'", set_clause.split(" END")[0])}
        else:
            targets.add(TaskStatus(re.search(rf"SET status = '({STATUS})'", set_clause)[1]))
    assert sources == {p[0] for p in paths}
    assert targets == {p[-1] for p in paths}


def test_queries_parse_by_name_and_keep_their_text() -> None:
    parsed = parse_queries("-- name: a\nSELECT 1;\n\n-- name: b\n-- a comment\nSELECT %(x)s\n")
    assert parsed == {"a": "SELECT 1", "b": "-- a comment\nSELECT %(x)s"}
