"""The operator commands against a real database: redrive and prune, with one-line errors; changes of limits that
wake the work they free at once, through moto's SQS (the queue given, a stack's output, the local stack's)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
import pytest
from moto import mock_aws
from moto.server import ThreadedMotoServer
from typer.testing import CliRunner

from aitasks.adapters.postgres import PostgresModelRepository, PostgresTaskRepository
from aitasks.application.dispatch import Dispatcher
from aitasks.application.limits import WakeReleasedWork
from aitasks.application.tasks import NewTask
from aitasks.domain.task import TaskStatus, TenantId
from aitasks_cli import main
from tests.integration.conftest import create_task
from tests.support.fakes import InMemoryWorkQueue

if TYPE_CHECKING:
    from collections.abc import Iterator

    from aitasks.application.ports import WakeUp


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
        "weight 2 (standard tier)",
    ]
    set_ = cli("tenants", "set-limits", "acme", "--max-concurrency", "3", "--monthly-budget-usd", "25.50", *url)
    assert set_.stdout.splitlines() == [
        "tenant acme: max concurrency 3 (override); running 0, queued 0",
        "monthly budget $25.500000 (override); this month: $0 spent, $0 held",
        "weight 2 (standard tier)",
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


# --- changes that take effect at once: the wake-ups for the work they free ---

WORK_QUEUE_TEMPLATE = json.dumps({
    "Resources": {"WorkQueue": {"Type": "AWS::SQS::Queue"}},
    "Outputs": {"WorkQueueUrl": {"Value": {"Ref": "WorkQueue"}}},
})  # fmt: skip


@pytest.fixture
def operator(db, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The CLI in this process, with no queue known unless a test says one: its .local/ is the test's own."""
    for name in ("AITASKS_WORK_QUEUE_URL", "WORK_QUEUE_URL", "AITASKS_STACK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(main, "LOCAL_DIR", tmp_path)
    return tmp_path


@pytest.fixture
def sqs(operator, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """moto's SQS (and CloudFormation): the work queue's URL."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        yield boto3.client("sqs", region_name="us-east-1").create_queue(QueueName="work")["QueueUrl"]


def run(*args: str):
    return CliRunner().invoke(main.app, list(args), catch_exceptions=False)


def received(url: str, client=None) -> list[dict]:
    client = client or boto3.client("sqs", region_name="us-east-1")
    messages: list[dict] = []
    while batch := client.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, MessageSystemAttributeNames=["All"]
    ).get("Messages", []):
        messages += batch
    return messages


def woken(messages: list[dict]) -> set[tuple[str, str]]:
    """(tenant, task id) of each wake-up, checked to go in the tenant's message group."""
    bodies = [(json.loads(m["Body"]), m["Attributes"]["MessageGroupId"]) for m in messages]
    assert all(body["tenantId"] == group for body, group in bodies)
    return {(body["tenantId"], body["taskId"]) for body, _ in bodies}


def queued(db, tenant: str, n: int, model: str = "gpt-4o-mini") -> list[str]:
    create = create_task(db, Dispatcher(InMemoryWorkQueue()))
    return [
        str(create(TenantId(tenant), NewTask(type="chat", payload={"prompt": "p", "model": model})).id)
        for _ in range(n)
    ]


def claim(db) -> list[str]:
    """What an executor that got a wake-up now would start."""
    now = datetime.now(UTC)
    tasks = PostgresTaskRepository(db).claim_due(
        limit=10, locked_by="test", lease_until=now + timedelta(minutes=1), now=now
    )
    return sorted(str(t.id) for t in tasks if t.status is TaskStatus.RUNNING)


def test_a_paused_tenant_set_to_two_gets_two_wake_ups_at_once_and_its_work_starts(db, database_url, sqs) -> None:
    # given: a tenant paused by its operator, with three tasks due
    paused = run(
        "tenants",
        "set-limits",
        "acme",
        "--max-concurrency",
        "0",
        "--database-url",
        database_url,
        "--work-queue-url",
        sqs,
    )
    assert paused.exit_code == 0, paused.output
    assert "nothing to wake" in paused.stderr  # a cap of 0 has no room: nothing sent
    ids = queued(db, "acme", 3)
    assert claim(db) == []
    # when: the operator gives it two slots
    done = run(
        "tenants",
        "set-limits",
        "acme",
        "--max-concurrency",
        "2",
        "--database-url",
        database_url,
        "--work-queue-url",
        sqs,
    )
    # then: two wake-ups went out at once, for two of its due tasks, and an executor now starts two
    assert done.exit_code == 0, done.output
    assert done.stdout.splitlines()[0] == "tenant acme: max concurrency 2 (override); running 0, queued 3"
    wakes = woken(received(sqs))
    assert len(wakes) == 2 and {tenant for tenant, _ in wakes} == {"acme"} and {t for _, t in wakes} <= set(ids)
    assert "woke 2 task(s) through the work queue given: " in done.stderr
    assert len(claim(db)) == 2


def test_a_raised_budget_and_a_new_weight_wake_the_tenants_held_work(db, database_url, sqs) -> None:
    url = ["--database-url", database_url, "--work-queue-url", sqs]
    ids = queued(db, "acme", 3)
    stopped = run("tenants", "set-limits", "acme", "--monthly-budget-usd", "0", *url)
    assert stopped.exit_code == 0, stopped.output
    received(sqs)  # a wake-up only says there is work: the claim finds the budget
    assert claim(db) == []
    raised = run("tenants", "set-limits", "acme", "--monthly-budget-usd", "1", *url)
    assert raised.exit_code == 0, raised.output
    assert {t for _, t in woken(received(sqs))} == set(ids)
    assert claim(db) == sorted(ids)
    # a weight is shown with where it comes from, and wakes too (nothing is due now)
    weighed = run("tenants", "set-limits", "acme", "--weight", "3.5", *url)
    assert weighed.exit_code == 0, weighed.output
    assert "weight 3.5 (override)" in weighed.stdout.splitlines()
    assert "nothing to wake" in weighed.stderr
    back = run("tenants", "set-limits", "acme", "--weight", "default", *url)
    assert "weight 2 (standard tier)" in back.stdout.splitlines()
    for wrong in ("0", "-1", "heavy", "0.0001", "1e6", "NaN"):
        assert run("tenants", "set-limits", "acme", "--weight", wrong, *url).exit_code == 2, wrong
    assert db().execute("SELECT weight FROM tenant_limits").fetchone()["weight"] is None


def test_a_lifted_pause_wakes_one_task_of_each_tenant_waiting_on_the_model(db, database_url, sqs) -> None:
    # given: two tenants' work on a model a provider's 429 paused for an hour
    a, b = queued(db, "acme", 2), queued(db, "beta", 1)
    queued(db, "gamma", 1, model="fake-echo-1")  # another model's work: not this change's
    pause = "INSERT INTO model_limits (model, paused_until, updated_at) VALUES (%s, now() + interval '1 hour', now())"
    db().execute(pause, ("gpt-4o-mini",))
    claim(db)  # the other model's task starts; the paused one's wait
    assert db().execute("SELECT count(*) AS n FROM tasks WHERE status = 'running'").fetchone()["n"] == 1
    # when: the operator lifts the pause
    done = run("models", "resume", "GPT-4o-mini", "--database-url", database_url, "--work-queue-url", sqs)
    # then: one wake-up for each tenant waiting on it, and their work starts
    assert done.exit_code == 0, done.output
    assert done.stdout.startswith("gpt-4o-mini: resumed (it was paused until ")
    wakes = woken(received(sqs))
    assert {tenant for tenant, _ in wakes} == {"acme", "beta"} and len(wakes) == 2
    assert claim(db) == sorted(a + b)
    again = run("models", "resume", "gpt-4o-mini", "--database-url", database_url, "--work-queue-url", sqs)
    assert (again.exit_code, again.stdout.strip()) == (0, "gpt-4o-mini: not paused")
    assert "nothing to wake" in again.stderr


def test_a_models_raised_limit_wakes_the_work_it_held_back(db, database_url, sqs) -> None:
    url = ["--database-url", database_url, "--work-queue-url", sqs]
    assert run("models", "set-limits", "gpt-4o-mini", "--rpm", "1", *url).exit_code == 0
    ids = queued(db, "acme", 2) + queued(db, "beta", 2)
    assert len(claim(db)) == 1  # the window's one call
    assert claim(db) == []
    done = run("models", "set-limits", "gpt-4o-mini", *url)  # no limits
    assert done.exit_code == 0, done.output
    assert done.stdout.strip() == "gpt-4o-mini: no rpm, no tpm"
    assert {tenant for tenant, _ in woken(received(sqs))} == {"acme", "beta"}
    assert len(claim(db)) == 3
    assert db().execute("SELECT count(*) AS n FROM tasks WHERE status = 'running'").fetchone()["n"] == len(ids)


def test_the_queue_is_found_in_a_stacks_outputs(db, database_url, sqs) -> None:
    cloudformation = boto3.client("cloudformation", region_name="us-east-1")
    cloudformation.create_stack(StackName="prod", TemplateBody=WORK_QUEUE_TEMPLATE)
    [queue] = [o["OutputValue"] for o in cloudformation.describe_stacks(StackName="prod")["Stacks"][0]["Outputs"]]
    ids = queued(db, "acme", 1)
    done = run(
        "tenants", "set-limits", "acme", "--max-concurrency", "4", "--database-url", database_url, "--stack", "prod"
    )
    assert done.exit_code == 0, done.output
    assert f"woke 1 task(s) through the work queue of stack prod: {ids[0]}" in done.stderr
    assert woken(received(queue)) == {("acme", ids[0])}
    # a stack that is not there: the change is saved, the command says the wake-ups did not go
    missing = run(
        "tenants", "set-limits", "acme", "--max-concurrency", "5", "--database-url", database_url, "--stack", "nope"
    )
    assert missing.exit_code == main.EXIT_NOT_WOKEN
    assert missing.stderr.startswith("error: the change is saved, but its wake-ups could not be sent (no work queue: ")
    assert db().execute("SELECT max_concurrency FROM tenant_limits").fetchone()["max_concurrency"] == 5


@pytest.fixture
def ministack(operator: Path, database_url: str) -> Iterator[tuple[str, str]]:
    """A stand-in for the local stack's MiniStack (a moto server) with the stack `make run` deploys, as .local/ says;
    its endpoint and its work queue's URL."""
    server = ThreadedMotoServer(port=0, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{server.get_host_and_port()[1]}"
    session = boto3.session.Session(aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1")
    cloudformation = session.client("cloudformation", endpoint_url=endpoint)
    cloudformation.create_stack(StackName="aitasks-local", TemplateBody=WORK_QUEUE_TEMPLATE)
    [queue] = [
        o["OutputValue"] for o in cloudformation.describe_stacks(StackName="aitasks-local")["Stacks"][0]["Outputs"]
    ]
    (operator / "database_url").write_text(database_url + "\n")
    (operator / "api_url").write_text(f"{endpoint}/_aws/execute-api/abc123/v1/api/v1\n")
    yield endpoint, queue
    server.stop()


def test_the_local_stacks_queue_is_used_for_the_local_stacks_database(db, database_url, ministack) -> None:
    endpoint, queue = ministack
    ids = queued(db, "acme", 2)
    done = run("tenants", "set-limits", "acme", "--max-concurrency", "1", "--database-url", database_url)
    assert done.exit_code == 0, done.output
    assert "woke 1 task(s) through the local stack's work queue: " in done.stderr
    local = boto3.session.Session(aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1")
    [(tenant, task)] = woken(received(queue, local.client("sqs", endpoint_url=endpoint)))
    assert tenant == "acme" and task in ids


def test_another_database_is_not_woken_through_the_local_stacks_queue(operator, db, database_url) -> None:
    (operator / "database_url").write_text("postgresql://postgres@127.0.0.1:5432/another\n")
    (operator / "api_url").write_text("http://127.0.0.1:1/_aws/execute-api/abc123/v1/api/v1\n")
    queued(db, "acme", 1)
    done = run("tenants", "set-limits", "acme", "--max-concurrency", "3", "--database-url", database_url)
    # no queue known: the change is saved, and the command says who will wake the work
    assert done.exit_code == 0, done.output
    assert done.stderr.startswith("note: no work queue known")
    assert "the sweeper will send the wake-ups within three minutes" in done.stderr
    assert db().execute("SELECT max_concurrency FROM tenant_limits").fetchone()["max_concurrency"] == 3


def test_a_local_stack_that_is_down_saves_the_change_and_says_the_wake_ups_failed(operator, db, database_url) -> None:
    (operator / "database_url").write_text(database_url + "\n")
    (operator / "api_url").write_text("http://127.0.0.1:1/_aws/execute-api/abc123/v1/api/v1\n")  # nothing listens
    queued(db, "acme", 1)
    done = run("models", "resume", "gpt-4o-mini", "--database-url", database_url)
    assert done.exit_code == main.EXIT_NOT_WOKEN
    assert done.stderr.startswith("error: the change is saved, but its wake-ups could not be sent (no work queue: ")
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_queue_that_refuses_the_wake_ups_leaves_the_change_saved(db, database_url, sqs) -> None:
    queued(db, "acme", 2)
    gone = sqs.rsplit("/", 1)[0] + "/deleted"
    done = run(
        "tenants",
        "set-limits",
        "acme",
        "--max-concurrency",
        "1",
        "--database-url",
        database_url,
        "--work-queue-url",
        gone,
    )
    assert done.exit_code == main.EXIT_NOT_WOKEN
    assert done.stdout.splitlines()[0] == "tenant acme: max concurrency 1 (override); running 0, queued 2"
    assert done.stderr.startswith(
        "error: the change is saved, but 1 wake-up(s) through the work queue given could not be sent ("
    )
    assert "the sweeper will send the wake-ups within three minutes" in done.stderr
    assert db().execute("SELECT max_concurrency FROM tenant_limits").fetchone()["max_concurrency"] == 1


class _FailsAfter(InMemoryWorkQueue):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def send(self, wake: WakeUp, *, delay_s: int = 0) -> None:
        if len(self.sent) >= self.n:
            raise ConnectionError("the queue went away")
        super().send(wake, delay_s=delay_s)


def test_wake_ups_that_stop_going_out_midway_say_which_went(db) -> None:
    ids = queued(db, "acme", 3)
    queue = _FailsAfter(1)
    report = WakeReleasedWork(PostgresTaskRepository(db), PostgresModelRepository(db), queue).tenant(TenantId("acme"))
    assert [str(t.id) for t in report.sent] == [str(m.task_id) for m in queue.sent] and len(report.sent) == 1
    assert len(report.unsent) == 2 and {str(t.id) for t in report.sent + report.unsent} == set(ids)
    assert report.error == "ConnectionError: the queue went away"


def test_redrive_sends_its_wake_ups_through_the_queue_given(db, database_url, sqs) -> None:
    task = dead_letter(db)
    done = run("tasks", "redrive", "--status", "dead_letter", "--database-url", database_url, "--work-queue-url", sqs)
    assert done.exit_code == 0, done.output
    assert woken(received(sqs)) == {("t", task)}
