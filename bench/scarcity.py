"""Scenario 7, scarcity: flow control where a provider's limit, a tenant's budget or a paused popular model decides
(issue 19). Each figure is a ratio against the scarce thing itself, measured in the same run:

- tpm: the real executor handler with the OpenAI provider, in several environments (processes, as Lambda runs
  them) fed from an SQS queue on a moto server as the event source mapping feeds them (receive with the queue's
  visibility timeout, message delays honoured, delete on success, partial batch failures left to reappear), the
  sweeper every minute, against an OpenAI-compatible stub (tests/support/tpm_stub.py) that enforces a tokens-per-
  minute limit exactly as OpenAI estimates it and answers 429 past it. In steady state (after the first window): the
  tokens the stub admitted per minute / its tpm, and the share of calls answered 429.
- fairness, weights, late: tenants on a model with an rpm limit, in virtual time through the repository (claim_due
  and finish_runs with an explicit `now`, a claim every half slot of the model's window): Jain's index of the calls
  started per tenant while all are backlogged; two tenants weighted 2:1 (when the code has tenant weights); how long
  a tenant arriving late waits for its first start.
- budget: one tenant with a monthly budget and a backlog whose real cost is a quarter of its worst, in virtual time:
  what it spends before its work waits for the month, against the budget, and that it never exceeds it.
- claim: the time of one claim_due(limit=10) with thousands of tenants' due work on a paused popular model, tens of
  thousands of tasks held back by spent budgets and a little claimable work on another model.

Only public seams drive it: the handlers (bench.harness.load_function), the bootstrap and its create_task use case,
the repositories (tasks, limits, models), so that it measures old and new engine code alike. Each part runs in a
fresh interpreter on a database of its own (`python -m bench.scarcity part NAME CONFIG OUT`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import multiprocessing
import os
import random
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.harness import (
    PYTHON,
    REGION,
    ROOT,
    function_env,
    latency,
    load_function,
    migrate_database,
    moto_server,
    scenario_main,
    sqs_client,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from multiprocessing.sharedctypes import Synchronized
    from multiprocessing.synchronize import Event

    from aitasks.application.ports import RunOutcome
    from aitasks.domain.task import Task

PARTS = ("tpm", "fairness", "weights", "late", "budget", "claim")
# `make bench`: about 5 minutes, the tpm part's 3 of them in real time (60 s to fill its window, 120 s measured).
FULL: dict[str, dict[str, Any]] = {
    "tpm": {
        "tpm": 150_000,
        "seconds": 180,
        "warmup_s": 60,
        "environments": 4,
        "tenants": 4,
        "backlog": 500,
        "prompt_chars": 5000,
        "max_tokens": 100,
        "latency_ms": [1000, 2000],
    },
    "fairness": {
        "rpm": 20,
        "tenants": 10,
        "smallest": 5,
        "largest": 500,
        "latency_ms": 1000,
        "claim_limit": 1,
        "max_starts": 600,
        "max_claims": 3000,
    },
    "weights": {"rpm": 20, "latency_ms": 1000, "claim_limit": 1, "backlog": 200, "starts": 90, "max_claims": 1000},
    "late": {
        "rpm": 20,
        "latency_ms": 1000,
        "claim_limit": 1,
        "tenants": 9,
        "backlog": 100,
        "arrive_after_s": 120,
        "late_tasks": 3,
        "max_wait_s": 300,
    },
    "budget": {
        "budget_holds": 20,
        "backlog_budgets": 2,
        "prompt_chars": 4000,
        "max_tokens": 400,
        "latency_ms": 2000,
        "claim_limit": 10,
        "max_claims": 5000,
    },
    "claim": {
        "tenants": 2500,
        "due_per_tenant": 10,
        "budget_tenants": 5,
        "budget_tasks": 50_000,
        "claimable_tenants": 20,
        "claimable_per_tenant": 60,
        "warmup": 2,
        "claims": 100,
        "max_failures": 3,
    },
}
# `--quick`: that every part runs, in seconds; its figures mean nothing (the tpm part lasts 5 s of a 60 s window).
QUICK: dict[str, dict[str, Any]] = {
    "tpm": {
        "tpm": 20_000,
        "seconds": 5,
        "warmup_s": 2,
        "environments": 2,
        "tenants": 2,
        "backlog": 20,
        "prompt_chars": 2000,
        "max_tokens": 50,
        "latency_ms": [100, 200],
    },
    "fairness": {
        "rpm": 60,
        "tenants": 3,
        "smallest": 2,
        "largest": 8,
        "latency_ms": 200,
        "claim_limit": 1,
        "max_starts": 30,
        "max_claims": 200,
    },
    "weights": {"rpm": 60, "latency_ms": 200, "claim_limit": 1, "backlog": 20, "starts": 9, "max_claims": 100},
    "late": {
        "rpm": 60,
        "latency_ms": 200,
        "claim_limit": 1,
        "tenants": 2,
        "backlog": 20,
        "arrive_after_s": 10,
        "late_tasks": 1,
        "max_wait_s": 20,
    },
    "budget": {
        "budget_holds": 8,
        "backlog_budgets": 2,
        "prompt_chars": 2000,
        "max_tokens": 100,
        "latency_ms": 1000,
        "claim_limit": 10,
        "max_claims": 500,
    },
    "claim": {
        "tenants": 50,
        "due_per_tenant": 10,
        "budget_tenants": 2,
        "budget_tasks": 500,
        "claimable_tenants": 5,
        "claimable_per_tenant": 10,
        "warmup": 1,
        "claims": 5,
        "max_failures": 2,
    },
}
PART_TIMEOUT_S = {"tpm": 600, "claim": 900}

# The models of this scenario, priced through AI_PRICES_JSON's format (the price sync), each its own canonical name.
MODEL_TPM = "bench-tpm"
MODEL_RPM = "bench-rpm"
MODEL_BUDGET = "bench-budget"
MODEL_POPULAR = "bench-popular"
MODEL_OTHER = "bench-other"
PRICES = {
    MODEL_TPM: {"input": 0.15, "output": 0.6},
    MODEL_RPM: {"input": 0.15, "output": 0.6},
    MODEL_BUDGET: {"input": 2.5, "output": 10},
    MODEL_POPULAR: {"input": 0.15, "output": 0.6},
    MODEL_OTHER: {"input": 0.15, "output": 0.6},
}
QUEUE_VISIBILITY_S = 2100  # template.yaml's WorkQueue
EXECUTOR_TIMEOUT_S = 300  # template.yaml's ExecutorFunction
SWEEPER_TIMEOUT_S = 60
WINDOW_S = 60.0  # a rate limit's window

_TEXT = (
    "the a limit of tokens per minute is what a provider grants each model and every tenant wants its share "
    "while budgets bind and release as holds settle so that work waits only when it must and starts when it can"
)
_WORDS = _TEXT.split()


def prompt_text(i: int, chars: int) -> str:
    """About `chars` characters of ASCII prose, different for each i."""
    rng = random.Random(i)
    words, n = [f"Request {i}."], 0
    while n < chars:
        words.append(rng.choice(_WORDS))
        n += len(words[-1]) + 1
    return " ".join(words)[:chars]


def utc_now() -> datetime:
    return datetime.now(UTC)


# -- the scenario: each part in its own interpreter and database ---------------------------------------------------


def run(config: dict[str, Any]) -> dict[str, Any]:
    url = config["database_url"]
    parts: dict[str, Any] = {}
    for name in PARTS:
        if name not in config:
            continue
        db = _create_database(url, f"scarcity_{name}")
        try:
            parts[name] = _run_part(name, {**config[name], "database_url": db}, PART_TIMEOUT_S.get(name, 300))
        finally:
            _drop_database(url, db)
        print(f"[scarcity] {name}: {json.dumps(_brief(parts[name]))}", flush=True)
    return summarise(parts)


def summarise(parts: dict[str, Any]) -> dict[str, Any]:
    """The headline figures of issue 19 at the top, each part's details under its name."""

    def get(part: str, key: str) -> Any:
        return (parts.get(part) or {}).get(key)

    return {
        "tpm_utilisation": get("tpm", "utilisation"),
        "calls_429_fraction": get("tpm", "calls_429_fraction"),
        "tpm_limit": get("tpm", "tpm"),
        "fairness_jain": get("fairness", "jain"),
        "weights_ratio": get("weights", "ratio"),
        "late_wait_slots": get("late", "wait_slots"),
        "late_others_before": get("late", "others_before"),
        "late_started": get("late", "started"),
        "rpm_limit": get("fairness", "rpm"),
        "budget_utilisation": get("budget", "utilisation"),
        "budget_max_fraction": get("budget", "max_spent_fraction"),
        "budget_usd": get("budget", "budget_usd"),
        "claim_p95_ms": get("claim", "p95_ms"),
        "claim_median_ms": get("claim", "median_ms"),
        "errors": {name: p["error"] for name, p in parts.items() if "error" in p},
        **parts,
    }


