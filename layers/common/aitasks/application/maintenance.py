"""Keeping the system whole: the sweeper, redrive of dead letters, and retention."""

from __future__ import annotations

import dataclasses
import logging
import time
from datetime import timedelta
from typing import TYPE_CHECKING

from aitasks.application.tasks import utc_now
from aitasks.domain.errors import IllegalTransitionError, TaskNotFoundError
from aitasks.domain.task import TaskStatus

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from datetime import datetime
    from uuid import UUID

    from aitasks.application.dispatch import Dispatcher
    from aitasks.application.ports import Retention, TaskRepository
    from aitasks.domain.task import Task, TenantId

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class PruneReport:
    tasks: int = 0
    outbox_rows: int = 0
    idempotency_keys: int = 0
    tickets: int = 0
    connections: int = 0
    model_calls: int = 0


# API Gateway closes a WebSocket connection after two hours at most; an older row lost its $disconnect.
CONNECTION_MAX_AGE = timedelta(hours=2, minutes=15)
# A rate limit looks at the last 60 s; older calls are kept a little for `aitasks models list`.
MODEL_CALLS_MAX_AGE = timedelta(minutes=10)


@dataclasses.dataclass(frozen=True, slots=True)
class Prune:
    """Delete finished tasks older than `task_days` (with attempts, artifacts, events), published outbox rows
    older than `outbox_days`, expired Idempotency-Key records and WebSocket tickets, connection rows older than any
    live connection can be, and the model calls no rate limit looks at any more. Never a task that is not finished."""

    retention: Retention
    task_days: int = 30
    outbox_days: int = 7
    batch: int = 1000
    prune_tasks: bool = True  # off: only published events and expired keys (task retention is opt-in)
    clock: Callable[[], datetime] = utc_now

    def __call__(self) -> PruneReport:
        now = self.clock()
        task_cutoff, outbox_cutoff = now - timedelta(days=self.task_days), now - timedelta(days=self.outbox_days)
        prune_finished = lambda: self.retention.prune_finished(cutoff=task_cutoff, limit=self.batch)  # noqa: E731
        return PruneReport(
            tasks=self._drain(prune_finished) if self.prune_tasks else 0,
            outbox_rows=self._drain(lambda: self.retention.prune_published(cutoff=outbox_cutoff, limit=self.batch)),
            idempotency_keys=self._drain(lambda: self.retention.prune_expired_keys(now=now, limit=self.batch)),
            tickets=self._drain(lambda: self.retention.prune_expired_tickets(now=now, limit=self.batch)),
            connections=self._drain(
                lambda: self.retention.prune_stale_connections(cutoff=now - CONNECTION_MAX_AGE, limit=self.batch)
            ),
            model_calls=self._drain(
                lambda: self.retention.prune_model_calls(cutoff=now - MODEL_CALLS_MAX_AGE, limit=self.batch)
            ),
        )

    def _drain(self, step: Callable[[], int]) -> int:
        total = 0
        while True:
            deleted = step()
            total += deleted
            if deleted < self.batch:
                return total


@dataclasses.dataclass(frozen=True, slots=True)
class SweepReport:
    leases_freed: int
    redispatched: int
    pruned: PruneReport | None


# A pass of the leases' watch (two statements, each within its cap, and the wake-ups) starts only with this much
# of the invocation left.
LEASE_PASS_S = 15.0


