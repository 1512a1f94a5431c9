"""The operator commands against a real database: redrive and prune, with one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from aitasks.application.dispatch import Dispatcher
from aitasks.application.tasks import NewTask
from aitasks.domain.task import TenantId
from tests.integration.conftest import create_task
from tests.support.fakes import InMemoryWorkQueue


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    aitasks = Path(sys.executable).with_name("aitasks")
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp"}
    return subprocess.run([str(aitasks), *args], capture_output=True, text=True, timeout=60, check=False, env=env)


def dead_letter(db, type_: str = "chat") -> str:
    payload = {"prompt": "p", "context": "c"} if type_ == "summarize" else {"prompt": "p"}
    task = create_task(db, Dispatcher(InMemoryWorkQueue()))(TenantId("t"), NewTask(type=type_, payload=payload))
    db().execute("UPDATE tasks SET status = 'dead_letter', last_error = 'boom' WHERE id = %s", (task.id,))
    return str(task.id)


def test_redrive_dry_run_then_for_real_by_type(db, database_url: str) -> None:
    chat, summary = dead_letter(db), dead_letter(db, "summarize")
    dry = cli("tasks", "redrive", "--status", "dead_letter", "--dry-run", "--database-url", database_url)
    assert dry.returncode == 0, dry.stderr
    assert {line.split("\t")[0] for line in dry.stdout.splitlines()} == {chat, summary}
    assert "would redrive 2 task(s)" in dry.stderr
    done = cli("tasks", "redrive", "--status", "dead_letter", "--type", "summarize", "--database-url", database_url)
    assert done.returncode == 0, done.stderr
    assert [line.split("\t")[0] for line in done.stdout.splitlines()] == [summary]
    assert "the sweeper will send the wake-ups" in done.stderr
    statuses = {str(r["id"]): r["status"] for r in db().execute("SELECT id, status FROM tasks")}
    assert statuses == {chat: "dead_letter", summary: "queued"}


def test_redrive_refuses_other_statuses_in_one_line(database_url: str) -> None:
    done = cli("tasks", "redrive", "--status", "failed", "--database-url", database_url)
    assert (done.returncode, done.stderr.strip()) == (1, "error: only --status dead_letter can be redriven")


def test_prune_reports_what_it_deleted(db, database_url: str) -> None:
    old = dead_letter(db)
    db().execute("UPDATE tasks SET updated_at = now() - interval '31 days' WHERE id = %s", (old,))
    db().execute("UPDATE outbox_messages SET published_at = now()")  # its events went out
    done = cli("prune", "--older-than-days", "30", "--database-url", database_url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "pruned 1 task(s), 0 event(s), 0 expired key(s)"


def test_a_database_that_is_down_is_one_line() -> None:
    done = cli("prune", "--database-url", "postgresql://postgres@127.0.0.1:1/x?connect_timeout=1")
    assert done.returncode == 1
    assert done.stderr.strip().startswith("error: cannot connect to the database")
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_tenants_limits_are_set_shown_and_put_back_to_the_tiers(db, database_url: str) -> None:
    url = ["--database-url", database_url]
    shown = cli("tenants", "set-limits", "acme", *url)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines() == [
        "tenant acme: max concurrency 10 (standard tier); running 0, queued 0",
        "no monthly budget; this month: $0 spent, $0 held",
    ]
    set_ = cli("tenants", "set-limits", "acme", "--max-concurrency", "3", "--monthly-budget-usd", "25.50", *url)
    assert set_.stdout.splitlines() == [
        "tenant acme: max concurrency 3 (override); running 0, queued 0",
        "monthly budget $25.500000 (override); this month: $0 spent, $0 held",
    ]
    back = cli("tenants", "set-limits", "acme", "--max-concurrency", "default", "--monthly-budget-usd", "default", *url)
    assert back.stdout.splitlines()[0] == "tenant acme: max concurrency 10 (standard tier); running 0, queued 0"
    assert back.stdout.splitlines()[1].startswith("no monthly budget")
    for wrong in (["--max-concurrency", "-1"], ["--max-concurrency", "lots"], ["--monthly-budget-usd", "-5"],
                  ["--monthly-budget-usd", "NaN"]):  # fmt: skip
        refused = cli("tenants", "set-limits", "acme", *wrong, *url)
        assert refused.returncode == 2, wrong
    assert db().execute("SELECT max_concurrency, monthly_budget_usd FROM tenant_limits").fetchall() == [
        {"max_concurrency": None, "monthly_budget_usd": None}
    ]


def test_models_limits_and_prices(db, database_url: str) -> None:
    url = ["--database-url", database_url]
    set_ = cli("models", "set-limits", "gpt-4o-mini", "--rpm", "500", "--tpm", "200000", *url)
    assert (set_.returncode, set_.stdout.strip()) == (0, "gpt-4o-mini: 500 rpm, 200000 tpm")
    assert cli("models", "set-limits", "gpt-4o-mini", "--rpm", "0", *url).returncode == 2
    listed = cli("models", "list", *url)
    assert listed.returncode == 0, listed.stderr
    rows = {line.split("\t")[0]: line.split("\t") for line in listed.stdout.splitlines()[1:]}
    assert rows["gpt-4o-mini"][1:6] == ["openai", "0.15", "0.6", "500", "200000"]
    assert rows["fake-echo-1"][1:4] == ["fake", "0.5", "1.5"]
    synced = cli("models", "sync-prices", *url)
    assert synced.returncode == 0 and synced.stdout.strip().endswith("model prices written")