def _brief(part: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in part.items() if not isinstance(v, dict | list)}


def _create_database(url: str, prefix: str) -> str:
    import psycopg
    from psycopg.conninfo import make_conninfo

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"'.encode())  # a name we made, not input
    return make_conninfo(url, dbname=name)


def _drop_database(url: str, db: str) -> None:
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    name = conninfo_to_dict(db)["dbname"]
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())
    except Exception as exc:  # the server drops what is left with the bench's own databases
        print(f"[scarcity] could not drop {name}: {exc}", flush=True)


def _run_part(name: str, config: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="aitasks-bench-") as tmp:
        cfg, out = Path(tmp) / "config.json", Path(tmp) / "out.json"
        cfg.write_text(json.dumps(config))
        started = time.monotonic()
        try:
            proc = subprocess.run(
                [PYTHON, "-m", "bench.scarcity", "part", name, str(cfg), str(out)],
                cwd=ROOT,
                timeout=timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout_s:.0f} s"}
        if proc.returncode != 0 or not out.is_file():
            return {"error": f"exited with {proc.returncode} (its traceback is in the bench log)"}
        result = dict(json.loads(out.read_text()))
        result.setdefault("seconds", round(time.monotonic() - started, 1))
        return result


def _part_main(name: str, config_path: str, out_path: str) -> None:
    config = json.loads(Path(config_path).read_text())
    started = time.monotonic()
    result = PART_RUNNERS[name](config)
    result["seconds"] = round(time.monotonic() - started, 1)
    Path(out_path).write_text(json.dumps(result, indent=2, default=str))


# -- what every part shares ----------------------------------------------------------------------------------------


def scarcity_env(url: str, **extra: str) -> dict[str, str]:
    """A function's environment with the OpenAI provider (a dummy key: the stub or nobody answers)."""
    env = {
        "AI_PROVIDER": "openai",
        "OPENAI_API_KEY": "bench-not-a-key",
        "AI_DEFAULT_MODEL": MODEL_TPM,
        "WORK_QUEUE_URL": "http://127.0.0.1:9/unused",  # virtual time sends no wake-ups
        **extra,
    }
    return function_env(url, **env)


def _prepare(url: str, **extra: str) -> dict[str, str]:
    """This interpreter as a function's environment, the schema, and the scenario's prices; the environment."""
    env = scarcity_env(url, **extra)
    os.environ.update(env)
    migrate_database(url)
    sync_prices(url)
    return env


def prices_json() -> str:
    return json.dumps({"effectiveDate": date.today().isoformat(), "models": PRICES})


def sync_prices(url: str) -> None:
    """The price sync as `aitasks models sync-prices` runs it, with AI_PRICES_JSON's overrides: our models."""
    from aitasks import bootstrap
    from aitasks.adapters.postgres import PostgresModelRepository, connect

    with connect(url) as conn:
        bootstrap.sync_prices(PostgresModelRepository(lambda: conn), provider="openai", overrides_json=prices_json())


class _NoWakeUps:
    """A dispatcher for virtual time: the virtual executors claim on every tick, wake-ups or not."""

    def __call__(self, task: Any, *, now: datetime) -> None:
        return None

    def wake(self, wake: Any, *, now: datetime) -> None:
        return None

    def cancel(self, task: Any, *, now: datetime) -> None:
        return None