@dataclasses.dataclass(frozen=True, slots=True)
class Sweep:
    """Every minute: close runs whose lease expired (and wake their next attempt), re-send wake-ups for due
    tasks whose message or schedule was lost, and prune (published events and expired keys always, finished
    tasks when retention is on). Safe to run concurrently and repeatedly: every change is a guarded statement,
    and candidates are claimed with SKIP LOCKED.

    With `watch_s`, the invocation goes on closing expired leases every `lease_every_s` until `watch_s` after its
    start; the rest of its work runs once. A killed executor's leases run out at most a lease (20 s) after its
    last beat, and the schedule allows no more than one invocation a minute: watching every 10 s for 50 s (and
    the next minute's invocation then starting 10 s after the last pass) gets its tasks running again within
    about lease + 10 s + a wake-up, about 32 s, instead of lease + a minute. It stays cheap: a pass that finds
    nothing is one probe of the running tasks' index, between passes the invocation sleeps, and it ends before
    the next minute's starts (the function's reserved concurrency is 1: two never overlap). The sleep is billed
    as duration - about 50 s a minute, which is why the template gives the sweeper a small memory size.

    `after_freeing` runs after a pass that closed runs (bootstrap: it publishes their events at once)."""

    tasks: TaskRepository
    dispatch: Dispatcher
    prune: Prune | None = None
    grace_s: int = 120
    batch: int = 500
    clock: Callable[[], datetime] = utc_now
    watch_s: float = 0.0  # 0: the leases are looked at once
    lease_every_s: float = 10.0
    after_freeing: Callable[[], None] | None = None
    sleep: Callable[[float], None] = time.sleep
    monotonic: Callable[[], float] = time.monotonic

    def __call__(self, *, remaining_s: Callable[[], float] | None = None) -> SweepReport:
        """`remaining_s`: the invocation's time left (no pass starts without LEASE_PASS_S of it)."""
        started = self.monotonic()
        freed = self._close_expired()
        now = self.clock()
        due = self.tasks.redispatch_due(now=now, due_before=now - timedelta(seconds=self.grace_s), limit=self.batch)
        for task in due:
            self.dispatch(task, now=now)
        if freed or due:
            logger.info("sweep", extra={"leases_freed": freed, "redispatched": len(due)})
        pruned = self.prune() if self.prune else None
        passes = 1
        while (at := started + passes * self.lease_every_s) <= started + self.watch_s:
            wait = max(0.0, at - self.monotonic())
            if remaining_s is not None and remaining_s() - wait < LEASE_PASS_S:
                break
            self.sleep(wait)
            freed += self._close_expired()
            passes += 1
        return SweepReport(freed, len(due), pruned)

    def _close_expired(self) -> int:
        """Close the runs whose lease expired (the task is woken again at once, or dead-lettered, or cancelled)."""
        now = self.clock()
        expired = self.tasks.expired_leases(now=now, limit=self.batch)
        freed = self.tasks.abandon_expired(expired, now=now) if expired else []
        for task in freed:
            if task.status is TaskStatus.FAILED:
                self.dispatch(task, now=now)
        if freed:
            logger.info("leases freed", extra={"leases_freed": len(freed)})
            if self.after_freeing is not None:
                try:
                    self.after_freeing()
                except Exception:
                    logger.warning("could not publish the freed runs' events; the relay will", exc_info=True)
        return len(freed)


@dataclasses.dataclass(frozen=True, slots=True)
class RedriveTask:
    """POST /tasks/{id}/retry: a dead-lettered task gets a new attempt budget and is queued again."""

    tasks: TaskRepository
    dispatch: Dispatcher
    clock: Callable[[], datetime] = utc_now

    def __call__(self, tenant_id: TenantId, task_id: UUID) -> Task:
        now = self.clock()
        redriven = self.tasks.redrive(now=now, limit=1, task_id=task_id, tenant_id=tenant_id)
        if not redriven:
            current = self.tasks.get(tenant_id, task_id)
            if current is None:
                raise TaskNotFoundError(task_id)
            raise IllegalTransitionError(task_id, current.status, TaskStatus.QUEUED)
        self.dispatch(redriven[0], now=now)
        return redriven[0]


@dataclasses.dataclass(frozen=True, slots=True)
class RedriveDeadLetters:
    """`aitasks tasks redrive`: dead letters (optionally of some types, dead since a time) queued again."""

    tasks: TaskRepository
    dispatch: Dispatcher
    clock: Callable[[], datetime] = utc_now

    def __call__(
        self,
        *,
        types: Sequence[str] | None = None,
        since: datetime | None = None,
        limit: int = 1000,
        dry_run: bool = False,
    ) -> list[Task]:
        if dry_run:
            return self.tasks.dead_letters(limit=limit, types=types, since=since)
        now = self.clock()
        redriven = self.tasks.redrive(now=now, limit=limit, types=types, since=since)
        for task in redriven:
            self.dispatch(task, now=now)
        return redriven
