"""Limits and budgets on PostgreSQL (their rules live in the claim, migration 0009): per-model rate limits shared by
every executor, a provider's 429 pausing its model for everyone, hard monthly budgets held at claim and settled at
finish, the price of a task fixed when it is created, the allow-list, output caps and a task's own cost ceiling."""

from __future__ import annotations

import itertools
import json
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from aitasks import bootstrap
from aitasks.adapters.fake_provider import FakeAiProvider
from aitasks.adapters.openai_provider import OpenAiProvider
from aitasks.adapters.postgres import (
    ConnectionProvider,
    PostgresLimitsRepository,
    PostgresModelRepository,
    PostgresTaskRepository,
)
from aitasks.application.dispatch import Dispatcher
from aitasks.application.executor import Execute
from aitasks.application.limits import ModelCatalog
from aitasks.application.ports import Delivery, FinishedRun, RunOutcome, WakeUp
from aitasks.application.tasks import NewTask
from aitasks.domain.errors import BudgetExceededError, InvalidTaskError
from aitasks.domain.retry import RetryPolicy
from aitasks.domain.task import TaskStatus, TenantId
from tests.conftest import LambdaContext, load_handler, rest_event
from tests.integration.conftest import create_task, prices_of
from tests.support.fakes import InMemoryWorkQueue
from tests.support.openai_stub import OpenAiStub, ok, rate_limited

T = TenantId("tenant-a")


class Clock:
    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime.now(UTC)
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += timedelta(seconds=seconds)


def engine(db: Any, provider: Any = None, *, clock: Any = None, queue_: InMemoryWorkQueue | None = None) -> Execute:
    queue_ = queue_ or InMemoryWorkQueue()
    repo = PostgresTaskRepository(db)
    return Execute(
        repo,
        queue_,
        Dispatcher(queue_),
        provider or FakeAiProvider(),
        lambda: prices_of(db),
        RetryPolicy(),
        lease_s=60,
        heartbeat_s=15,
        ai_timeout_s=20,
        margin_s=2,
        clock=clock or (lambda: datetime.now(UTC)),
    )


def execute(run: Execute, n: int = 10, *, invocation: str = "inv") -> Any:
    wakes = [Delivery(f"m{i}", f"r{i}", WakeUp(tenant_id=T)) for i in range(n)]
    return run(wakes, invocation_id=invocation, remaining_s=lambda: 300)