def create_use_case(clock: Callable[[], datetime] | None = None, *, wake: bool = True) -> Any:
    """bootstrap.create_task(), on a virtual clock and without wake-ups when asked."""
    from aitasks import bootstrap

    use_case = bootstrap.create_task()
    fields = {f.name for f in dataclasses.fields(use_case)}
    changes: dict[str, Any] = {}
    if clock is not None and "clock" in fields:
        changes["clock"] = clock
    if not wake and "dispatch" in fields:
        changes["dispatch"] = _NoWakeUps()
    return dataclasses.replace(use_case, **changes) if changes else use_case


def new_task(prompt: str, *, model: str, max_tokens: int) -> Any:
    from aitasks.application.tasks import NewTask

    return NewTask(type="chat", payload={"prompt": prompt, "model": model, "params": {"maxTokens": max_tokens}})


class Clock:
    """Virtual time: what `now` every statement of a virtual part is given."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


def virtual_epoch() -> datetime:
    """Virtual time starts now, or at the start of this month when its end is near (a virtual run spans hours)."""
    from aitasks.application.limits import period_bounds

    now = utc_now().replace(microsecond=0)
    start, end = period_bounds(now)
    return now if end - now > timedelta(hours=12) else start + timedelta(hours=1)


def succeeded_outcome(task: Task, *, latency_ms: int, usage: tuple[int, int] | None = None) -> RunOutcome:
    """How the executor records a success: tokens, the cost at its model's price, an artifact."""
    from aitasks import bootstrap
    from aitasks.application.ai import Usage
    from aitasks.application.ports import Artifact
    from aitasks.application.ports import RunOutcome as Outcome
    from aitasks.domain.task import TaskStatus

    tokens_in, tokens_out = usage if usage else (min(task.input_tokens or 1, 50), min(task.max_output_tokens or 1, 10))
    cost = bootstrap.prices().cost(task.model or MODEL_RPM, Usage(tokens_in=tokens_in, tokens_out=tokens_out))
    return Outcome(
        TaskStatus.SUCCEEDED,
        "succeeded",
        model=task.model,
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        cost=cost,
        latency_ms=latency_ms,
        artifact=Artifact("text", "virtual answer"),
    )


@dataclasses.dataclass(slots=True)
class _Run:
    ends: datetime
    locked_by: str
    task: Task


class VirtualFleet:
    """Executors in virtual time: each claim is one claim_due (its own invocation id, as Lambda's), each run ends
    `latency` later through finish_runs, both with the clock's `now`."""

    def __init__(self, clock: Clock, *, latency: timedelta, outcome: Callable[[Task], RunOutcome]) -> None:
        from aitasks import bootstrap

        self.clock = clock
        self.latency = latency
        self.outcome = outcome
        self.repo = bootstrap.task_repository()
        self.inflight: list[_Run] = []
        self.starts: list[tuple[datetime, str]] = []  # (virtual time, tenant) of every run started
        self.claims = 0
        self.finished = 0
        self.lost = 0  # runs whose finish changed nothing (a lease lost): none expected

    def advance(self, to: datetime) -> None:
        """Let virtual time pass until `to`, ending the runs due meanwhile, each at its time."""
        while True:
            due = [r for r in self.inflight if r.ends <= to]
            if not due:
                break
            at = min(r.ends for r in due)
            self.clock.now = max(self.clock.now, at)
            ending = [r for r in due if r.ends == at]
            self.inflight = [r for r in self.inflight if r not in ending]
            for locked_by in sorted({r.locked_by for r in ending}):
                self._finish([r for r in ending if r.locked_by == locked_by], locked_by)
        self.clock.now = max(self.clock.now, to)

    def _finish(self, runs: list[_Run], locked_by: str) -> None:
        from aitasks.application.ports import FinishedRun

        finished = [FinishedRun(r.task.id, r.task.attempt_count, self.outcome(r.task)) for r in runs]
        done = self.repo.finish_runs(finished, locked_by=locked_by, now=self.clock.now)
        self.finished += len(done)
        self.lost += len(runs) - len(done)

    def claim(self, limit: int) -> list[Task]:
        """One claim of up to `limit` tasks now; the ones it started (the others it returned were held back)."""
        from aitasks.domain.task import TaskStatus

        locked_by = f"virtual-{self.claims}"
        self.claims += 1
        now = self.clock.now
        answered = self.repo.claim_due(
            limit=limit, locked_by=locked_by, lease_until=now + self.latency + timedelta(minutes=5), now=now
        )
        started = [t for t in answered if t.status is TaskStatus.RUNNING and t.locked_by == locked_by]
        for task in started:
            self.inflight.append(_Run(now + self.latency, locked_by, task))
            self.starts.append((now, str(task.tenant_id)))
        return started


def jain(shares: Sequence[float]) -> float | None:
    """Jain's fairness index: 1 when all shares are equal, 1/n when one takes everything."""
    total, squares = sum(shares), sum(x * x for x in shares)
    return None if not shares or squares == 0 else total * total / (len(shares) * squares)


def most_in_window(times: Sequence[datetime], window: timedelta = timedelta(seconds=WINDOW_S)) -> int:
    """The most starts in any window of this length (open at its start, as the limits count)."""
    ordered, best, low = sorted(times), 0, 0
    for high, at in enumerate(ordered):
        while ordered[low] <= at - window:
            low += 1
        best = max(best, high - low + 1)
    return best


def backlogs(tenants: int, smallest: int, largest: int) -> list[int]:
    """Backlogs from `smallest` to `largest`, evenly spaced on a log scale."""
    if tenants == 1:
        return [largest]
    return [round(smallest * (largest / smallest) ** (i / (tenants - 1))) for i in range(tenants)]


