"""The heartbeat survives a passing database error, and gives the run up (as a retryable failure) when it cannot
keep the lease."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

from aitasks.adapters.fake_provider import FakeAiProvider
from aitasks.adapters.memory import InMemoryTaskRepository, InMemoryWorkQueue
from aitasks.application.ai import DEFAULT_PRICES
from aitasks.application.dispatch import Dispatcher
from aitasks.application.executor import RunTask
from aitasks.domain.errors import DependencyUnavailableError
from aitasks.domain.retry import RetryPolicy
from aitasks.domain.task import Task, TaskStatus, TenantId


class FlakyLeases(InMemoryTaskRepository):
    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.renewals = 0

    def extend_lease(self, *args: Any, **kwargs: Any) -> Any:
        if self.failures:
            self.failures -= 1
            raise DependencyUnavailableError("database")
        self.renewals += 1
        return super().extend_lease(*args, **kwargs)


def run(repo: InMemoryTaskRepository, *, lease_s: int, latency_ms: int) -> Any:
    task = repo.add(
        Task.submit(
            tenant_id=TenantId("t"),
            type="chat",
            now=datetime.now(UTC),
            payload={"prompt": "p", "params": {"fake": {"latencyMs": latency_ms}}},
        )
    )
    queue = InMemoryWorkQueue()
    runner = RunTask(
        repo,
        queue,
        Dispatcher(queue),
        FakeAiProvider(),
        DEFAULT_PRICES,
        RetryPolicy(),
        lease_s=lease_s,
        heartbeat_s=0.05,
        ai_timeout_s=10,
    )
    return runner(task.id, invocation_id="run-1")


def test_a_passing_error_while_renewing_does_not_end_the_run() -> None:
    repo = FlakyLeases(failures=2)
    report = run(repo, lease_s=150, latency_ms=400)
    assert report.task.status is TaskStatus.SUCCEEDED
    assert repo.renewals >= 1  # it kept beating after the errors


def test_a_lease_that_cannot_be_renewed_ends_in_a_retryable_failure_not_a_cancel() -> None:
    report = run(FlakyLeases(failures=10_000), lease_s=1, latency_ms=3_000)
    assert report.task.status is TaskStatus.FAILED
    assert (report.outcome.error_code, report.outcome.attempt_status) == ("connection", "failed")


def test_model_calls_reuse_an_idle_thread() -> None:
    # given: runs one after another, as an executor environment makes them
    repo = InMemoryTaskRepository()
    before = [t for t in threading.enumerate() if t.name == "model-call"]
    # when
    for _ in range(20):
        assert run(repo, lease_s=150, latency_ms=0).task.status is TaskStatus.SUCCEEDED
    # then: starting a thread per call cost more than a fast call; one thread serves them all
    after = [t for t in threading.enumerate() if t.name == "model-call"]
    assert len(after) <= len(before) + 1
