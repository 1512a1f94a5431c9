"""`aitasks local logs`: the local functions' logs, one readable line per Powertools record.

MiniStack writes each invocation's output to CloudWatch Logs (group /aws/lambda/<function>, a stream per
invocation, every line stamped when the invocation ends); this reads it through the Logs API at the stack's endpoint.
"""

from __future__ import annotations

import json
import time
from typing import Any

from aitasks_cli.local_stack import aws_client

# MiniStack's own lines around each invocation: they carry only the request id and the duration.
_PLATFORM = ("START RequestId:", "END RequestId:", "REPORT RequestId:")
# Lines are stamped when their invocation ends: a window that ended this long ago has all its lines.
_SETTLED_MS = 1000


def log_line(function: str, message: str) -> str | None:
    """A Powertools JSON record as `time level function [task id] message` (its traceback on the lines below); any
    other output as it is; None for MiniStack's START/END/REPORT lines and for metrics (EMF) documents."""
    try:
        record = json.loads(message)
    except ValueError:
        record = None
    if not isinstance(record, dict):
        return None if message.startswith(_PLATFORM) else message.rstrip("\n")
    if "_aws" in record:
        return None
    if "level" not in record or "message" not in record:
        return message.rstrip("\n")
    fields = [str(record.get("timestamp", "")), f"{record['level']:<7}", f"{function:<12}"]
    if record.get("task_id"):
        fields.append(f"task {record['task_id']}")
    fields.append(str(record["message"]))
    line = " ".join(fields)
    return f"{line}\n{record['exception']}" if record.get("exception") else line


def _events(client: Any, functions: dict[str, str], start_ms: int, end_ms: int) -> list[tuple[int, str, str]]:
    """(timestamp, function, message) of the functions' log events in [start_ms, end_ms], oldest first."""
    events = []
    for function, deployed in functions.items():
        pages = client.get_paginator("filter_log_events").paginate(
            logGroupName=f"/aws/lambda/{deployed}", startTime=start_ms, endTime=end_ms
        )
        try:
            events += [(e["timestamp"], function, e["message"]) for page in pages for e in page["events"]]
        except client.exceptions.ResourceNotFoundException:
            continue  # not invoked yet
    return sorted(events, key=lambda event: event[0])


def show(endpoint: str, functions: dict[str, str], *, follow: bool, poll_s: float = 1.0) -> None:
    """Print the functions' (directory name -> deployed name) logs so far; with `follow`, then new ones as they come."""
    client = aws_client("logs", endpoint)
    start_ms = 0
    while True:
        end_ms = int(time.time() * 1000) - (_SETTLED_MS if follow else 0)
        for _, function, message in _events(client, functions, start_ms, end_ms):
            line = log_line(function, message)
            if line is not None:
                print(line, flush=True)
        if not follow:
            return
        start_ms = end_ms + 1
        time.sleep(poll_s)
