"""The engine on the local stack, as real AI work arrives: slow calls due together run at the same time, and a
tenant's concurrency cap (set with `aitasks tenants set-limits`) holds back its work without losing any."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests

from tests.e2e.conftest import LOCAL, ROOT, Stack, new_tenant


def create(stack: Stack, key: str, body: dict[str, Any]) -> dict[str, Any]:
    response = requests.post(f"{stack.url}/tasks", json=body, headers=stack.headers(key), timeout=30)
    assert response.status_code == 202, response.text
    return response.json()


def get(stack: Stack, key: str, task_id: str, what: str = "") -> Any:
    response = requests.get(f"{stack.url}/tasks/{task_id}{what}", headers=stack.headers(key), timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def wait_all(stack: Stack, key: str, ids: list[str], timeout_s: float) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while True:
        tasks = {i: get(stack, key, i) for i in ids}
        if all(t["status"] in ("succeeded", "dead_letter", "cancelled") for t in tasks.values()):
            return tasks
        assert time.monotonic() < deadline, {i: t["status"] for i, t in tasks.items()}
        time.sleep(1)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_ten_slow_calls_due_together_run_at_the_same_time(stack: Stack) -> None:
    # given: a tenant of its own (the standard cap: 10) and ten chats whose model takes 10 s, all due at one moment
    _, key = new_tenant("e2e-burst")
    due = (datetime.now(UTC) + timedelta(seconds=20)).replace(microsecond=0)
    body = {
        "type": "chat",
        "scheduledAt": due.isoformat(),
        "payload": {"prompt": "Write slowly", "params": {"fake": {"latencyMs": 10_000}}},
    }
    ids = [create(stack, key, body)["id"] for _ in range(10)]
    # when they come due
    tasks = wait_all(stack, key, ids, timeout_s=90)
    # then: all ten succeeded with one attempt each, the last within 20 s of when they were due (serially: 100 s)
    assert {t["status"] for t in tasks.values()} == {"succeeded"}
    attempts = [a for i in ids for a in get(stack, key, i, "/attempts")]
    assert [a["attemptNo"] for a in attempts] == [1] * 10
    last = max(at(a["endedAt"]) for a in attempts)
    assert last - due < timedelta(seconds=20), last - due


def test_a_tenant_capped_at_two_runs_two_at_a_time_and_says_why_the_rest_wait(stack: Stack) -> None:
    # given: a tenant whose operator capped it at two runs
    tenant, key = new_tenant("e2e-capped")
    set_limits = [str(Path(sys.executable).with_name("aitasks")), "tenants", "set-limits", tenant]
    url = (LOCAL / "database_url").read_text().strip()
    done = subprocess.run(
        [*set_limits, "--max-concurrency", "2", "--database-url", url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "max concurrency 2 (override)" in done.stdout
    # when: five tasks of 4 s arrive together
    body = {"type": "chat", "payload": {"prompt": "Take your time", "params": {"fake": {"latencyMs": 4_000}}}}
    ids = [create(stack, key, body)["id"] for _ in range(5)]
    seen_waiting = False
    deadline = time.monotonic() + 30
    while not seen_waiting and time.monotonic() < deadline:
        seen_waiting = any(get(stack, key, i)["waitingFor"] == "concurrency" for i in ids)
        time.sleep(0.5)
    tasks = wait_all(stack, key, ids, timeout_s=90)
    # then: the API said why some waited; all ran once, never more than two at a time
    assert seen_waiting
    assert {t["status"] for t in tasks.values()} == {"succeeded"}
    attempts = [a for i in ids for a in get(stack, key, i, "/attempts")]
    assert [a["attemptNo"] for a in attempts] == [1] * 5
    edges = sorted([(at(a["startedAt"]), 1) for a in attempts] + [(at(a["endedAt"]), -1) for a in attempts])
    level = peak = 0
    for _, step in edges:
        level += step
        peak = max(peak, level)
    assert peak == 2
    shown = subprocess.run([*set_limits, "--database-url", url], cwd=ROOT, capture_output=True, text=True, check=True)
    assert "running 0, queued 0" in shown.stdout
