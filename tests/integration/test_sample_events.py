"""The sample events under events/ (for `sam local invoke -e`) are ones the handlers accept, on an empty
database."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import load_handler

EVENTS = Path(__file__).parents[2] / "events"


def load(name: str) -> dict:
    return json.loads((EVENTS / name).read_text())


@pytest.mark.parametrize(
    ("function", "event", "status"),
    [
        ("create_task", "create_task.json", 202),
        ("query_tasks", "query_tasks_get.json", 404),  # no such task in the empty database
        ("query_tasks", "query_tasks_health.json", 200),
        ("query_tasks", "query_tasks_list.json", 200),
        ("query_tasks", "query_tasks_attempts.json", 404),
        ("query_tasks", "query_tasks_artifacts.json", 404),
        ("query_tasks", "query_tasks_openapi.json", 200),
        ("cancel_task", "cancel_task.json", 404),  # no such task in the empty database
        ("cancel_task", "cancel_task_retry.json", 404),
        ("dashboard", "dashboard.json", 200),
    ],
)
def test_api_events(api, lambda_context, function: str, event: str, status: int) -> None:
    assert load_handler(function).lambda_handler(load(event), lambda_context)["statusCode"] == status


def test_executor_event(api, lambda_context) -> None:
    assert load_handler("executor").lambda_handler(load("executor.json"), lambda_context) == {"batchItemFailures": []}


def test_dlq_event_for_an_unknown_task_changes_nothing(api, db, lambda_context) -> None:
    assert load_handler("dlq_handler").lambda_handler(load("dlq_handler.json"), lambda_context) == {
        "batchItemFailures": []
    }
    assert db().execute("SELECT count(*) AS n FROM tasks").fetchone()["n"] == 0


def test_scheduled_events(api, lambda_context) -> None:
    assert load_handler("outbox_relay").lambda_handler(load("outbox_relay.json"), lambda_context) == {"published": 0}
    report = load_handler("sweeper").lambda_handler(load("sweeper.json"), lambda_context)
    assert report == {
        "leases_freed": 0,
        "redispatched": 0,
        "pruned": {
            "tasks": 0,
            "outbox_rows": 0,
            "idempotency_keys": 0,
            "tickets": 0,
            "connections": 0,
            "model_calls": 0,
        },
    }


def test_live_update_events(api, pusher, lambda_context) -> None:
    with pytest.raises(Exception, match=r"^Unauthorized$"):  # its placeholder ticket was never issued
        load_handler("ws_authorizer").lambda_handler(load("ws_authorizer.json"), lambda_context)
    assert load_handler("websocket").lambda_handler(load("websocket.json"), lambda_context) == {"statusCode": 200}
    report = load_handler("notifier").lambda_handler(load("notifier.json"), lambda_context)
    assert report == {"batchItemFailures": []}  # nobody is connected: nothing pushed
    assert not pusher.pushed


def test_authorizer_event_with_its_placeholder_key_is_denied(api, lambda_context) -> None:
    with pytest.raises(Exception, match=r"^Unauthorized$"):
        load_handler("authorizer").lambda_handler(load("authorizer.json"), lambda_context)