def submit_interleaved(
    clock: Clock, counts: dict[str, int], *, model: str, span: timedelta, seed: int, prompt_chars: int = 200
) -> None:
    """The tenants' tasks submitted through the create use case in a random interleaving (as tenants submit at the
    same time), spread over `span` of virtual time."""
    from aitasks.domain.task import TenantId

    order = [tenant for tenant, n in counts.items() for _ in range(n)]
    random.Random(seed).shuffle(order)
    create = create_use_case(clock, wake=False)
    start, step = clock.now, span / max(1, len(order))
    for i, tenant in enumerate(order):
        clock.now = start + step * i
        create(TenantId(tenant), new_task(prompt_text(i, prompt_chars), model=model, max_tokens=50))
    clock.now = start + span


def _rpm_model(rpm: int) -> None:
    from aitasks import bootstrap

    bootstrap.model_repository().set_limits(MODEL_RPM, rpm=rpm, tpm=None, now=utc_now())


# -- tpm: the real executor against a provider's tokens per minute ---------------------------------------------------


class _Context:
    """A Lambda context whose remaining time runs down from the function's timeout."""

    memory_limit_in_mb = 512
    log_stream_name = "bench"

    def __init__(self, function: str, timeout_s: float) -> None:
        self.function_name = function
        self.invoked_function_arn = f"arn:aws:lambda:{REGION}:123456789012:function:{function}"
        self.aws_request_id = str(uuid.uuid4())
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def _sqs_record(message: dict[str, Any], queue_arn: str) -> dict[str, Any]:
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": message.get("Attributes") or {},
        "messageAttributes": {},
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": REGION,
    }


def _executor_environment(
    env: dict[str, str], queue_url: str, go: Event, stop: Event, counters: Sequence[Synchronized[int]]
) -> None:
    """One executor environment fed as the SQS event source mapping feeds it: a long poll for up to 10 messages
    (hidden for the queue's visibility timeout), one invocation with them, the messages not reported as failures
    deleted; the failures stay hidden until their visibility (which the executor may have shortened) runs out."""
    os.environ.update(env)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # the handler's logs and metrics
    handler = load_function("executor")
    sqs = sqs_client(env["AWS_ENDPOINT_URL"])
    arn = f"arn:aws:sqs:{REGION}:123456789012:{queue_url.rsplit('/', 1)[1]}"
    ready, invocations, received, handed_back = counters
    with ready.get_lock():
        ready.value += 1
    go.wait()
    while not stop.is_set():
        messages = (
            sqs.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1, AttributeNames=["All"]
            ).get("Messages")
            or []
        )
        if not messages:
            continue
        with invocations.get_lock():
            invocations.value += 1
        with received.get_lock():
            received.value += len(messages)
        try:
            response = handler.lambda_handler(
                {"Records": [_sqs_record(m, arn) for m in messages]}, _Context("executor", EXECUTOR_TIMEOUT_S)
            )
        except Exception:  # the invocation failed: the whole batch reappears after its visibility timeout
            traceback.print_exc()
            response = {"batchItemFailures": [{"itemIdentifier": m["MessageId"]} for m in messages]}
        failed = {f["itemIdentifier"] for f in (response or {}).get("batchItemFailures") or []}
        done = [m for m in messages if m["MessageId"] not in failed]
        if done:
            sqs.delete_message_batch(
                QueueUrl=queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)],
            )
        with handed_back.get_lock():
            handed_back.value += len(failed)


def _sweeper_environment(env: dict[str, str], first_s: float, go: Event, stop: Event, runs: Synchronized[int]) -> None:
    """The sweeper as its schedule runs it: every minute (the first `first_s` after the start)."""
    os.environ.update(env)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    handler = load_function("sweeper")
    go.wait()
    if stop.wait(first_s):
        return
    while True:
        started = time.monotonic()
        handler.lambda_handler({"source": "aws.scheduler"}, _Context("sweeper", SWEEPER_TIMEOUT_S))
        with runs.get_lock():
            runs.value += 1
        if stop.wait(max(0.0, 60 - (time.monotonic() - started))):
            return


def part_tpm(config: dict[str, Any]) -> dict[str, Any]:
    from tests.support.tpm_stub import TpmStub

    url, tpm = config["database_url"], config["tpm"]
    low, high = config["latency_ms"]
    with moto_server() as endpoint, TpmStub(tpm, latency_ms=(low, high), seed=7) as stub:
        sqs = sqs_client(endpoint)
        queue_url = sqs.create_queue(QueueName="work", Attributes={"VisibilityTimeout": str(QUEUE_VISIBILITY_S)})[
            "QueueUrl"
        ]
        extra = {
            "OPENAI_BASE_URL": stub.base_url,
            "WORK_QUEUE_URL": queue_url,
            "AWS_ENDPOINT_URL": endpoint,
            "AI_DEFAULT_MODEL": MODEL_TPM,
        }
        env = _prepare(url, **extra)
        from aitasks import bootstrap
        from aitasks.domain.task import TenantId

        bootstrap.model_repository().set_limits(MODEL_TPM, rpm=None, tpm=tpm, now=utc_now())
        create = create_use_case()
        created = time.monotonic()
        tenants = [f"tenant-{i}" for i in range(config["tenants"])]
        for i in range(config["backlog"]):
            task = new_task(prompt_text(i, config["prompt_chars"]), model=MODEL_TPM, max_tokens=config["max_tokens"])
            create(TenantId(tenants[i % len(tenants)]), task)
        created_s = time.monotonic() - created

        ctx = multiprocessing.get_context("spawn")
        go, stop = ctx.Event(), ctx.Event()
        counters = [ctx.Value("l", 0) for _ in range(4)]
        sweeps = ctx.Value("l", 0)
        procs = [
            ctx.Process(target=_executor_environment, args=(env, queue_url, go, stop, counters), daemon=True)
            for _ in range(config["environments"])
        ]
        sweeper = ctx.Process(target=_sweeper_environment, args=(env, 30.0, go, stop, sweeps), daemon=True)
        for proc in [*procs, sweeper]:
            proc.start()
        deadline = time.monotonic() + 60
        while counters[0].value < len(procs) and time.monotonic() < deadline:  # every environment warm
            time.sleep(0.05)
        go.set()
        t0 = time.monotonic()
        time.sleep(max(0.0, t0 + config["seconds"] - time.monotonic()))
        t_end = time.monotonic()
        calls = stub.records()
        stop.set()
        for proc in [*procs, sweeper]:
            proc.join(1)
            if proc.is_alive():
                proc.terminate()  # an invocation still running: what it does now is past the measurement
                proc.join(5)
    return {
        **_tpm_figures(calls, tpm=tpm, t0=t0, t_end=t_end, warmup_s=config["warmup_s"]),
        "environments": config["environments"],
        "tenants": config["tenants"],
        "backlog": config["backlog"],
        "backlog_created_s": round(created_s, 1),
        "prompt_chars": config["prompt_chars"],
        "max_tokens": config["max_tokens"],
        "latency_ms": [low, high],
        "invocations": counters[1].value,
        "wake_ups_received": counters[2].value,
        "wake_ups_handed_back": counters[3].value,
        "sweeps": sweeps.value,
        "database": _tpm_database(url),
    }


