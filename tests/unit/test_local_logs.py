"""`aitasks local logs` shows a Powertools record as one line and any other output as it is."""

from __future__ import annotations

import json

from aitasks_cli.local_logs import log_line

RECORD = {
    "level": "INFO",
    "location": "create_task:55",
    "message": "task accepted",
    "timestamp": "2026-11-24 23:08:54,682+0000",
    "service": "aitasks",
    "function_name": "aitasks-local-CreateTaskFunction-81DD772CD409C",
    "tenant_id": "local",
    "task_id": "189989b6-1ff5-4e05-99f9-91a51bf2d2a5",
}


def test_a_record_is_one_line_with_time_level_function_task_and_message() -> None:
    assert log_line("create_task", json.dumps(RECORD)) == (
        "2026-11-24 23:08:54,682+0000 INFO    create_task  task 189989b6-1ff5-4e05-99f9-91a51bf2d2a5 task accepted"
    )


def test_a_record_without_a_task_leaves_the_task_out() -> None:
    record = {"level": "WARNING", "message": "database connection lost; reconnecting", "timestamp": "t"}
    assert log_line("sweeper", json.dumps(record)) == "t WARNING sweeper      database connection lost; reconnecting"


def test_an_exception_follows_its_record() -> None:
    record = {**RECORD, "level": "ERROR", "message": "unhandled error", "exception": "Traceback ...\nValueError: x"}
    assert log_line("create_task", json.dumps(record)) == (
        "2026-11-24 23:08:54,682+0000 ERROR   create_task  task 189989b6-1ff5-4e05-99f9-91a51bf2d2a5 unhandled error\n"
        "Traceback ...\nValueError: x"
    )


def test_other_output_is_shown_as_it_is() -> None:
    for message in ("Traceback (most recent call last):", "plain print output\n", '{"not": "a record"}', "[1, 2]"):
        assert log_line("executor", message) == message.rstrip("\n")


def test_ministacks_invocation_lines_and_metrics_documents_are_left_out() -> None:
    metrics = {"_aws": {"Timestamp": 1, "CloudWatchMetrics": []}, "service": "aitasks", "TasksCreated": [1.0]}
    for message in (
        "START RequestId: 68225885 Version: $LATEST",
        "END RequestId: 68225885",
        "REPORT RequestId: 68225885\tDuration: 12 ms",
        json.dumps(metrics),
    ):
        assert log_line("create_task", message) is None
