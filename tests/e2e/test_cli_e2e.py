"""`aitasks tasks ...` against the running local stack, as a user runs it (a subprocess, real HTTP)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import ROOT, Stack


def aitasks(
    stack: Stack, *args: str, key: str | None = None, url: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AITASKS_API_URL": url or stack.url, "AITASKS_API_KEY": key or stack.key}
    return subprocess.run(
        [str(Path(sys.executable).with_name("aitasks")), "tasks", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_create_wait_then_find_it_everywhere(stack: Stack) -> None:
    done = aitasks(stack, "create", "--wait", "--json", "-p", "Say hello from the CLI", "--priority", "1")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    task, [artifact] = result["task"], result["artifacts"]
    assert task["status"] == "succeeded" and "Say hello from the CLI" in artifact["content"]

    listed = aitasks(stack, "list", "--status", "succeeded", "--page-size", "100")
    assert listed.returncode == 0 and task["id"] in listed.stdout
    assert json.loads(aitasks(stack, "get", task["id"], "--json").stdout) == task
    [attempt] = json.loads(aitasks(stack, "attempts", task["id"], "--json").stdout)
    assert (attempt["status"], attempt["model"]) == ("succeeded", "fake-echo-1")
    text = aitasks(stack, "create", "--wait", "-p", "Plain text please")
    assert text.returncode == 0 and "Plain text please" in text.stdout and "succeeded" in text.stderr


def test_a_scheduled_task_is_cancelled_and_problems_and_outages_have_their_exit_codes(stack: Stack) -> None:
    later = json.loads(aitasks(stack, "create", "--json", "-p", "Later", "--at", "+1h").stdout)
    assert later["status"] == "queued" and later["scheduledAt"]
    cancelled = aitasks(stack, "cancel", later["id"])
    assert cancelled.returncode == 0 and cancelled.stdout.startswith("cancelled")
    again = aitasks(stack, "create", "--wait", "-p", "x", "--max-attempts", "1", "--param",
                    'fake={"failAttempts": 1, "error": "bad_request"}')  # fmt: skip
    assert again.returncode == 4 and "dead_letter" in again.stderr

    missing = aitasks(stack, "get", "00000000-0000-0000-0000-000000000000")
    assert missing.returncode == 1 and missing.stderr.startswith("404 Not Found") and "Traceback" not in missing.stderr
    assert aitasks(stack, "list", key="ait_not-a-key").returncode == 1
    down = aitasks(stack, "list", url="http://127.0.0.1:9/api/v1")
    assert down.returncode == 3 and "cannot reach the API" in down.stderr


def test_the_demo_brings_every_kind_of_task_to_its_end(stack: Stack) -> None:
    env = {**os.environ, "AITASKS_API_URL": stack.url, "AITASKS_API_KEY": stack.key}
    demo = subprocess.run(
        [str(Path(sys.executable).with_name("aitasks")), "demo", "--timeout", "120"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stderr
    expected = {
        "chat": ("succeeded", "1/3"),
        "summarize": ("succeeded", "1/3"),
        "extract → JSON": ("succeeded", "1/3"),
        "priority 0": ("succeeded", "1/3"),
        "scheduled in 20 s": ("succeeded", "1/3"),
        "fails once, retried": ("succeeded", "2/3"),
        "fails for good": ("dead_letter", "1/2"),
        "cancelled": ("cancelled", "0/3"),
    }
    last_table = demo.stdout.split("aitasks demo ·")[-1]
    for what, (status, tries) in expected.items():
        [line] = [line for line in last_table.splitlines() if line.startswith(what + " ")]
        assert f" {status} " in line and f" {tries} " in line, line