def executors_at_once(database_url: str, count: int, make: Any) -> list[Any]:
    """`count` executor environments (each its own connection) running one invocation each, at the same moment."""
    start, reports = threading.Barrier(count), []
    lock = threading.Lock()

    def one(n: int) -> None:
        provider = ConnectionProvider(lambda: database_url)
        run = make(provider)
        start.wait()
        report = execute(run, invocation=f"exec-{n}-{time.monotonic_ns()}")
        with lock:
            reports.append(report)
        provider.close()

    threads = [threading.Thread(target=one, args=(n,)) for n in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return reports


def new(prompt: str, *, model: str | None = "fake-echo-1", **params: Any) -> NewTask:
    payload: dict[str, Any] = {"prompt": prompt, **({"model": model} if model else {})}
    if params:
        payload["params"] = params
    return NewTask(type="chat", payload=payload)


def spend(db: ConnectionProvider) -> dict[str, Decimal]:
    row = (
        db()
        .execute(
            "SELECT COALESCE(sum(spent_usd), 0) AS spent, COALESCE(sum(reserved_usd), 0) AS reserved FROM tenant_spend"
        )
        .fetchone()
    )
    return {"spent": row["spent"], "reserved": row["reserved"]}


def statuses(db: ConnectionProvider) -> dict[str, int]:
    rows = db().execute("SELECT status, count(*) AS n FROM tasks GROUP BY status").fetchall()
    return {r["status"]: r["n"] for r in rows}


# --- budgets ----------------------------------------------------------------------------------------------------


def test_a_budget_holds_exactly_with_8_executors_claiming_at_once_and_raising_it_releases_the_rest(
    db, database_url: str
) -> None:
    # given: a $0.01 budget and 50 tasks that can cost about $0.0021 each (1300 output tokens at $1.50 per million)
    PostgresLimitsRepository(db).set_monthly_budget(T, Decimal("0.01"), now=datetime.now(UTC))
    make = create_task(db, Dispatcher(InMemoryWorkQueue()))
    tasks = [make(T, new(f"p{i}", maxTokens=1300, fake={"outputTokens": 1300, "latencyMs": 50})) for i in range(50)]
    assert all(Decimal("0.0021") < t.worst_cost < Decimal("0.00211") for t in tasks)
    # when: 8 executors claim at once, while a watcher reads the month's spent + held
    peaks: list[Decimal] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            now = spend(db)
            peaks.append(now["spent"] + now["reserved"])

    watcher = threading.Thread(target=watch)
    watcher.start()
    executors_at_once(database_url, 8, engine)
    stop.set()
    watcher.join()
    # then: never more than the budget spent or held, to the last decimal; the rest wait for the budget
    assert max(peaks) <= Decimal("0.01")
    after = spend(db)
    assert after["reserved"] == 0
    assert after["spent"] <= Decimal("0.01")
    costs = db().execute("SELECT sum(cost) AS usd, count(*) AS n FROM task_attempts").fetchone()
    assert costs["usd"] == after["spent"]  # spent is exactly what the attempts cost
    ran = costs["n"]
    assert 4 <= ran <= 5 and statuses(db) == {"succeeded": ran, "queued": 50 - ran}
    waiting = {t.waiting_for for t in PostgresTaskRepository(db).list_tasks(T, _all(), offset=0, limit=100)[0]}
    assert waiting == {None, "budget"}  # succeeded ones wait for nothing
    # when the budget is raised, the work it held back runs
    PostgresLimitsRepository(db).set_monthly_budget(T, Decimal(1), now=datetime.now(UTC))
    for _ in range(3):
        executors_at_once(database_url, 8, engine)
    assert statuses(db) == {"succeeded": 50}
    assert spend(db)["spent"] <= Decimal(1)


def test_create_answers_402_once_the_month_has_spent_or_holds_its_budget_and_stores_nothing(api, db) -> None:
    handler = load_handler("create_task").lambda_handler
    body = {"type": "chat", "payload": {"prompt": "p", "model": "fake-echo-1"}}
    PostgresLimitsRepository(db).set_monthly_budget(T, Decimal("0.002"), now=datetime.now(UTC))
    first = handler(rest_event("POST", "/api/v1/tasks", body=body), LambdaContext())
    assert first["statusCode"] == 202
    # its claim holds its worst cost ($0.0015...): the month now holds most of the budget, not all of it
    run = engine(db)
    execute(run)
    db().execute("UPDATE tenant_spend SET spent_usd = 0.002")  # the month has now spent all of it
    refused = handler(rest_event("POST", "/api/v1/tasks", body=body), LambdaContext())
    problem = json.loads(refused["body"])
    assert (refused["statusCode"], problem["type"]) == (402, "https://aitasks.dev/problems/budget-exceeded")
    assert (problem["budgetUsd"], problem["spentUsd"], problem["reservedUsd"]) == (
        "0.002000",
        "0.00200000",
        "0.00000000",
    )
    period_end = datetime.fromisoformat(problem["periodEnd"])
    assert period_end.day == 1 and period_end > datetime.now(UTC)
    assert db().execute("SELECT count(*) AS n FROM tasks").fetchone()["n"] == 1


def test_a_tenant_with_a_budget_cannot_use_a_model_without_a_price(db) -> None:
    PostgresLimitsRepository(db).set_monthly_budget(T, Decimal(5), now=datetime.now(UTC))
    make = create_task(db, Dispatcher(InMemoryWorkQueue()))
    try:
        make(T, new("p", model="some-unpriced-model"))
    except InvalidTaskError as exc:
        assert [field for field, _ in exc.errors] == ["payload.model"]
    else:
        raise AssertionError("an unpriced model was accepted for a tenant with a budget")
    assert make(TenantId("no-budget"), new("p", model="some-unpriced-model")).worst_cost is None


def test_a_budget_used_up_is_refused_by_the_use_case_with_its_numbers(db) -> None:
    PostgresLimitsRepository(db).set_monthly_budget(T, Decimal(0), now=datetime.now(UTC))
    make = create_task(db, Dispatcher(InMemoryWorkQueue()))
    try:
        make(T, new("p"))
    except BudgetExceededError as exc:
        assert (exc.budget, exc.spent, exc.reserved) == (Decimal(0), Decimal(0), Decimal(0))
    else:
        raise AssertionError("a task was accepted past its budget")


def test_a_run_that_died_is_charged_what_it_held(db) -> None:
    PostgresLimitsRepository(db).set_monthly_budget(T, Decimal(1), now=datetime.now(UTC))
    task = create_task(db, Dispatcher(InMemoryWorkQueue()))(T, new("p", maxTokens=1000))
    repo, now = PostgresTaskRepository(db), datetime.now(UTC) + timedelta(seconds=1)
    [claimed] = repo.claim_due(limit=1, locked_by="dead", lease_until=now + timedelta(seconds=1), now=now)
    assert spend(db) == {"spent": 0, "reserved": task.worst_cost}
    repo.abandon_expired([claimed.id], now=now + timedelta(seconds=5))
    assert spend(db) == {"spent": task.worst_cost, "reserved": 0}  # the worst it could have cost


def test_usage_reports_the_month_per_model(api, db) -> None:
    PostgresLimitsRepository(db).set_monthly_budget(T, Decimal("2.5"), now=datetime.now(UTC))
    make = create_task(db, Dispatcher(InMemoryWorkQueue()))
    make(T, new("one", maxTokens=100))
    make(T, new("two", maxTokens=100))
    later = NewTask(type="chat", payload={"prompt": "later"}, scheduled_at=datetime.now(UTC) + timedelta(hours=1))
    make(T, later)
    execute(engine(db), 2)
    reply = load_handler("query_tasks").lambda_handler(rest_event("GET", "/api/v1/usage"), LambdaContext())
    usage = json.loads(reply["body"])
    assert reply["statusCode"] == 200
    assert usage["budgetUsd"] == "2.500000" and usage["reservedUsd"] == "0.00000000"
    spent = db().execute("SELECT sum(cost) AS usd FROM task_attempts").fetchone()["usd"]
    assert Decimal(usage["spentUsd"]) == spent > 0
    assert (usage["maxConcurrency"], usage["running"], usage["queued"]) == (10, 0, 1)
    [fake] = usage["byModel"]
    assert (fake["model"], fake["attempts"], Decimal(fake["spentUsd"])) == ("fake-echo-1", 2, spent)
    start, end = (datetime.fromisoformat(usage["period"][k]) for k in ("start", "end"))
    assert start.day == end.day == 1 and start <= datetime.now(UTC) < end
    other = rest_event("GET", "/api/v1/usage", tenant="tenant-b")
    theirs = json.loads(load_handler("query_tasks").lambda_handler(other, LambdaContext())["body"])
    assert (theirs["budgetUsd"], theirs["spentUsd"], theirs["byModel"]) == (None, "0", [])  # nothing of A's


# --- rate limits and pauses ------------------------------------------------------------------------------------


def test_rpm_6_lets_at_most_6_calls_start_in_any_60_s_spread_10_s_apart_across_8_executors(
    db, database_url: str
) -> None:
    # given: a model limited to 6 calls a minute and 10 due tasks of it
    clock = Clock(datetime.now(UTC) + timedelta(seconds=1))
    PostgresModelRepository(db).set_limits("fake-echo-1", rpm=6, tpm=None, now=clock())
    make = create_task(db, Dispatcher(InMemoryWorkQueue()))
    ids = [make(T, new(f"p{i}")).id for i in range(10)]
    queues = []

    def executor(provider: ConnectionProvider) -> Execute:
        queues.append(InMemoryWorkQueue())
        return engine(provider, clock=clock, queue_=queues[-1])

    # when: 8 executors claim at once: the spacing lets one call start now (6 a minute: one every 10 s)
    first = executors_at_once(database_url, 8, executor)
    assert sum(r.claimed for r in first) == 1
    waiting = {PostgresTaskRepository(db).get(T, i).waiting_for for i in ids}
    assert waiting == {None, "rate_limit"}
    # the claims that held work back sent one wake-up between them, for when the spacing lets the next start
    wakes = [m.wake.at for q in queues for m in q.sent]
    assert wakes == [clock() + timedelta(seconds=10)]
    # then one executor a second for two minutes and a half
    for _ in range(150):
        clock.advance(1)
        execute(engine(db, clock=clock))
    # then: every task ran once, no 61 s window saw more than 6 calls start, and no two started within 10 s
    assert statuses(db) == {"succeeded": 10}
    starts = sorted(r["at"] for r in db().execute("SELECT at FROM model_calls WHERE model = 'fake-echo-1'"))
    assert len(starts) == 10
    assert max(sum(1 for s in starts if t - timedelta(seconds=61) < s <= t) for t in starts) == 6
    assert min(b - a for a, b in itertools.pairwise(starts)) >= timedelta(seconds=10)
    once = db().execute("SELECT count(*) AS n FROM task_attempts WHERE attempt_no = 1").fetchone()["n"]
    assert once == 10


def test_tpm_counts_a_token_per_4_characters_sent_and_the_output_cap(db) -> None:
    clock = Clock(datetime.now(UTC) + timedelta(seconds=1))
    make = create_task(db, Dispatcher(InMemoryWorkQueue()))
    prompt = "x" * 4000
    one = make(T, new(prompt, maxTokens=500))
    # as OpenAI's limiter counts it: about chars/4 of what is sent (with the system prompt's allowance) + max_tokens
    assert one.rate_tokens == (4000 + 240) // 4 + 500
    assert one.input_tokens > 4000  # the budget's bound stays a bound: UTF-8 bytes and the framing
    for _ in range(2):
        make(T, new(prompt, maxTokens=500))
    PostgresModelRepository(db).set_limits("fake-echo-1", rpm=None, tpm=2 * one.rate_tokens + 1035, now=clock())
    repo = PostgresTaskRepository(db)

    def claim() -> list[Any]:
        tasks = repo.claim_due(limit=3, locked_by="inv", lease_until=clock() + timedelta(seconds=20), now=clock())
        return [t for t in tasks if t.status is TaskStatus.RUNNING]

    first = claim()
    assert len(first) == 2  # a third would take the minute past its tokens
    # a call that reports its usage settles the window with it: the room it did not use is free at once
    used = FinishedRun(
        first[0].id,
        first[0].attempt_count,
        RunOutcome(TaskStatus.SUCCEEDED, "succeeded", tokens_in=1010, tokens_out=20),
    )
    # a call that reports none keeps what it was counted
    unknown = FinishedRun(
        first[1].id, first[1].attempt_count, RunOutcome(TaskStatus.FAILED, "failed", error_code="timeout")
    )
    repo.finish_runs([used, unknown], locked_by="inv", now=clock())
    assert [t.id for t in claim()] != []  # the third fits in what the first did not use
    window = db().execute("SELECT sum(tokens) AS n FROM model_calls WHERE model = 'fake-echo-1'").fetchone()["n"]
    assert window == 1030 + 2 * one.rate_tokens


def test_a_429_with_retry_after_pauses_the_model_for_every_task(db, openai_stub: OpenAiStub) -> None:
    # given: three tasks of one model; the provider answers the first call 429, retry after 20 s
    clock = Clock(datetime.now(UTC) + timedelta(seconds=1))
    make = create_task(db, Dispatcher(InMemoryWorkQueue()))
    ids = [make(T, new(f"p{i}", model="gpt-4o-mini")).id for i in range(3)]
    openai_stub.enqueue(rate_limited(retry_after="20"))
    provider = OpenAiProvider(api_key="sk-test", base_url=openai_stub.base_url)
    # when: one slot, so the call that got the 429 is the only one in flight
    execute(engine(db, provider, clock=clock), 1)
    # then: its attempt is recorded as before, and nothing of that model calls it for 20 s
    failed = db().execute("SELECT status, error_code FROM task_attempts").fetchall()
    assert failed == [{"status": "failed", "error_code": "rate_limit"}]
    paused = db().execute("SELECT paused_until FROM model_limits WHERE model = 'gpt-4o-mini'").fetchone()
    assert paused["paused_until"] == clock() + timedelta(seconds=20)
    for wait in (1, 9, 9.5):
        clock.advance(wait)
        assert execute(engine(db, provider, clock=clock)).claimed == 0
        assert len(openai_stub.requests) == 1
    assert {PostgresTaskRepository(db).get(T, i).waiting_for for i in ids} <= {"rate_limit", "retry"}
    clock.advance(1)
    report = execute(engine(db, provider, clock=clock))
    assert report.claimed == 3 and len(openai_stub.requests) == 4
    assert statuses(db) == {"succeeded": 3}


# --- what a task is created with --------------------------------------------------------------------------------


def test_the_allow_list_refuses_models_the_deployment_does_not_run(db) -> None:
    prices = prices_of(db)
    priced = ModelCatalog.of(prices, default_model="gpt-4o-mini", allowed=None, provider="openai")
    assert priced.resolve(None) == "gpt-4o-mini"
    assert priced.resolve("gpt-4o") == "gpt-4o"
    assert priced.resolve("gpt-4o-mini-2024-07-18") == "gpt-4o-mini-2024-07-18"  # a dated snapshot of a priced one
    for refused in ("llama-3-70b", "fake-echo-1"):  # unpriced; another provider's
        try:
            priced.resolve(refused)
        except InvalidTaskError as exc:
            assert exc.errors[0][0] == "payload.model"
        else:
            raise AssertionError(f"{refused} was allowed")
    listed = ModelCatalog.of(prices, default_model="gpt-4o-mini", allowed="gpt-4o, My-Model", provider="openai")
    assert listed.resolve("my-model") == "my-model"
    assert listed.allowed == frozenset({"gpt-4o", "my-model"})
    assert ModelCatalog.of(prices, default_model="x", allowed=None, provider="fake").resolve("anything") == "anything"


def test_a_model_the_deployment_does_not_run_is_a_422_from_the_api(api, db, monkeypatch) -> None:
    catalog = ModelCatalog.of(prices_of(db), default_model="gpt-4o-mini", allowed=None, provider="openai")
    monkeypatch.setattr(bootstrap, "model_catalog", lambda: catalog)
    body = {"type": "chat", "payload": {"prompt": "p", "model": "llama-3-70b"}}
    reply = load_handler("create_task").lambda_handler(rest_event("POST", "/api/v1/tasks", body=body), LambdaContext())
    assert reply["statusCode"] == 422
    assert json.loads(reply["body"])["errors"][0]["field"] == "payload.model"
    assert db().execute("SELECT count(*) AS n FROM tasks").fetchone()["n"] == 0


def test_max_tokens_caps_the_call_and_each_type_has_a_default(db, openai_stub: OpenAiStub) -> None:
    make = create_task(db, Dispatcher(InMemoryWorkQueue()))
    asked = make(T, new("short", model="gpt-4o-mini", maxTokens=64))
    summary = make(
        T, NewTask(type="summarize", payload={"prompt": "sum up", "context": "a text", "model": "gpt-4o-mini"})
    )
    assert (asked.max_output_tokens, summary.max_output_tokens) == (64, 512)
    provider = OpenAiProvider(api_key="sk-test", base_url=openai_stub.base_url)
    execute(engine(db, provider), 2)
    # a compatible server gets max_tokens (OpenAI itself: max_completion_tokens)
    sent = {r.json["messages"][-1]["content"].split("\n")[0]: r.json["max_tokens"] for r in openai_stub.requests}
    assert sent == {"short": 64, "sum up": 512}


def test_the_fake_model_stops_at_max_tokens(db) -> None:
    make = create_task(db, Dispatcher(InMemoryWorkQueue()))
    task = make(T, new("p", maxTokens=5, fake={"outputTokens": 40}))
    [run] = execute(engine(db)).runs
    assert run.outcome.tokens_out == 5
    assert run.task.id == task.id


def test_max_cost_usd_stops_the_retries_once_reached(db, openai_stub: OpenAiStub) -> None:
    # given: an extract task whose answers keep breaking its schema; each costs $0.00000975 (gpt-4o-mini: 32 input,
    # 10 cached and 7 output tokens)
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    payload = {"prompt": "n?", "context": "x", "model": "gpt-4o-mini", "params": {"schema": schema}}
    make = create_task(db, Dispatcher(InMemoryWorkQueue()))
    task = make(T, NewTask(type="extract", payload=payload, max_attempts=5, max_cost_usd=Decimal("0.000019")))
    openai_stub.enqueue(*(ok('{"n": "not a number"}') for _ in range(5)))
    provider = OpenAiProvider(api_key="sk-test", base_url=openai_stub.base_url)
    clock = Clock(datetime.now(UTC) + timedelta(seconds=1))
    for _ in range(4):
        execute(engine(db, provider, clock=clock), 1)
        clock.advance(3600)
    # then: two attempts ($0.0000195 >= $0.000019), then no retry though attempts were left
    stored = PostgresTaskRepository(db).get(T, task.id)
    assert (stored.status, stored.attempt_count) == (TaskStatus.DEAD_LETTER, 2)
    assert "maxCostUsd" in (stored.last_error or "")
    assert len(openai_stub.requests) == 2


def test_the_sweeper_prunes_model_calls_no_window_looks_at(db) -> None:
    from aitasks.adapters.postgres import PostgresRetention
    from aitasks.application.maintenance import Prune

    db().execute(
        "INSERT INTO model_calls VALUES ('m', now() - interval '1 hour', 10), ('m', now() - interval '1 second', 10)"
    )
    assert Prune(PostgresRetention(db))().model_calls == 1
    assert db().execute("SELECT count(*) AS n FROM model_calls").fetchone()["n"] == 1


def _all() -> Any:
    from aitasks.application.ports import TaskFilter

    return TaskFilter()