def _tpm_figures(calls: Sequence[Any], *, tpm: int, t0: float, t_end: float, warmup_s: float) -> dict[str, Any]:
    steady_from = t0 + warmup_s
    steady = [c for c in calls if steady_from <= c.at < t_end]
    measured_s = t_end - steady_from
    admitted = sum(c.tokens for c in steady if c.status == 200)
    rejected = sum(1 for c in steady if c.status == 429)
    minutes = []
    start = t0
    while start + WINDOW_S <= t_end + 1e-6:
        window = [c for c in calls if start <= c.at < start + WINDOW_S]
        minutes.append(
            {
                "calls": len(window),
                "calls_429": sum(c.status == 429 for c in window),
                "tokens": sum(c.tokens for c in window if c.status == 200),
            }
        )
        start += WINDOW_S
    timeline = []  # every 10 s from the start: what the stub saw
    for start_s in range(0, math.ceil(t_end - t0), 10):
        window = [c for c in calls if t0 + start_s <= c.at < min(t0 + start_s + 10, t_end)]
        timeline.append(
            [
                start_s,
                len(window),
                sum(c.status == 429 for c in window),
                sum(c.tokens for c in window if c.status == 200),
            ]
        )
    per_call = sorted({c.tokens for c in calls})
    return {
        "tpm": tpm,
        "run_s": round(t_end - t0, 1),
        "warmup_s": warmup_s,
        "measured_s": round(measured_s, 1),
        "calls": len(steady),
        "calls_200": len(steady) - rejected,
        "calls_429": rejected,
        "calls_429_fraction": round(rejected / len(steady), 4) if steady else None,
        "tokens_per_minute": round(admitted / (measured_s / 60)) if measured_s > 0 else None,
        "utilisation": round(admitted / (tpm * measured_s / 60), 4) if measured_s > 0 else None,
        "tokens_per_call": per_call[len(per_call) // 2] if per_call else None,  # the stub's count, a median
        "whole_run": {
            "calls": len(calls),
            "calls_429": sum(c.status == 429 for c in calls),
            "first_call_s": round(min(c.at for c in calls) - t0, 2) if calls else None,
        },
        "minutes": minutes,
        "timeline_10s": timeline,  # [second, calls, of them 429, tokens admitted]
    }


def _tpm_database(url: str) -> dict[str, Any]:
    """What the database says about the run: the tasks' states, the attempts' outcomes, what a claim counted."""
    import psycopg

    found: dict[str, Any] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        found["tasks"] = dict(conn.execute("SELECT status, count(*) FROM tasks GROUP BY 1 ORDER BY 1").fetchall())
        found["attempts"] = dict(
            conn.execute(
                "SELECT COALESCE(error_code, status), count(*) FROM task_attempts GROUP BY 1 ORDER BY 1"
            ).fetchall()
        )
        try:  # how many tokens the claim counted per call (migration 0009's ledger; another schema may differ)
            row = conn.execute("SELECT avg(tokens)::integer FROM model_calls WHERE model = %s", [MODEL_TPM]).fetchone()
            found["tokens_counted_per_call"] = row[0] if row else None
        except psycopg.Error:
            found["tokens_counted_per_call"] = None
    return found


# -- fairness: shares of a rate-limited model, in virtual time ---------------------------------------------------------


def _fair_setup(config: dict[str, Any]) -> tuple[Clock, VirtualFleet, timedelta, timedelta]:
    _prepare(config["database_url"])
    _rpm_model(config["rpm"])
    clock = Clock(virtual_epoch())
    latency_ms = config["latency_ms"]
    fleet = VirtualFleet(
        clock,
        latency=timedelta(milliseconds=latency_ms),
        outcome=lambda task: succeeded_outcome(task, latency_ms=latency_ms),
    )
    slot = timedelta(seconds=WINDOW_S / config["rpm"])
    return clock, fleet, slot, slot / 2


def part_fairness(config: dict[str, Any]) -> dict[str, Any]:
    """Equal weights: Jain's index of the calls started per tenant while every tenant still has queued work."""
    clock, fleet, slot, tick = _fair_setup(config)
    sizes = backlogs(config["tenants"], config["smallest"], config["largest"])
    counts = {f"tenant-{i:02d}": n for i, n in enumerate(sizes)}
    submit_interleaved(clock, counts, model=MODEL_RPM, span=timedelta(seconds=30), seed=19)
    started: Counter[str] = Counter()
    period: Counter[str] = Counter()
    period_times: list[datetime] = []
    t, end_reason = clock.now + tick, "max_starts"
    while True:
        fleet.advance(t)
        if any(started[tenant] >= n for tenant, n in counts.items()):
            end_reason = "a tenant's backlog ran out"
            break
        for task in fleet.claim(config["claim_limit"]):
            started[str(task.tenant_id)] += 1
            period[str(task.tenant_id)] += 1
            period_times.append(t)
        if sum(period.values()) >= config["max_starts"]:
            break
        if fleet.claims > config["max_claims"]:
            end_reason = "max_claims"
            break
        t += tick
    shares = [period[tenant] for tenant in counts]
    index = jain(shares)
    return {
        "rpm": config["rpm"],
        "slot_s": slot.total_seconds(),
        "tick_s": tick.total_seconds(),
        "latency_ms": config["latency_ms"],
        "claim_limit": config["claim_limit"],
        "tenants": len(counts),
        "backlogs": sizes,
        "starts": shares,
        "period_starts": sum(shares),
        "period_s": round((period_times[-1] - period_times[0]).total_seconds(), 1) if period_times else 0,
        "period_end": end_reason,
        "jain": round(index, 4) if index is not None else None,
        "most_starts_in_a_window": most_in_window([at for at, _ in fleet.starts]),
        "claims": fleet.claims,
        "lost_runs": fleet.lost,
    }


def part_weights(config: dict[str, Any]) -> dict[str, Any]:
    """Two tenants weighted 2:1 on the rate-limited model: their starts while both are backlogged."""
    from aitasks import bootstrap
    from aitasks.domain.task import TenantId

    clock, fleet, _, tick = _fair_setup(config)
    limits = bootstrap.limits_repository()
    if not hasattr(limits, "set_weight"):
        return {"skipped": "not supported: this code has no tenant weights (PostgresLimitsRepository.set_weight)"}
    weights = {"heavy": Decimal(2), "light": Decimal(1)}
    for tenant, weight in weights.items():
        limits.set_weight(TenantId(tenant), weight, now=clock.now)
    counts = dict.fromkeys(weights, config["backlog"])
    submit_interleaved(clock, counts, model=MODEL_RPM, span=timedelta(seconds=20), seed=29)
    started: Counter[str] = Counter()
    t = clock.now + tick
    while sum(started.values()) < config["starts"] and fleet.claims <= config["max_claims"]:
        fleet.advance(t)
        if any(started[tenant] >= n for tenant, n in counts.items()):
            break
        for task in fleet.claim(config["claim_limit"]):
            started[str(task.tenant_id)] += 1
        t += tick
    ratio = started["heavy"] / started["light"] if started["light"] else None
    return {
        "rpm": config["rpm"],
        "weights": {k: str(v) for k, v in weights.items()},
        "starts": dict(started),
        "ratio": round(ratio, 3) if ratio is not None else None,
        "claims": fleet.claims,
        "lost_runs": fleet.lost,
    }


def part_late(config: dict[str, Any]) -> dict[str, Any]:
    """Tenants keep a rate-limited model busy; another tenant's first task arrives: how long until it starts, and
    how many others' calls start first."""
    from aitasks.domain.task import TenantId

    clock, fleet, slot, tick = _fair_setup(config)
    counts = {f"busy-{i}": config["backlog"] for i in range(config["tenants"])}
    submit_interleaved(clock, counts, model=MODEL_RPM, span=timedelta(seconds=30), seed=39)
    t = clock.now + tick
    busy_until = t + timedelta(seconds=config["arrive_after_s"])
    while t < busy_until:
        fleet.advance(t)
        fleet.claim(config["claim_limit"])
        t += tick
    fleet.advance(t - tick + tick / 3)
    arrived = clock.now
    create = create_use_case(clock, wake=False)
    for i in range(config["late_tasks"]):
        create(TenantId("late"), new_task(prompt_text(10_000 + i, 200), model=MODEL_RPM, max_tokens=50))
    others_before, first_start, same_claim = 0, None, None
    deadline = arrived + timedelta(seconds=config["max_wait_s"])
    while t <= deadline and first_start is None:
        fleet.advance(t)
        started = fleet.claim(config["claim_limit"])
        if any(str(task.tenant_id) == "late" for task in started):
            first_start = t
            same_claim = sum(str(task.tenant_id) != "late" for task in started)
        else:
            others_before += len(started)
        t += tick
    wait_s = (first_start - arrived).total_seconds() if first_start else None
    return {
        "rpm": config["rpm"],
        "slot_s": slot.total_seconds(),
        "busy_tenants": len(counts),
        "arrived_after_s": config["arrive_after_s"],
        "started": first_start is not None,
        "wait_s": round(wait_s, 2) if wait_s is not None else None,
        "wait_slots": round(wait_s / slot.total_seconds(), 2) if wait_s is not None else None,
        "max_wait_s": config["max_wait_s"],
        "others_before": others_before,
        "others_in_the_same_claim": same_claim,
        "most_starts_in_a_window": most_in_window([at for at, _ in fleet.starts]),
        "lost_runs": fleet.lost,
    }


# -- budget: what a month's budget lets a tenant spend, in virtual time ------------------------------------------------


def part_budget(config: dict[str, Any]) -> dict[str, Any]:
    from aitasks import bootstrap
    from aitasks.application.limits import period_bounds
    from aitasks.domain.task import TenantId

    _prepare(config["database_url"])
    clock = Clock(virtual_epoch())
    tenant = TenantId("spender")
    # The budget holds `budget_holds` worst costs: with 20, a task fits until 95 % is spent, no further (each attempt
    # holds its worst cost), so 95 % is what an engine that never leaves room unused reaches. The backlog's real
    # cost is `backlog_budgets` budgets: the work really waits at the end.
    tasks = config["budget_holds"] * 4 * config["backlog_budgets"]
    create = create_use_case(clock, wake=False)
    worst, each = Decimal(0), []
    for i in range(tasks):
        clock.now += timedelta(milliseconds=10)
        task = new_task(prompt_text(i, config["prompt_chars"]), model=MODEL_BUDGET, max_tokens=config["max_tokens"])
        each.append(create(tenant, task).worst_cost)
        worst += each[-1] or 0
    if None in each:
        return {"error": f"{MODEL_BUDGET} has no price: its tasks have no worst cost"}
    budget = max(each) * config["budget_holds"]
    limits = bootstrap.limits_repository()
    limits.set_monthly_budget(tenant, budget, now=clock.now)
    real: dict[str, Decimal] = {"cost": Decimal(0), "worst": Decimal(0)}

    def quarter(task: Task) -> RunOutcome:
        usage = (math.ceil((task.input_tokens or 0) / 4), math.ceil((task.max_output_tokens or 0) / 4))
        outcome = succeeded_outcome(task, latency_ms=config["latency_ms"], usage=usage)
        real["cost"] += outcome.cost or 0
        real["worst"] += task.worst_cost or 0
        return outcome

    fleet = VirtualFleet(clock, latency=timedelta(milliseconds=config["latency_ms"]), outcome=quarter)
    month_end, began = period_bounds(clock.now)[1], clock.now
    tick = timedelta(seconds=1)
    t, peak_spent, peak_committed, stop, idle_checked = clock.now + tick, Decimal(0), Decimal(0), "max_claims", False
    while fleet.claims <= config["max_claims"]:
        fleet.advance(t)
        claimed = fleet.claim(config["claim_limit"])
        state = limits.limits(tenant, now=clock.now)
        peak_spent = max(peak_spent, state.spent_usd)
        peak_committed = max(peak_committed, state.spent_usd + state.reserved_usd)
        if claimed or fleet.inflight:
            t, idle_checked = t + tick, False
            continue
        # Nothing runs (no hold can settle) and nothing started: the rest waits for the budget or the month - once
        # a claim a window later (past any short deferral) finds nothing either.
        if state.queued == 0:
            stop = "the backlog ran out"
            break
        if idle_checked:
            stop = "the work waits for the month" if clock.now < month_end else "the month ended"
            break
        t, idle_checked = t + timedelta(seconds=61), True
    state = limits.limits(tenant, now=clock.now)
    spent = state.spent_usd
    return {
        "budget_usd": str(budget),
        "budget_holds": config["budget_holds"],
        "worst_cost_usd": str(max(each)),
        "tasks": tasks,
        "prompt_chars": config["prompt_chars"],
        "claim_limit": config["claim_limit"],
        "latency_ms": config["latency_ms"],
        "backlog_worst_usd": str(worst),
        "real_over_worst": round(float(real["cost"] / real["worst"]), 4) if real["worst"] else None,
        "runs": fleet.finished,
        "still_waiting": state.queued,
        "spent_usd": str(spent),
        "utilisation": round(float(spent / budget), 4),
        "max_spent_usd": str(peak_spent),
        "max_spent_fraction": round(float(peak_spent / budget), 4),
        "max_committed_fraction": round(float(peak_committed / budget), 4),
        "stop": stop,
        "virtual_s": round((clock.now - began).total_seconds(), 1),
        "claims": fleet.claims,
        "lost_runs": fleet.lost,
    }


# -- claim: one claim at scale, a popular model paused and budgets spent -----------------------------------------------


def _clone_queues(conn: Any, templates: Sequence[uuid.UUID], copies: int, *, since: datetime, span_s: float) -> None:
    """`copies` more tasks in the queue of each template - a task the create use case stored, so that its tenant and
    model are known to the engine and every column holds what create writes, whatever the schema - each with a new
    id, their due times interleaved across the templates' tenants over `span_s` from `since`."""
    columns = [
        row[0]
        for row in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = 'tasks' AND is_generated = 'NEVER' AND COALESCE(identity_generation, '') <> 'ALWAYS' "
            "ORDER BY ordinal_position"
        ).fetchall()
    ]
    due = "%(since)s::timestamptz + ((g - 1) * %(count)s + t.r) * %(step)s::interval"
    overrides = {
        "id": "gen_random_uuid()",
        "idempotency_key": "NULL",
        "scheduled_at": "NULL",
        "available_at": due,
        "created_at": due,
        "updated_at": due,
        "dispatched_at": due,
    }
    select = ", ".join(overrides.get(c, f't."{c}"') for c in columns)
    names = ", ".join(f'"{c}"' for c in columns)
    sql = (
        f"INSERT INTO tasks ({names}) SELECT {select} FROM (SELECT x.*, row_number() OVER (ORDER BY x.tenant_id, x.id) "
        "- 1 AS r FROM tasks x WHERE x.id = ANY(%(ids)s)) t CROSS JOIN generate_series(1, %(copies)s) g"
    )
    step = timedelta(seconds=span_s / max(1, len(templates) * copies))
    params = {"ids": list(templates), "count": len(templates), "copies": copies, "since": since, "step": step}
    conn.execute(sql.encode(), params)


