"""Faults done to the running local stack; tests/chaos/conftest.py says what must hold."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import psutil

from tests.chaos.conftest import (
    aws,
    full_only,
    function_processes,
    nothing_lost_nothing_twice,
    outputs,
    postgres_paused,
    report,
    restart_postgres,
    settle,
    sql,
)

if TYPE_CHECKING:
    from tests.chaos.conftest import Clients


def slow(ms: int, prompt: str = "chaos") -> dict[str, Any]:
    return {"type": "chat", "payload": {"prompt": prompt, "params": {"fake": {"latencyMs": ms}}}}


# The stated recoveries (docs/operations.md, "Failure modes").
KILLED_RUN_AGAIN_S = 40  # lease 20 s, then the sweeper's next look (every 10 s), then a cold executor
PAUSE_S = 20
PURGE_RECOVERED_S = 240  # the sweeper's grace (120 s) after the wake-up, its next minute, the run


@full_only
def test_every_executor_killed_while_calls_run(clients: Clients) -> None:
    # given: slow calls running for three tenants
    ids = clients.burst(slow(15_000), 12)
    deadline = time.monotonic() + 60
    while sql("SELECT count(*) AS n FROM tasks WHERE id = ANY(%s::uuid[]) AND status = 'running'", ids)[0]["n"] < 6:
        assert time.monotonic() < deadline, "the calls did not start"
        time.sleep(0.5)
    # when: every executor process is killed mid-call
    killed_at = datetime.now(UTC)
    victims = function_processes("ExecutorFunction")
    for proc in victims:
        proc.kill()
    psutil.wait_procs(victims, timeout=10)
    running = [
        r["id"] for r in sql("SELECT id::text FROM tasks WHERE id = ANY(%s::uuid[]) AND status = 'running'", ids)
    ]
    # then: each task whose run died runs again within the stated time, and every task succeeds once
    settle(ids, timeout_s=KILLED_RUN_AGAIN_S + 120)
    nothing_lost_nothing_twice(ids, clients)
    again = sql(
        "SELECT task_id::text, min(started_at) AS at FROM task_attempts"
        " WHERE task_id = ANY(%s::uuid[]) AND attempt_no > 1 GROUP BY 1",
        running,
    )
    delays = sorted((r["at"] - killed_at).total_seconds() for r in again)
    report(
        "kill_executors",
        processes=len(victims),
        runs_killed=len(running),
        ran_again=len(again),
        again_after_s=[round(d, 1) for d in delays],
    )
    assert len(victims) >= 1 and len(again) == len(running)
    assert delays[-1] <= KILLED_RUN_AGAIN_S


def test_postgres_paused_20_s_under_create_load(clients: Clients) -> None:
    # given: clients creating steadily (each retries a 503 with the same Idempotency-Key)
    ids: list[str] = []
    stop = threading.Event()

    def client(n: int) -> None:
        while not stop.is_set():
            ids.append(clients.create(slow(500, f"paused {n}"), tenant=n))
            time.sleep(0.2)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    time.sleep(8)
    # when: PostgreSQL stops answering for 20 s
    paused_at = time.monotonic()
    with postgres_paused():
        time.sleep(PAUSE_S)
    resumed_at = time.monotonic()
    before = len(clients.answers)
    # then: the service answers again soon after it comes back
    first_202_after = None
    deadline = resumed_at + 60
    while first_202_after is None and time.monotonic() < deadline:
        with clients.lock:
            later = clients.answers[before:]
        if any(status == 202 for status, _ in later):
            first_202_after = time.monotonic() - resumed_at
        time.sleep(0.2)
    time.sleep(5)
    stop.set()
    for t in threads:
        t.join(120)
    statuses = settle(ids, timeout_s=120)
    nothing_lost_nothing_twice(ids, clients)
    answers = [s for s, _ in clients.answers]
    report(
        "pause_postgres",
        pause_s=round(resumed_at - paused_at, 1),
        tasks=len(ids),
        answers={str(s): answers.count(s) for s in sorted(set(answers))},
        first_202_after_resume_s=first_202_after,
        unexpected=clients.unexpected_answers(),
        statuses={s: list(statuses.values()).count(s) for s in set(statuses.values())},
    )
    assert clients.unexpected_answers() == []
    assert 503 in answers  # the pause was felt, and answered as it should be
    assert first_202_after is not None and first_202_after <= 15


def test_postgres_restarted_under_load(clients: Clients) -> None:
    ids = clients.burst(slow(3_000), 6)
    restarted = time.monotonic()
    restart_postgres()
    took = time.monotonic() - restarted
    # the warm functions' connections died with it: the next requests reconnect
    after = time.monotonic()
    ids += clients.burst(slow(500), 6)
    served_after_s = time.monotonic() - after
    settle(ids, timeout_s=150)
    nothing_lost_nothing_twice(ids, clients)
    report("restart_postgres", restart_s=round(took, 1), six_creates_after_s=round(served_after_s, 1),
           answers=sorted({s for s, _ in clients.answers}), unexpected=clients.unexpected_answers())  # fmt: skip
    assert clients.unexpected_answers() == []


@full_only
def test_the_work_queue_purged(clients: Clients) -> None:
    # given: tasks due in 15 s, whose wake-ups wait in the work queue (delayed messages)
    at = (datetime.now(UTC) + timedelta(seconds=15)).isoformat()
    ids = clients.burst({**slow(500), "scheduledAt": at}, 10)
    # when: every message in the queue is lost
    purged_at = time.monotonic()
    aws("sqs").purge_queue(QueueUrl=outputs()["WorkQueueUrl"])
    # then: the sweeper wakes the due tasks that lost their wake-ups (once their grace period has passed)
    settle(ids, timeout_s=PURGE_RECOVERED_S + 60)
    recovered_s = time.monotonic() - purged_at
    nothing_lost_nothing_twice(ids, clients)
    report("purge_work_queue", tasks=len(ids), all_done_after_s=round(recovered_s, 1))
    assert recovered_s <= PURGE_RECOVERED_S


def test_every_wake_up_delivered_five_times(clients: Clients) -> None:
    # given: tasks, each of whose wake-ups is sent four more times (as SQS may redeliver, and worse)
    ids = clients.burst(slow(2_000), 10)
    sqs, queue = aws("sqs"), outputs()["WorkQueueUrl"]
    rows = sql("SELECT id::text AS id, tenant_id FROM tasks WHERE id = ANY(%s::uuid[])", ids)
    tenants = {r["id"]: r["tenant_id"] for r in rows}
    for task_id in ids:
        body = json.dumps({"tenantId": tenants[task_id], "taskId": task_id})
        for _ in range(4):
            sqs.send_message(QueueUrl=queue, MessageBody=body, MessageGroupId=tenants[task_id])
    # then: each task ran once and succeeded once
    started = time.monotonic()
    settle(ids, timeout_s=120)
    nothing_lost_nothing_twice(ids, clients)
    attempts = sql("SELECT count(*) AS n FROM task_attempts WHERE task_id = ANY(%s::uuid[])", ids)[0]["n"]
    report("duplicate_wake_ups", tasks=len(ids), wake_ups=5 * len(ids), attempts=attempts,
           settled_s=round(time.monotonic() - started, 1))  # fmt: skip
    assert attempts == len(ids)


EVIL_SCHEMA = {"type": "object", "properties": {"code": {"type": "string", "pattern": "^(a+)+$"}}, "required": ["code"]}


def test_a_catastrophic_regex_beside_ordinary_work(clients: Clients) -> None:
    # given: an extract whose schema's pattern backtracks exponentially in Python's re, answered with its worst case
    evil = {
        "type": "extract",
        "maxAttempts": 2,
        "payload": {"prompt": "code?", "context": "c", "params": {"schema": EVIL_SCHEMA,
                    "fake": {"answer": json.dumps({"code": "a" * 40 + "!"})}}},
    }  # fmt: skip
    started = time.monotonic()
    [evil_id] = clients.burst(evil, 1, threads=1)
    ordinary = clients.burst(slow(1_000), 10)
    # then: the extract fails quickly (invalid_output, its retry too) and ordinary work runs as usual
    statuses = settle([evil_id, *ordinary], timeout_s=120)
    took = time.monotonic() - started
    attempts = sql("SELECT latency_ms, error_code FROM task_attempts WHERE task_id = %s::uuid", evil_id)
    report("catastrophic_regex", evil_status=statuses[evil_id], evil_attempts=[dict(a) for a in attempts],
           all_done_s=round(took, 1))  # fmt: skip
    assert statuses[evil_id] == "dead_letter"
    assert {a["error_code"] for a in attempts} == {"invalid_output"}
    nothing_lost_nothing_twice(ordinary, None)
    assert took < 60
