"""Example bodies for the OpenAPI document (Swagger UI shows them; Spectral checks them against their schemas)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import JsonValue

TASK_ID = "c87da73e-2a1b-44c2-a765-3b893eed002c"

CREATE_TASK: list[JsonValue] = [
    {"type": "chat", "payload": {"prompt": "Write a haiku about queues"}},
    {
        "type": "summarize",
        "priority": 3,
        "payload": {
            "prompt": "Summarise in one line",
            "context": "aitasks runs AI work asynchronously on AWS.",
            "model": "gpt-4o-mini",
            "params": {"temperature": 0.2, "maxTokens": 200},
        },
        "scheduledAt": "2027-01-01T09:00:00Z",
        "maxAttempts": 5,
        "maxCostUsd": "0.50",
    },
]

TASK: dict[str, JsonValue] = {
    "id": TASK_ID,
    "type": "summarize",
    "priority": 3,
    "status": "succeeded",
    "waitingFor": None,
    "model": "gpt-4o-mini",
    "payload": {"prompt": "Summarise in one line", "context": "aitasks runs AI work asynchronously on AWS."},
    "payloadBytes": 90,
    "scheduledAt": None,
    "attemptCount": 1,
    "maxAttempts": 3,
    "lastError": None,
    "cancelRequested": False,
    "createdAt": "2026-11-27T15:49:55.509966Z",
    "updatedAt": "2026-11-27T15:49:57.520801Z",
    "tokensIn": 12,
    "tokensOut": 13,
    "cost": "0.00000960",
    "maxCostUsd": None,
}

ATTEMPT: dict[str, JsonValue] = {
    "attemptNo": 1,
    "status": "succeeded",
    "model": "gpt-4o-mini",
    "tokensIn": 12,
    "tokensOut": 13,
    "cost": "0.00000960",
    "costEstimated": False,
    "latencyMs": 1840,
    "errorCode": None,
    "errorDetail": None,
    "startedAt": "2026-11-27T15:49:55.612000Z",
    "endedAt": "2026-11-27T15:49:57.452000Z",
}

ARTIFACT: dict[str, JsonValue] = {
    "id": "5b0f7c1e-9d1f-4f5e-8a43-0c2b1f6a9e21",
    "kind": "text",
    "content": "aitasks queues AI prompts and runs them reliably on AWS serverless.",
    "uri": None,
    "createdAt": "2026-11-27T15:49:57.460000Z",
}

EVENT: dict[str, JsonValue] = {
    "id": "0e6a3f55-2c1b-4d7e-9b8a-6f4c2d1e0a9b",
    "seq": 41,
    "eventType": "task.succeeded",
    "status": "succeeded",
    "attemptNo": 1,
    "occurredAt": "2026-11-27T15:49:57.460000Z",
}

USAGE: dict[str, JsonValue] = {
    "period": {"start": "2026-11-01T00:00:00Z", "end": "2026-12-01T00:00:00Z"},
    "budgetUsd": "50.00",
    "spentUsd": "1.23400000",
    "reservedUsd": "0.01000000",
    "maxConcurrency": 10,
    "running": 2,
    "queued": 5,
    "byModel": [
        {
            "model": "gpt-4o-mini",
            "spentUsd": "1.23400000",
            "reservedUsd": "0.01000000",
            "tokensIn": 81234,
            "tokensOut": 40321,
            "attempts": 412,
        }
    ],
}

TICKET: dict[str, JsonValue] = {
    "ticket": "wst_ntWopORI9rTvS4waAgm31IHftze4IcVlW4eQDEAha88",
    "url": "wss://abc123.execute-api.eu-west-1.amazonaws.com/v1",
    "expiresAt": "2026-11-27T15:51:00Z",
}

PROBLEM: dict[str, JsonValue] = {
    "type": "https://aitasks.dev/problems/validation",
    "title": "Unprocessable Content",
    "status": 422,
    "detail": "the request is not valid",
    "instance": "/api/v1/tasks",
    "traceId": "8a3b2f5e-7c1d-4e9a-b6f0-2d4c8e1a3b5c",
    "errors": [{"field": "payload.prompt", "message": "String should have at least 1 character"}],
}
