"""Limits on the local stack, set with the operator commands: a tenant's budget holds its work back (waitingFor
budget, then 402 at create) and raising it lets the work run; a model's rate limit defers a call to the next minute
(waitingFor rate_limit) without losing it."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import requests

from tests.e2e.conftest import LOCAL, ROOT, Stack, new_tenant
from tests.e2e.test_engine_e2e import create, get, wait_all


def aitasks(*args: str) -> str:
    url = (LOCAL / "database_url").read_text().strip()
    command = [str(Path(sys.executable).with_name("aitasks")), *args, "--database-url", url]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def until(what: Any, timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        found = what()
        if found or time.monotonic() > deadline:
            return found
        time.sleep(1)


def test_a_budget_holds_work_back_refuses_new_work_and_raising_it_runs_the_rest(stack: Stack) -> None:
    # given: a tenant with a $0.005 budget, and four tasks that can cost about $0.0021 each
    tenant, key = new_tenant("e2e-budget")
    shown = aitasks("tenants", "set-limits", tenant, "--monthly-budget-usd", "0.005")
    assert "monthly budget $0.005000 (override)" in shown
    body = {
        "type": "chat",
        "payload": {"prompt": "Spend", "model": "fake-echo-1",
                    "params": {"maxTokens": 1300, "fake": {"outputTokens": 1300, "latencyMs": 500}}},
    }  # fmt: skip
    ids = [create(stack, key, body)["id"] for _ in range(4)]
    # then: two run, the other two wait for budget
    waiting = until(lambda: [i for i in ids if get(stack, key, i)["waitingFor"] == "budget"], 60)
    assert len(waiting) == 2
    usage = requests.get(f"{stack.url}/usage", headers=stack.headers(key), timeout=30).json()
    assert Decimal(usage["spentUsd"]) + Decimal(usage["reservedUsd"]) <= Decimal("0.005")
    # once the month has spent more than a lowered budget, creating is refused with a 402 problem
    aitasks("tenants", "set-limits", tenant, "--monthly-budget-usd", "0.001")
    refused = requests.post(f"{stack.url}/tasks", json=body, headers=stack.headers(key), timeout=30)
    assert refused.status_code == 402, refused.text
    assert refused.json()["type"] == "https://aitasks.dev/problems/budget-exceeded"
    # raising it lets the held-back work run (the sweeper wakes it within a minute)
    aitasks("tenants", "set-limits", tenant, "--monthly-budget-usd", "1")
    tasks = wait_all(stack, key, ids, timeout_s=150)
    assert {t["status"] for t in tasks.values()} == {"succeeded"}


def test_a_models_rate_limit_defers_a_call_to_the_next_minute_without_losing_it(stack: Stack) -> None:
    # given: a model of its own limited to 2 calls a minute (the fake provider takes any model name)
    _, key = new_tenant("e2e-rpm")
    model = f"e2e-model-{uuid.uuid4().hex[:6]}"
    assert aitasks("models", "set-limits", model, "--rpm", "2").strip() == f"{model}: 2 rpm, no tpm"
    body = {"type": "chat", "payload": {"prompt": "Quick", "model": model}}
    ids = [create(stack, key, body)["id"] for _ in range(3)]
    # then: two run at once, the third waits for the limit...
    deferred = until(lambda: [i for i in ids if get(stack, key, i)["waitingFor"] == "rate_limit"], 60)
    assert len(deferred) == 1
    started = time.monotonic()
    # ... and runs once the minute has passed, on its first attempt
    tasks = wait_all(stack, key, ids, timeout_s=120)
    assert {t["status"] for t in tasks.values()} == {"succeeded"}
    assert tasks[deferred[0]]["attemptCount"] == 1
    assert time.monotonic() - started > 30  # it did wait for the window
    assert f"{model}\t-" in aitasks("models", "list")
