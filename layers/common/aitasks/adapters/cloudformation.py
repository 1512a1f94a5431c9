"""Answering a CloudFormation custom resource: a PUT of the outcome to the pre-signed ResponseURL."""

from __future__ import annotations

import json
import urllib.request
from typing import Any


def respond(
    event: dict[str, Any],
    *,
    log_stream: str,
    ok: bool,
    reason: str = "",
    data: dict[str, Any] | None = None,
    physical_id: str | None = None,
    timeout_s: float = 10,
) -> None:
    body = json.dumps(
        {
            "Status": "SUCCESS" if ok else "FAILED",
            "Reason": (reason or f"see CloudWatch log stream {log_stream}")[:1000],
            "PhysicalResourceId": physical_id or event.get("PhysicalResourceId") or log_stream,
            "StackId": event["StackId"],
            "RequestId": event["RequestId"],
            "LogicalResourceId": event["LogicalResourceId"],
            "Data": data or {},
        }
    ).encode()
    request = urllib.request.Request(
        event["ResponseURL"], data=body, method="PUT", headers={"Content-Type": "", "Content-Length": str(len(body))}
    )
    with urllib.request.urlopen(request, timeout=timeout_s):
        pass
