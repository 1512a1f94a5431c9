"""Operator changes take effect at once on the local stack: the command that frees work wakes it through the stack's
work queue (found from .local/ with no option), so that it starts within 5 s instead of at the sweeper's next minute
or two. The tasks are created well before the change, so that their own wake-ups are spent by then and the sweeper
(which re-sends a wake-up only after 120 s) cannot be what starts them."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from tests.e2e.conftest import LOCAL, ROOT, Stack, new_tenant
from tests.e2e.test_engine_e2e import at, create, get, wait_all

# The tasks' own wake-ups are spent within this (an executor answers in a second or two).
SETTLE_S = 10


def aitasks(*args: str) -> subprocess.CompletedProcess[str]:
    url = (LOCAL / "database_url").read_text().strip()
    command = [str(Path(sys.executable).with_name("aitasks")), *args, "--database-url", url]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    return done


def first_start(stack: Stack, key: str, ids: list[str], timeout_s: float) -> datetime:
    """When the first of the tasks started (its attempt's startedAt, the database's clock: this machine's)."""
    deadline = time.monotonic() + timeout_s
    while True:
        started = [at(a["startedAt"]) for i in ids for a in get(stack, key, i, "/attempts")]
        if started or time.monotonic() > deadline:
            assert started, "nothing started"
            return min(started)
        time.sleep(0.25)


def test_a_paused_tenant_set_to_two_starts_its_work_within_5_s(stack: Stack) -> None:
    # given: a tenant its operator paused, with three tasks waiting for the cap
    tenant, key = new_tenant("e2e-resume")
    aitasks("tenants", "set-limits", tenant, "--max-concurrency", "0")
    body = {"type": "chat", "payload": {"prompt": "Go", "params": {"fake": {"latencyMs": 500}}}}
    ids = [create(stack, key, body)["id"] for _ in range(3)]
    time.sleep(SETTLE_S)
    assert {get(stack, key, i)["waitingFor"] for i in ids} == {"concurrency"}
    # when: the operator gives it two slots
    changed = datetime.now(UTC)
    done = aitasks("tenants", "set-limits", tenant, "--max-concurrency", "2")
    # then: the command woke two tasks through the local stack's queue, and the first started within 5 s
    assert "woke 2 task(s) through the local stack's work queue" in done.stderr, done.stderr
    started = first_start(stack, key, ids, timeout_s=30)
    assert (started - changed).total_seconds() < 5, started - changed
    tasks = wait_all(stack, key, ids, timeout_s=60)
    assert {t["status"] for t in tasks.values()} == {"succeeded"}


def test_a_lifted_pause_starts_the_models_work_within_5_s(stack: Stack) -> None:
    # given: a model of its own that a provider's 429 paused for an hour, and a tenant's work on it
    _, key = new_tenant("e2e-unpause")
    model = f"e2e-paused-{uuid.uuid4().hex[:6]}"
    with psycopg.connect((LOCAL / "database_url").read_text().strip(), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO model_limits (model, paused_until, updated_at) VALUES (%s, now() + interval '1 hour', now())",
            (model,),
        )
    body = {"type": "chat", "payload": {"prompt": "Go", "model": model}}
    ids = [create(stack, key, body)["id"] for _ in range(2)]
    time.sleep(SETTLE_S)
    assert {get(stack, key, i)["waitingFor"] for i in ids} == {"rate_limit"}
    # when: the operator lifts the pause
    changed = datetime.now(UTC)
    done = aitasks("models", "resume", model)
    # then: the model's work started within 5 s
    assert done.stdout.startswith(f"{model}: resumed (it was paused until "), done.stdout
    assert "woke 1 task(s) through the local stack's work queue" in done.stderr, done.stderr
    started = first_start(stack, key, ids, timeout_s=30)
    assert (started - changed).total_seconds() < 5, started - changed
    tasks = wait_all(stack, key, ids, timeout_s=60)
    assert {t["status"] for t in tasks.values()} == {"succeeded"}
