"""Wake-ups further ahead than SQS can delay: EventBridge Scheduler one-time schedules targeting the work queue."""

from __future__ import annotations

import contextlib
from datetime import UTC, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datetime import datetime
    from uuid import UUID

    from aitasks.application.ports import WakeUp


def _whole_second_at_or_after(at: datetime) -> datetime:
    at = at.astimezone(UTC)
    return at.replace(microsecond=0) + timedelta(seconds=1) if at.microsecond else at


class EventBridgeScheduler:
    """One schedule per task (named after it) in the stack's group: `at(...)` in UTC, no flexible window, deleted
    by the service after it fires; its target sends the wake-up message to the work queue."""

    def __init__(self, group: str, queue_arn: str, role_arn: str, client: Any = None) -> None:
        self._group = group
        self._queue_arn = queue_arn
        self._role_arn = role_arn
        if client is None:
            import boto3

            client = boto3.client("scheduler")
        self._client = client

    @staticmethod
    def name(task_id: UUID) -> str:
        return f"task-{task_id}"

    def schedule(self, task_id: UUID, wake: WakeUp, *, at: datetime) -> None:
        request = {
            "Name": self.name(task_id),
            "GroupName": self._group,
            # at() takes whole seconds: rounded up, so that the wake-up never comes before its task is due
            "ScheduleExpression": f"at({_whole_second_at_or_after(at).strftime('%Y-%m-%dT%H:%M:%S')})",
            "ScheduleExpressionTimezone": "UTC",
            "FlexibleTimeWindow": {"Mode": "OFF"},
            "ActionAfterCompletion": "DELETE",
            "Target": {
                "Arn": self._queue_arn,
                "RoleArn": self._role_arn,
                "Input": wake.body(),
            },
        }
        try:
            self._client.create_schedule(**request)
        except self._client.exceptions.ConflictException:
            # A schedule for this task exists (an earlier attempt's): move it to the new time.
            self._client.update_schedule(**request)

    def unschedule(self, task_id: UUID) -> None:
        with contextlib.suppress(self._client.exceptions.ResourceNotFoundException):
            self._client.delete_schedule(Name=self.name(task_id), GroupName=self._group)
