"""A task as the API answers it (TaskView's JSON), for tests of the client against scripted answers."""

from typing import Any

TASK_JSON: dict[str, Any] = {
    "id": "6009927a-4dc7-4997-a0ab-9dd129a4fdd7", "type": "chat", "priority": 5, "status": "queued",
    "waitingFor": None, "model": "fake-echo-1", "payload": {"prompt": "hi"}, "payloadBytes": 17,
    "scheduledAt": None, "attemptCount": 0, "maxAttempts": 3, "lastError": None, "cancelRequested": False,
    "createdAt": "2026-11-27T10:00:00Z", "updatedAt": "2026-11-27T10:00:00Z", "tokensIn": 0, "tokensOut": 0,
    "cost": None, "maxCostUsd": None,
}  # fmt: skip