class _Claims:
    """Claims as an executor makes them (real time), and the ends of what they started."""

    def __init__(self) -> None:
        from aitasks import bootstrap

        self.repo = bootstrap.task_repository()

    def claim(self, limit: int, invocation: str) -> tuple[list[Task], int]:
        """The tasks one claim started, and how many others it returned (held back)."""
        from aitasks.domain.task import TaskStatus

        now = utc_now()
        answered = self.repo.claim_due(
            limit=limit, locked_by=invocation, lease_until=now + timedelta(seconds=20), now=now
        )
        ran = [t for t in answered if t.status is TaskStatus.RUNNING and t.locked_by == invocation]
        return ran, len(answered) - len(ran)

    def finish(self, tasks: list[Task], invocation: str, outcome: Callable[[Task], RunOutcome]) -> None:
        from aitasks.application.ports import FinishedRun

        runs = [FinishedRun(t.id, t.attempt_count, outcome(t)) for t in tasks]
        if runs:
            self.repo.finish_runs(runs, locked_by=invocation, now=utc_now())


def _pause_popular(claims: _Claims, create: Any) -> None:
    """The popular model paused as a provider's 429 pauses it: a run of it ends with a Retry-After of two hours."""
    from aitasks.application.ports import RunOutcome as Outcome
    from aitasks.domain.task import TaskStatus, TenantId

    create(TenantId("pauser"), new_task("Hello", model=MODEL_POPULAR, max_tokens=50))
    ran, _ = claims.claim(1, "bench-pause")
    until = utc_now() + timedelta(hours=2)
    claims.finish(
        ran,
        "bench-pause",
        lambda task: Outcome(
            TaskStatus.DEAD_LETTER,
            "failed",
            model=task.model,
            latency_ms=5,
            error_code="rate_limit",
            error_detail="HTTP 429: Rate limit reached (bench)",
            pause_until=until,
        ),
    )


