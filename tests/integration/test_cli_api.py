"""`aitasks tasks ...` through the real handlers (in-process transport, PostgreSQL, a fake work queue that the tests
drain into the executor): output, --json shapes and exit codes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from uuid import UUID

import pytest
from typer.testing import CliRunner

from aitasks.adapters.postgres import PostgresApiKeyRepository, PostgresTaskRepository
from aitasks.domain.apikey import hash_api_key
from aitasks.domain.task import TaskStatus, TenantId
from aitasks_cli import tasks as cli_api
from aitasks_cli.main import app
from tests.support.handler_transport import BASE, HandlerTransport, drain

KEY = "ait_cli-test-key"
ACME = TenantId("acme")


@pytest.fixture
def transport(api, db, monkeypatch: pytest.MonkeyPatch, tmp_path) -> HandlerTransport:
    PostgresApiKeyRepository(db).add(tenant_id=ACME, name="cli", key_hash=hash_api_key(KEY), now=datetime.now(UTC))
    handler_transport = HandlerTransport()
    monkeypatch.setattr(cli_api, "transport", handler_transport)
    monkeypatch.setattr(cli_api, "LOCAL_DIR", tmp_path)  # no .local fallback unless a test writes one
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))  # no profile unless a test writes one
    monkeypatch.setenv("AITASKS_API_URL", BASE)
    monkeypatch.setenv("AITASKS_API_KEY", KEY)
    return handler_transport


def run(*args: str, input: str | None = None):
    return CliRunner().invoke(app, ["tasks", *args], input=input, catch_exceptions=False)


def created_id(*args: str) -> str:
    result = run("create", "--json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["id"]


def test_create_prints_the_queued_task_and_json_is_the_apis_body(transport, api, db) -> None:
    text = run("create", "--prompt", "Say hi", "--priority", "2")
    assert text.exit_code == 0, text.output
    assert text.stdout.startswith("queued ") and text.stdout.rstrip().endswith(" chat")

    body = json.loads(run("create", "--json", "-p", "Say hi", "--idempotency-key", "k1").stdout)
    assert set(body) >= {"id", "type", "status", "priority", "payload", "attemptCount", "maxAttempts", "cost"}
    assert (body["status"], body["priority"], body["payload"]) == ("queued", 5, {"prompt": "Say hi"})
    again = json.loads(run("create", "--json", "-p", "Say hi", "--idempotency-key", "k1").stdout)
    stored = db().execute("SELECT count(*) AS n FROM tasks").fetchone()["n"]
    assert again["id"] == body["id"] and stored == 2 and len(api.sent) == 2
    posted = [r for r in transport.requests if r.method == "POST"]
    assert posted[-1].headers["Idempotency-Key"] == "k1"


def test_create_sends_context_from_stdin_params_schema_and_a_relative_time(transport, db, tmp_path) -> None:
    schema = tmp_path / "schema.json"
    schema.write_text('{"type": "object", "properties": {"name": {"type": "string"}}}')
    task_id = created_id("-t", "extract", "-p", "The name", "--context", "-", "--schema", str(schema),
                         "--param", "temperature=0.2", "--at", "+2h", "--max-attempts", "5")  # fmt: skip
    task = PostgresTaskRepository(db).get(ACME, UUID(task_id))
    assert task.payload["params"] == {"temperature": 0.2, "schema": json.loads(schema.read_text())}
    assert task.max_attempts == 5 and task.scheduled_at is not None
    assert 7100 < (task.scheduled_at - datetime.now(UTC)).total_seconds() <= 7200


def test_create_reads_the_context_from_stdin(transport) -> None:
    result = run("create", "--json", "-t", "summarize", "-p", "One line", "--context", "-", input="Long text.")
    assert json.loads(result.stdout)["payload"]["context"] == "Long text."


def test_wait_follows_the_task_and_prints_its_output(transport, api) -> None:
    transport.on_request = lambda request: drain(api) if request.method == "GET" else None
    result = run("create", "--wait", "-p", "Say hello")
    assert result.exit_code == 0, result.output
    assert "Say hello" in result.stdout  # the fake provider echoes the prompt
    assert "succeeded" in result.stderr

    as_json = json.loads(run("create", "--wait", "--json", "-p", "Again").stdout)
    assert as_json["task"]["status"] == "succeeded" and as_json["artifacts"][0]["kind"] == "text"


def test_wait_exits_4_when_the_task_dead_letters(transport, api) -> None:
    transport.on_request = lambda request: drain(api) if request.method == "GET" else None
    result = run("create", "--wait", "-p", "Fail", "--max-attempts", "1", "--param",
                 'fake={"failAttempts": 1, "error": "bad_request"}')  # fmt: skip
    assert result.exit_code == cli_api.EXIT_TASK_FAILED, result.output
    assert "dead_letter" in result.stderr and "last error" in result.stderr


def test_get_list_attempts_artifacts_and_cancel(transport, api) -> None:
    done, later = created_id("-p", "Now"), created_id("-p", "Later", "--at", "+1d")
    drain(api)

    shown = run("get", done)
    assert shown.exit_code == 0 and "succeeded" in shown.stdout and "1 of 3" in shown.stdout
    assert json.loads(run("get", done, "--json").stdout)["id"] == done

    listed = run("list", "--page-size", "1")
    assert done not in listed.stdout and later in listed.stdout  # newest first
    assert "page 1 of 2 · 2 task(s); next: --page 2" in listed.stderr
    page = json.loads(run("list", "--json", "--status", "succeeded").stdout)
    assert ([t["id"] for t in page["items"]], page["total"], page["page"]) == ([done], 1, 1)

    [attempt] = json.loads(run("attempts", done, "--json").stdout)
    assert (attempt["attemptNo"], attempt["status"]) == (1, "succeeded")
    assert "succeeded" in run("attempts", done).stdout
    [artifact] = json.loads(run("artifacts", done, "--json").stdout)
    assert "Now" in artifact["content"] and "Now" in run("artifacts", done).stdout

    cancelled = run("cancel", later)
    assert cancelled.exit_code == 0 and cancelled.stdout.startswith("cancelled ")
    assert json.loads(run("cancel", later, "--json").stdout)["status"] == TaskStatus.CANCELLED


def test_a_problem_is_rendered_as_text_with_exit_1(transport, api) -> None:
    done = created_id("-p", "Now")
    drain(api)

    conflict = run("cancel", done)
    assert conflict.exit_code == 1
    assert conflict.stderr.strip() == "409 Conflict: the task is succeeded; it cannot become cancelled"
    missing = run("get", "00000000-0000-0000-0000-000000000000")
    assert (missing.exit_code, missing.stderr.strip()) == (
        1,
        "404 Not Found: no task 00000000-0000-0000-0000-000000000000",
    )
    invalid = run("create", "-t", "summarize", "-p", "Sum")
    assert invalid.exit_code == 1 and "422 Unprocessable Entity" in invalid.stderr
    assert "payload.context" in invalid.stderr and "Traceback" not in invalid.output
    denied = run("list", "--api-key", "ait_wrong")
    assert (denied.exit_code, denied.stderr.strip()) == (1, "401 Unauthorized")


def test_usage_errors_exit_2(transport, monkeypatch: pytest.MonkeyPatch) -> None:
    assert run("create").exit_code == 2  # no --prompt
    assert run("create", "-p", "x", "--at", "tomorrow").exit_code == 2
    assert run("create", "-p", "x", "--priority", "12").exit_code == 2
    assert run("create", "-p", "x", "--param", "novalue").exit_code == 2
    assert run("list", "--status", "sleeping").exit_code == 2
    monkeypatch.delenv("AITASKS_API_URL")
    nowhere = run("list")
    assert nowhere.exit_code == 2 and "no api url" in nowhere.stderr


def test_the_local_files_are_the_last_fallback(transport, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.delenv("AITASKS_API_URL")
    monkeypatch.delenv("AITASKS_API_KEY")
    (tmp_path / "api_url").write_text(BASE + "\n")
    (tmp_path / "api_key").write_text(KEY + "\n")
    assert run("list", "--json").exit_code == 0
    assert transport.requests[-1].headers["Authorization"] == f"Bearer {KEY}"


def test_watch_one_task_reports_each_change_until_it_ends(transport, api) -> None:
    task_id = created_id("-p", "Watch")
    transport.on_request = lambda request: drain(api) if len(transport.requests) > 3 else None
    result = run("watch", task_id, "--json", "--interval", "0.2")
    assert result.exit_code == 0, result.output
    changes = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(c["from"], c["to"]) for c in changes] == [(None, "queued"), ("queued", "succeeded")]
    assert {c["id"] for c in changes} == {task_id}


def test_watch_the_recent_tasks_until_the_timeout(transport) -> None:
    first, second = created_id("-p", "One"), created_id("-p", "Two")
    result = run("watch", "--timeout", "0", "--json")
    assert result.exit_code == 0, result.output
    assert {json.loads(line)["id"] for line in result.stdout.splitlines()} == {first, second}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("+90s", datetime(2026, 11, 24, 12, 1, 30, tzinfo=UTC)),
        ("+5m", datetime(2026, 11, 24, 12, 5, tzinfo=UTC)),
        ("+1d", datetime(2026, 11, 25, 12, 0, tzinfo=UTC)),
        ("2026-12-01T09:00:00+01:00", datetime(2026, 12, 1, 8, 0, tzinfo=UTC)),
    ],
)
def test_times_for_at(text: str, expected: datetime) -> None:
    assert cli_api.parse_at(text, now=datetime(2026, 11, 24, 12, 0, tzinfo=UTC)) == expected


def test_task_data_is_printed_as_it_is_not_as_markup(transport, api) -> None:
    prompt = "Fill in [name], keep [/docs] and :thumbs_up: as they are"
    task_id = created_id("-p", prompt)
    drain(api)
    shown = run("get", task_id)
    assert shown.exit_code == 0 and prompt in shown.stdout
    assert prompt in run("artifacts", task_id).stdout


def test_watch_json_goes_to_stdout_even_when_stderr_is_a_terminal(transport, api, monkeypatch) -> None:
    from rich.console import Console

    monkeypatch.setattr(cli_api, "err", Console(stderr=True, force_terminal=True, markup=False))
    task_id = created_id("-p", "Watch")
    drain(api)
    result = run("watch", task_id, "--json")
    assert [json.loads(line)["to"] for line in result.stdout.splitlines()] == ["succeeded"]


def test_bad_ids_and_urls_are_usage_errors(transport, monkeypatch: pytest.MonkeyPatch) -> None:
    assert run("get", "../openapi.json").exit_code == 2
    monkeypatch.setenv("AITASKS_API_URL", "localhost:4566/api/v1")
    bad = run("list")
    assert bad.exit_code == 2 and "http://" in bad.stderr


def test_usage_prints_the_month_and_json_is_the_apis_body(transport, api, db) -> None:
    from decimal import Decimal

    from aitasks.adapters.postgres import PostgresLimitsRepository

    PostgresLimitsRepository(db).set_monthly_budget(ACME, Decimal(10), now=datetime.now(UTC))
    created_id("-p", "Say hi", "--model", "fake-echo-1")
    drain(api)
    result = CliRunner().invoke(app, ["usage"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    first, second, header, row = result.stdout.splitlines()
    assert "(UTC) · budget $10 · spent $0.0000" in first and first.endswith(" left")
    assert second == "max concurrency 10 · running 0 · queued 0"
    assert header.split() == ["model", "spent", "held", "tokens", "in", "tokens", "out", "attempts"]
    assert row.split()[0] == "fake-echo-1" and row.split()[-1] == "1"
    body = json.loads(CliRunner().invoke(app, ["usage", "--json"], catch_exceptions=False).stdout)
    assert set(body) == {"period", "budgetUsd", "spentUsd", "reservedUsd", "maxConcurrency", "running", "queued",
                         "byModel"}  # fmt: skip


def test_retry_and_events(transport, api) -> None:
    failed = created_id(
        "-p", "Fail", "--max-attempts", "1", "--param", 'fake={"failAttempts": 1, "error": "bad_request"}'
    )
    drain(api)
    retried = run("retry", failed)
    assert retried.exit_code == 0 and retried.stdout.startswith("queued ") and failed in retried.stdout
    drain(api)
    shown = json.loads(run("events", failed, "--json").stdout)
    kinds = [e["eventType"] for e in shown]
    assert kinds[:2] == ["task.created", "task.queued"] and "task.dead_lettered" in kinds
    assert kinds[-1] == "task.succeeded" and [e["seq"] for e in shown] == sorted(e["seq"] for e in shown)
    table = run("events", failed)
    assert table.exit_code == 0 and "task.dead_lettered" in table.stdout and "seq" in table.stdout
    again = run("retry", failed)
    assert again.exit_code == 1 and "409" in again.stderr


def test_profiles_give_the_url_and_key(transport, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.delenv("AITASKS_API_URL")
    monkeypatch.delenv("AITASKS_API_KEY")
    saved = CliRunner().invoke(app, ["profiles", "set", "default", "--api-url", BASE, "--api-key", KEY])
    assert saved.exit_code == 0, saved.output
    config = tmp_path / "config" / "aitasks" / "config.toml"
    assert config.stat().st_mode & 0o777 == 0o600
    assert run("list").exit_code == 0  # the default profile

    CliRunner().invoke(app, ["profiles", "set", "staging", "--api-url", BASE])  # no key: the environment's
    assert run("list", "--profile", "staging").exit_code == 2  # no key anywhere: a usage error
    monkeypatch.setenv("AITASKS_API_KEY", KEY)
    assert run("list", "--profile", "staging").exit_code == 0
    # a profile named explicitly wins over the environment's URL; its key goes only to its URL
    monkeypatch.setenv("AITASKS_API_URL", "http://elsewhere.test/v1/api/v1")
    assert run("list", "--profile", "default").exit_code == 0
    assert all(r.url.host == "api.test" for r in transport.requests)
    monkeypatch.setenv("AITASKS_PROFILE", "nope")
    missing = run("list")
    assert missing.exit_code == 2 and "no profile 'nope'" in missing.stderr
    listed = CliRunner().invoke(app, ["profiles", "list"]).stdout
    assert "default" in listed and "staging" in listed and KEY not in listed


def test_version_and_shell_completion() -> None:
    from aitasks_client import __version__

    version = CliRunner().invoke(app, ["--version"])
    assert (version.exit_code, version.stdout.strip()) == (0, f"aitasks {__version__}")
    # the installed command completes its own words (what --install-completion wires into the shell)
    import os
    import subprocess
    import sys
    from pathlib import Path

    command = str(Path(sys.executable).with_name("aitasks"))
    env = {**os.environ, "_AITASKS_COMPLETE": "complete_bash", "COMP_WORDS": "aitasks tasks re", "COMP_CWORD": "2"}
    words = subprocess.run([command], env=env, capture_output=True, text=True, check=True).stdout.split()
    assert words == ["redrive", "retry"]
    script = subprocess.run([command, "--show-completion", "bash"], env={**os.environ, "SHELL": "/bin/bash"},
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "_AITASKS_COMPLETE=complete_bash" in script


def test_an_answer_that_is_not_the_apis_exits_1_and_says_so(transport, monkeypatch: pytest.MonkeyPatch) -> None:
    import httpx2

    page = httpx2.Response(200, headers={"Content-Type": "text/html"}, text="<html>a login page</html>")
    monkeypatch.setattr(cli_api, "transport", httpx2.MockTransport(lambda request: page))
    result = run("get", "00000000-0000-0000-0000-000000000000")
    assert result.exit_code == 1 and result.stderr.startswith("not an aitasks answer")
