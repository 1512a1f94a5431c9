"""Running a task: claim it with a lease, call the model while a heartbeat renews the lease, record the outcome.

A run ends in exactly one fenced statement (finish): succeeded, failed (retry later), dead_letter or cancelled.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import queue
import threading
import time
from datetime import timedelta
from typing import TYPE_CHECKING

from aitasks.application.ai import AiError, AiRequest, AiResult
from aitasks.application.ports import Artifact, RunOutcome
from aitasks.application.tasks import utc_now
from aitasks.domain.task import TaskStatus
from aitasks.domain.task_types import REGISTRY

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime
    from decimal import Decimal
    from uuid import UUID

    from aitasks.application.ai import AiProvider, PriceTable
    from aitasks.application.dispatch import Dispatcher
    from aitasks.application.ports import TaskRepository, WorkQueue
    from aitasks.domain.retry import RetryPolicy
    from aitasks.domain.task import Task

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class RunReport:
    """What a run did, for metrics and logs."""

    task: Task
    attempt_no: int
    outcome: RunOutcome
    queue_delay_ms: int


class _CallThreads:
    """Daemon threads for model calls, kept for the next run: starting a thread per call cost more than a fast
    model call does (docs/benchmarks.md). A call that was given up (cancel, timeout) keeps its thread until it
    returns; the next run takes another one."""

    def __init__(self) -> None:
        self._idle: queue.SimpleQueue[queue.SimpleQueue[tuple[Callable[[], None], threading.Event]]] = (
            queue.SimpleQueue()
        )

    def run(self, call: Callable[[], None], done: threading.Event) -> None:
        """Run `call` on an idle thread (a new one if none is idle); `done` is set once it returned."""
        try:
            inbox = self._idle.get_nowait()
        except queue.Empty:
            inbox = queue.SimpleQueue()
            threading.Thread(target=self._serve, args=(inbox,), name="model-call", daemon=True).start()
        inbox.put((call, done))

    def _serve(self, inbox: queue.SimpleQueue[tuple[Callable[[], None], threading.Event]]) -> None:
        while True:
            call, done = inbox.get()
            try:
                call()
            finally:
                self._idle.put(inbox)  # idle before done: the next run finds this thread
                done.set()


_CALLS = _CallThreads()


@dataclasses.dataclass(frozen=True, slots=True)
class RunTask:
    """Run the task a wake-up message names. Duplicates, late or early messages and crashed runs are all safe:
    only a claim (one guarded statement) starts a run, and only the lease holder's finish ends it."""

    tasks: TaskRepository
    queue: WorkQueue
    dispatch: Dispatcher
    provider: AiProvider
    prices: PriceTable
    policy: RetryPolicy
    lease_s: int
    heartbeat_s: float
    ai_timeout_s: float
    clock: Callable[[], datetime] = utc_now

    def __call__(self, task_id: UUID, *, invocation_id: str, receipt_handle: str | None = None) -> RunReport | None:
        now = self.clock()
        task = self.tasks.claim(task_id, locked_by=invocation_id, lease_until=self._lease_end(now), now=now)
        if task is None:
            task = self._recover(task_id, invocation_id, now)
            if task is None:
                return None
        queue_delay_ms = max(0, round((now - task.available_at).total_seconds() * 1000))
        outcome = self._run(task, invocation_id, receipt_handle)
        finished = self.tasks.finish(
            task.id, outcome, locked_by=invocation_id, attempt_no=task.attempt_count, now=self.clock()
        )
        if finished is None:
            logger.warning(
                "lease lost before the run ended: its outcome was discarded", extra={"task_id": str(task_id)}
            )
            return None
        if finished.status is TaskStatus.FAILED:
            self._wake_later(finished)
        return RunReport(finished, task.attempt_count, outcome, queue_delay_ms)

    def _lease_end(self, now: datetime) -> datetime:
        return now + timedelta(seconds=self.lease_s)

    def _recover(self, task_id: UUID, invocation_id: str, now: datetime) -> Task | None:
        """The claim got nothing: a duplicate or late message (do nothing), a crashed run whose lease expired
        (close it, then claim), or a message that came before the task's time (wake it again later)."""
        current = self.tasks.get_by_id(task_id)
        if current is None or current.terminal:
            return None
        if current.status is TaskStatus.RUNNING and current.locked_until is not None and current.locked_until < now:
            logger.warning("taking over a run whose lease expired", extra={"task_id": str(task_id)})
            closed = self.tasks.abandon_expired([task_id], now=now)
            if not closed or closed[0].status is not TaskStatus.FAILED:
                return None
            return self.tasks.claim(task_id, locked_by=invocation_id, lease_until=self._lease_end(now), now=now)
        if current.status in (TaskStatus.QUEUED, TaskStatus.FAILED) and current.available_at > now:
            self._wake_later(current)
        return None

    def _wake_later(self, task: Task) -> None:
        self.dispatch(task, now=self.clock())

    def _run(self, task: Task, invocation_id: str, receipt_handle: str | None) -> RunOutcome:
        request = AiRequest.from_payload(task.type, task.payload, attempt_no=task.attempt_count)
        done = threading.Event()
        result: list[AiResult | AiError] = []

        def call() -> None:
            try:
                result.append(self.provider.complete(request, timeout_s=self.ai_timeout_s))
            except AiError as exc:
                result.append(exc)
            except Exception as exc:  # a provider bug must not hang the run: record it as an unknown error
                logger.exception("the provider raised something other than AiError")
                result.append(AiError("unknown", f"{type(exc).__name__}: {exc}"))

        started = time.perf_counter()
        _CALLS.run(call, done)
        stopped = self._wait(task, invocation_id, receipt_handle, done, started)
        elapsed_ms = round((time.perf_counter() - started) * 1000)
        if not result and stopped == "cancel":
            # A cancelled call is abandoned (best effort): its tokens, if any, are not known here.
            return RunOutcome(
                TaskStatus.CANCELLED,
                "cancelled",
                latency_ms=elapsed_ms,
                error_code="cancelled",
                error_detail="cancelled while the model was working",
                model=request.model,
            )
        if not result and stopped == "timeout":
            result.append(AiError("timeout", "the provider did not return within its timeout"))
        if not result:
            # The lease could not be kept: a retryable failure (if another run took the task over, the fenced
            # finish writes nothing anyway).
            result.append(AiError("connection", "the run could not renew its lease"))
        answer = result[0]
        if isinstance(answer, AiResult):
            try:
                return self._succeeded(task, answer)
            except AiError as exc:
                answer = exc
        return self._failed(task, answer, elapsed_ms, request.model)

    def _wait(
        self, task: Task, invocation_id: str, receipt_handle: str | None, done: threading.Event, started: float
    ) -> str | None:
        """Wait for the model call, renewing the lease every `heartbeat_s` (the heartbeat); None when the call
        returned, else why the run stopped waiting: "cancel" (requested), "lease" (it could not be kept), "timeout"."""
        deadline = started + self.ai_timeout_s + 5
        next_beat = started + self.heartbeat_s
        held_until = self._lease_end(self.clock())
        while not done.wait(max(0.0, min(next_beat, deadline) - time.perf_counter())):
            now = time.perf_counter()
            if now >= deadline:
                return "timeout"
            if now < next_beat:
                continue
            next_beat = now + self.heartbeat_s
            until = self._lease_end(self.clock())
            try:
                lease = self.tasks.extend_lease(
                    task.id, locked_by=invocation_id, attempt_no=task.attempt_count, lease_until=until
                )
            except Exception:
                # A passing database error: keep beating while the lease we hold lasts; past it, give the run up
                # rather than race the run that takes it over.
                logger.warning("could not renew the lease", exc_info=True, extra={"task_id": str(task.id)})
                if self.clock() >= held_until:
                    return "lease"
                continue
            if lease is None:
                return "lease"
            held_until = until
            if lease.cancel_requested:
                return "cancel"
            if receipt_handle is not None:
                try:
                    self.queue.extend_visibility(receipt_handle, self.lease_s * 2)
                except Exception:
                    logger.warning("could not extend the message's visibility", exc_info=True)
        return None

    def _succeeded(self, task: Task, answer: AiResult) -> RunOutcome:
        kind = REGISTRY[task.type].artifact_kind if task.type in REGISTRY else "text"
        content = answer.text
        if kind == "json":
            content = _valid_json(answer.text, (task.payload.get("params") or {}).get("schema") or {})
        return RunOutcome(
            TaskStatus.SUCCEEDED,
            "succeeded",
            model=answer.model,
            tokens_in=answer.usage.tokens_in,
            tokens_out=answer.usage.tokens_out,
            cost=self._cost(answer.model, answer),
            latency_ms=answer.latency_ms,
            artifact=Artifact(kind, content),
        )

    def _cost(self, model: str, answer: AiResult) -> Decimal | None:
        cost = self.prices.cost(model, answer.usage)
        if cost is None:
            logger.warning("no price for this model: the attempt's cost is recorded as unknown", extra={"model": model})
        return cost

    def _failed(self, task: Task, error: AiError, elapsed_ms: int, model: str | None) -> RunOutcome:
        usage = error.usage
        decision = self.policy.decide(
            attempt_no=task.attempts_in_budget,
            retryable=error.retryable,
            now=self.clock(),
            max_attempts=task.max_attempts,
            retry_after_s=error.retry_after_s,
        )
        status = TaskStatus.FAILED if decision.retry else TaskStatus.DEAD_LETTER
        return RunOutcome(
            status,
            "failed",
            model=model,
            tokens_in=usage.tokens_in if usage else None,
            tokens_out=usage.tokens_out if usage else None,
            cost=self.prices.cost(model, usage) if usage and model else None,
            latency_ms=elapsed_ms,
            error_code=error.code,
            error_detail=error.detail,
            available_at=decision.at,
        )


def _valid_json(text: str, schema: dict[str, object]) -> str:
    """The answer as compact JSON if it parses and matches the task's schema; else a retryable invalid_output."""
    from jsonschema import Draft202012Validator  # only extract tasks need it: kept off the cold start

    try:
        value = json.loads(text)
    except ValueError as exc:
        raise AiError("invalid_output", f"the answer is not JSON: {exc}") from exc
    errors = sorted(Draft202012Validator(schema).iter_errors(value), key=lambda e: list(e.path))
    if errors:
        where = "/".join(str(p) for p in errors[0].path) or "(root)"
        raise AiError("invalid_output", f"the answer does not match the schema at {where}: {errors[0].message}")
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


@dataclasses.dataclass(frozen=True, slots=True)
class DeadLetterTask:
    """A message reached the DLQ: its task is dead-lettered (unless it already finished)."""

    tasks: TaskRepository
    clock: Callable[[], datetime] = utc_now

    def __call__(self, task_id: UUID, *, attempt_no: int, receive_count: int | None) -> Task | None:
        reason = f"dlq: its message was received {receive_count or 'too many'} times without an outcome"
        return self.tasks.dead_letter(task_id, attempt_no=attempt_no, reason=reason, now=self.clock())