def _spend_budgets(claims: _Claims, create: Any, tenants: list[str], spend: Decimal) -> list[uuid.UUID]:
    """Each tenant's month spends `spend` on one task; then its budget is set to that: nothing more fits. Before
    that, each gets a task due a moment later (a budget spent refuses new ones): the templates of its backlog."""
    from aitasks import bootstrap
    from aitasks.domain.task import TenantId

    later = utc_now() + timedelta(seconds=1)
    templates = []
    for tenant in tenants:
        create(TenantId(tenant), new_task("Hello", model=MODEL_OTHER, max_tokens=50))
        task = new_task(prompt_text(3, 400), model=MODEL_OTHER, max_tokens=50)
        templates.append(create(TenantId(tenant), dataclasses.replace(task, scheduled_at=later)).id)
    ran, _ = claims.claim(len(tenants), "bench-spend")
    claims.finish(ran, "bench-spend", lambda t: dataclasses.replace(succeeded_outcome(t, latency_ms=5), cost=spend))
    limits = bootstrap.limits_repository()
    for tenant in tenants:
        limits.set_monthly_budget(TenantId(tenant), spend, now=utc_now())
    time.sleep(max(0.0, (later - utc_now()).total_seconds()))
    return templates


def _load_backlogs(url: str, config: dict[str, Any], create: Any, budget_templates: list[uuid.UUID]) -> dict[str, int]:
    """The backlogs: a task of each tenant through the create use case, the rest copied from it in bulk. The paused
    model's and the held-back backlogs came first; the claimable work is recent. Their due tasks by model."""
    import psycopg

    from aitasks.domain.task import TenantId

    def first(prefix: str, tenants: int, model: str) -> list[uuid.UUID]:
        task = new_task(prompt_text(1, 400), model=model, max_tokens=50)
        return [create(TenantId(f"{prefix}{i:05d}"), task).id for i in range(tenants)]

    popular = first("p", config["tenants"], MODEL_POPULAR)
    claimable = first("c", config["claimable_tenants"], MODEL_OTHER)
    now = utc_now()
    early = now - timedelta(minutes=20)
    with psycopg.connect(url, autocommit=True) as conn:
        _clone_queues(conn, popular, config["due_per_tenant"] - 1, since=early, span_s=900)
        per_tenant = config["budget_tasks"] // max(1, len(budget_templates))
        _clone_queues(conn, budget_templates, per_tenant - 1, since=early, span_s=900)
        copies = config["claimable_per_tenant"] - 1
        _clone_queues(conn, claimable, copies, since=now - timedelta(seconds=60), span_s=55)
        conn.execute("VACUUM ANALYZE")
        rows = conn.execute(
            "SELECT model, count(*) FROM tasks WHERE status IN ('queued', 'failed') GROUP BY 1 ORDER BY 1"
        ).fetchall()
    return {str(model): int(count) for model, count in rows}


