"""Limits on the local stack, set with the operator commands: a tenant's budget holds its work back (waitingFor
budget, then 402 at create), releases it as holds settle, and raising it lets the rest run; a model's rate limit
spreads its calls over the minute (waitingFor rate_limit) without losing one, and shares them between tenants by
their use of it, not by who queued first."""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import requests

from tests.e2e.conftest import LOCAL, ROOT, Stack, new_tenant
from tests.e2e.test_engine_e2e import at, create, get, wait_all


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
    # raising it lets the held-back work run (the command wakes it)
    aitasks("tenants", "set-limits", tenant, "--monthly-budget-usd", "1")
    tasks = wait_all(stack, key, ids, timeout_s=60)
    assert {t["status"] for t in tasks.values()} == {"succeeded"}


def test_a_models_rate_limit_spreads_its_calls_over_the_minute_without_losing_one(stack: Stack) -> None:
    # given: a model of its own limited to 2 calls a minute (the fake provider takes any model name): one every 30 s
    _, key = new_tenant("e2e-rpm")
    model = f"e2e-model-{uuid.uuid4().hex[:6]}"
    assert aitasks("models", "set-limits", model, "--rpm", "2").strip() == f"{model}: 2 rpm, no tpm"
    body = {"type": "chat", "payload": {"prompt": "Quick", "model": model}}
    ids = [create(stack, key, body)["id"] for _ in range(3)]
    # then: one runs at once, the other two wait for the limit...
    deferred = until(lambda: [i for i in ids if get(stack, key, i)["waitingFor"] == "rate_limit"], 60)
    assert len(deferred) == 2
    # ... and run as the spacing and the window let them, each on its first attempt
    tasks = wait_all(stack, key, ids, timeout_s=150)
    assert {t["status"] for t in tasks.values()} == {"succeeded"}
    assert all(t["attemptCount"] == 1 for t in tasks.values())
    starts = sorted(at(get(stack, key, i, "/attempts")[0]["startedAt"]) for i in ids)
    assert all((b - a).total_seconds() >= 29 for a, b in itertools.pairwise(starts)), starts


def test_a_rate_limited_model_is_shared_by_use_not_by_who_queued_first(stack: Stack) -> None:
    # given: a model at 20 calls a minute (a start every 3 s); tenant A queues 8 tasks, then tenant B 2
    _, key_a = new_tenant("e2e-share-a")
    _, key_b = new_tenant("e2e-share-b")
    model = f"e2e-share-{uuid.uuid4().hex[:6]}"
    aitasks("models", "set-limits", model, "--rpm", "20")
    body = {"type": "chat", "payload": {"prompt": "Quick", "model": model}}
    a = [create(stack, key_a, body)["id"] for _ in range(8)]
    b = [create(stack, key_b, body)["id"] for _ in range(2)]
    # when: all of them have run
    done = {**wait_all(stack, key_a, a, timeout_s=120), **wait_all(stack, key_b, b, timeout_s=60)}
    assert {t["status"] for t in done.values()} == {"succeeded"}
    # then: B's two started among the first five, not last (first come, first served would start them 9th and 10th)
    started = {i: at(get(stack, key_a if i in a else key_b, i, "/attempts")[0]["startedAt"]) for i in a + b}
    order = sorted(started, key=started.__getitem__)
    assert max(order.index(i) for i in b) <= 4, [("B" if i in b else "A") for i in order]


def test_a_budget_releases_held_work_as_its_holds_settle(stack: Stack) -> None:
    # given: a $0.005 budget and 8 tasks that each hold $0.0021 (maxTokens 1300) and really cost about $0.0005
    tenant, key = new_tenant("e2e-release")
    aitasks("tenants", "set-limits", tenant, "--monthly-budget-usd", "0.005")
    body = {
        "type": "chat",
        "payload": {"prompt": "Spend a little", "model": "fake-echo-1",
                    "params": {"maxTokens": 1300, "fake": {"outputTokens": 300, "latencyMs": 300}}},
    }  # fmt: skip
    ids = [create(stack, key, body)["id"] for _ in range(8)]
    # then: more than the two that fit at first run, without any change to the budget, as the holds settle
    ran = until(lambda: len([i for i in ids if get(stack, key, i)["status"] == "succeeded"]) >= 5, 60)
    assert ran
    usage = requests.get(f"{stack.url}/usage", headers=stack.headers(key), timeout=30).json()
    assert Decimal(usage["spentUsd"]) + Decimal(usage["reservedUsd"]) <= Decimal("0.005")
