"""Waking an executor when there is due work: an SQS delay up to 15 minutes, an EventBridge Scheduler one-time
schedule beyond that."""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING

from aitasks.application.ports import WakeUp

if TYPE_CHECKING:
    from datetime import datetime

    from aitasks.application.ports import Scheduler, WorkQueue
    from aitasks.domain.task import Task

logger = logging.getLogger(__name__)

# SQS DelaySeconds can postpone a message by at most 15 minutes.
MAX_QUEUE_DELAY_S = 900


@dataclasses.dataclass(frozen=True, slots=True)
class Dispatcher:
    """A wake-up names its tenant (the message group, so SQS fair queues keep a quiet tenant's wait short), the
    task that caused it and the time it is for. Without a scheduler a far-off wake-up is sent with the longest
    delay; it comes early, and the executor sends it again for the rest of the wait."""

    queue: WorkQueue
    scheduler: Scheduler | None = None
    # Wake-ups further ahead than this go to the scheduler (SQS allows at most 900 s; the local stack uses less so
    # that its schedules are exercised within a minute or two).
    max_queue_delay_s: int = MAX_QUEUE_DELAY_S

    def __call__(self, task: Task, *, now: datetime) -> None:
        """Wake an executor when `task` is next due. Failures are logged, not raised: the task is stored, and
        the sweeper re-sends wake-ups that were lost."""
        self.wake(WakeUp(tenant_id=task.tenant_id, task_id=task.id, at=task.available_at), now=now)

    def wake(self, wake: WakeUp, *, now: datetime) -> None:
        """Send `wake` so that it arrives at its time (at once when it has none, or its time has come)."""
        delay = (wake.at - now).total_seconds() if wake.at else 0.0
        try:
            if delay > self.max_queue_delay_s and self.scheduler is not None and wake.task_id is not None:
                assert wake.at is not None
                self.scheduler.schedule(wake.task_id, wake, at=wake.at)
            else:
                # Rounded up: a message a fraction of a second early would only be sent again.
                wait = max(0, min(self.max_queue_delay_s, int(delay) + (1 if delay % 1 else 0)))
                self.queue.send(wake, delay_s=wait)
        except Exception:
            logger.exception("wake-up not sent; the sweeper will send one", extra={"task_id": str(wake.task_id)})

    def cancel(self, task: Task, *, now: datetime) -> None:
        """A cancelled task's far-off schedule is deleted (best effort: a wake-up for it would do nothing)."""
        if self.scheduler is None or (task.available_at - now).total_seconds() <= self.max_queue_delay_s:
            return
        try:
            self.scheduler.unschedule(task.id)
        except Exception:
            logger.warning("could not delete the task's schedule", exc_info=True, extra={"task_id": str(task.id)})