def part_claim(config: dict[str, Any]) -> dict[str, Any]:
    import psycopg

    from aitasks import bootstrap
    from aitasks.domain.errors import DependencyUnavailableError
    from aitasks.domain.task import TenantId

    url = config["database_url"]
    _prepare(url)
    claims, create = _Claims(), create_use_case(wake=False)
    _pause_popular(claims, create)
    spend = Decimal("0.05")
    budget_tenants = [f"b{i:05d}" for i in range(config["budget_tenants"])]
    templates = _spend_budgets(claims, create, budget_tenants, spend)
    loaded = time.monotonic()
    due = _load_backlogs(url, config, create, templates)
    load_s = time.monotonic() - loaded
    status = {m.model: m for m in bootstrap.model_repository().models(now=utc_now())}
    held = bootstrap.limits_repository().limits(TenantId(budget_tenants[0]), now=utc_now()) if budget_tenants else None

    samples: list[float] = []
    rows: list[dict[str, Any]] = []
    for i in range(config["warmup"] + config["claims"]):
        invocation = f"bench-claim-{i}"
        started = time.perf_counter()
        try:
            ran, deferred = claims.claim(10, invocation)
            error = None
        except (DependencyUnavailableError, psycopg.Error) as exc:  # a statement timeout, say
            ran, deferred, error = [], 0, type(exc).__name__
        elapsed = time.perf_counter() - started
        rows.append({"ms": round(elapsed * 1000, 2), "claimed": len(ran), "held_back": deferred, "error": error})
        if i >= config["warmup"]:
            samples.append(elapsed)
        claims.finish(ran, invocation, lambda t: succeeded_outcome(t, latency_ms=5))
        if sum(1 for r in rows if r["error"]) >= config["max_failures"]:
            break
    stats = latency(samples) if samples else {}
    return {
        "tenants": config["tenants"],
        "due_per_tenant": config["due_per_tenant"],
        "budget_tenants": config["budget_tenants"],
        "budget_tasks": config["budget_tasks"],
        "claimable": config["claimable_tenants"] * config["claimable_per_tenant"],
        "claimable_tenants": config["claimable_tenants"],
        "due_by_model": due,
        "load_s": round(load_s, 1),
        "paused": getattr(status.get(MODEL_POPULAR), "paused_until", None) is not None,
        "budget_spent": bool(held and held.spent_usd >= spend),
        "warmup": config["warmup"],
        "claims": len(samples),
        "failed": sum(1 for r in rows if r["error"]),
        "errors": sorted({r["error"] for r in rows if r["error"]}),
        "first_ms": rows[0]["ms"] if rows else None,
        "claimed_per_claim": round(sum(r["claimed"] for r in rows) / len(rows), 2) if rows else None,
        "median_ms": stats.get("median_ms"),
        "p95_ms": stats.get("p95_ms"),
        "p99_ms": stats.get("p99_ms"),
        "max_ms": stats.get("max_ms"),
        "each": rows[:12],
    }


PART_RUNNERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "tpm": part_tpm,
    "fairness": part_fairness,
    "weights": part_weights,
    "late": part_late,
    "budget": part_budget,
    "claim": part_claim,
}


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "part":
        _part_main(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        scenario_main(run)
