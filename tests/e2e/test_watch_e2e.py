"""`make run` watches the code: a saved handler change answers from the running stack within 15 s."""

from __future__ import annotations

import time
import uuid

import requests

from tests.e2e.conftest import ROOT, Stack

HANDLER = ROOT / "functions" / "query_tasks" / "app.py"
HEALTH = 'return {"status": "ok"}'


def health_becomes(stack: Stack, wanted: dict[str, str], within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if requests.get(f"{stack.url}/health", timeout=30).json() == wanted:
            return True
        time.sleep(0.2)
    return False


def test_a_saved_handler_change_answers_within_15_s_and_the_file_is_restored(stack: Stack) -> None:
    original = HANDLER.read_text()
    assert original.count(HEALTH) == 1, f"{HANDLER} no longer answers health with {HEALTH}: update this test"
    token = uuid.uuid4().hex
    try:
        HANDLER.write_text(original.replace(HEALTH, f'return {{"status": "ok", "sync": "{token}"}}'))
        assert health_becomes(stack, {"status": "ok", "sync": token}, within_s=15), "the change was not live in 15 s"
    finally:
        HANDLER.write_text(original)
    assert health_becomes(stack, {"status": "ok"}, within_s=60), "the restored handler was not live again in 60 s"
