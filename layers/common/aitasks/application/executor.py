"""The engine of an executor invocation: claim the best due work, run its model calls at the same time, keep every
run's lease with one heartbeat, end the runs in batches, and claim again as slots free while time allows.

Wake-ups only say that there is work; which tasks run is decided by the claim statement in Postgres (fair share
across tenants, priority, age, each tenant's cap). Every run ends in a fenced statement: succeeded, failed (retry
later), dead_letter or cancelled; a run whose lease was taken over changes nothing. A run is one attempt of a task,
known by (task id, attempt number) everywhere here: one task can have two attempts in one invocation (the first lost
its lease while its call went on, and the task came back here).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import queue
import threading
import time
from collections import Counter
from datetime import timedelta
from typing import TYPE_CHECKING

from aitasks.application.ai import ERROR_CLASSES, AiError, AiRequest, AiResult
from aitasks.application.ports import Artifact, FinishedRun, RunOutcome, WakeUp
from aitasks.application.tasks import utc_now
from aitasks.domain.errors import DependencyUnavailableError
from aitasks.domain.retry import clamp_wait_s
from aitasks.domain.schemas import validator
from aitasks.domain.task import TaskStatus
from aitasks.domain.task_types import REGISTRY

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence
    from contextlib import AbstractContextManager
    from datetime import datetime
    from decimal import Decimal
    from uuid import UUID

    from aitasks.application.ai import AiProvider, ErrorClass, PriceTable, Usage
    from aitasks.application.dispatch import Dispatcher
    from aitasks.application.ports import Delivery, Lease, TaskRepository, WorkQueue
    from aitasks.domain.retry import RetryPolicy
    from aitasks.domain.task import Task, TenantId

    RunKey = tuple[UUID, int]  # (task id, attempt number)

logger = logging.getLogger(__name__)

# A wake-up handed back (nothing could be started before the deadline) is visible again after this.
HAND_BACK_DELAY_S = 5
# ... and after this when the database could not be reached to claim.
DATABASE_DOWN_DELAY_S = 30
# Runs whose outcome could not be written are tried again this often (while their leases last).
FINISH_RETRY_S = 1.0
# A heartbeat that could not reach the database is tried again this soon (not a whole heartbeat later).
BEAT_RETRY_S = 2.0
# Outcomes that could not be written are retried until the invocation has this little time left.
FINISH_GIVE_UP_S = 2.0

# What a tenant reads on an attempt the executor itself failed (never an exception's text).
NOT_STARTED = "the executor could not start the model call"
NO_OUTCOME = "the executor could not record the model's answer"
BATCH_FAILED = "the executor failed while the model was working"


@dataclasses.dataclass(frozen=True, slots=True)
class RunReport:
    """What a run did, for metrics and logs."""

    task: Task
    attempt_no: int
    outcome: RunOutcome
    queue_delay_ms: int


@dataclasses.dataclass(frozen=True, slots=True)
class BatchReport:
    """What an invocation did with its wake-ups."""

    runs: list[RunReport]
    claimed: int = 0
    handed_back: list[str] = dataclasses.field(default_factory=list)  # message ids, visible again soon


class _CallThreads:
    """Daemon threads for model calls, kept for the next call: starting a thread per call cost more than a fast
    model call does (docs/benchmarks.md). A call that was given up (cancel, timeout, lost lease) keeps its thread
    until it returns; other calls take other threads meanwhile."""

    def __init__(self) -> None:
        self._idle: queue.SimpleQueue[queue.SimpleQueue[Callable[[], None]]] = queue.SimpleQueue()

    def run(self, call: Callable[[], None]) -> None:
        """Run `call` on an idle thread (a new one if none is idle)."""
        try:
            inbox = self._idle.get_nowait()
        except queue.Empty:
            inbox = queue.SimpleQueue()
            threading.Thread(target=self._serve, args=(inbox,), name="model-call", daemon=True).start()
        inbox.put(call)

    def _serve(self, inbox: queue.SimpleQueue[Callable[[], None]]) -> None:
        while True:
            call = inbox.get()
            try:
                call()
            finally:
                self._idle.put(inbox)


_CALLS = _CallThreads()


@dataclasses.dataclass(slots=True, eq=False)
class _Run:
    """A claimed task whose model call is under way."""

    task: Task
    request: AiRequest
    queue_delay_ms: int
    started: float  # perf_counter
    answer: AiResult | AiError | None = None
    stopped: str | None = None  # why the run stopped waiting for its call: cancel, timeout

    @property
    def key(self) -> RunKey:
        return self.task.id, self.task.attempt_count


@dataclasses.dataclass(frozen=True, slots=True)
class _Done:
    """A run that ended, and how: what its finish writes (or, while the database is away, keeps to write again)."""

    task: Task
    queue_delay_ms: int
    outcome: RunOutcome

    @property
    def key(self) -> RunKey:
        return self.task.id, self.task.attempt_count


@dataclasses.dataclass(frozen=True, slots=True)
class _Beat:
    """What one heartbeat found: of the runs whose leases it renewed (`keys`), those this invocation still holds."""

    keys: tuple[RunKey, ...]
    held: Mapping[RunKey, Lease]


@dataclasses.dataclass(frozen=True, slots=True)
class Execute:
    """One executor invocation. It received `len(deliveries)` wake-ups, so it keeps that many runs going: it claims
    as many of the best due tasks, starts their model calls at once, and each time runs end (their finishes go in
    one statement) it claims again for the free slots - as long as a new call could still finish before the
    invocation's deadline (`remaining_s() - margin_s >= ai_timeout_s`). Nothing that cannot finish is started:
    with too little time left it claims nothing and hands its wake-ups back (visible again soon, no attempt
    counted). Runs that end after the last possible claim wake others, at once, for the work their slots free.

    The heartbeat renews the runs' leases on a thread and a connection of its own (`leases`), so a claim or a finish
    that waits (on the claim gate, a lock, a slow database) never makes a lease run out. A run the executor itself
    fails (its call cannot be started, its outcome not made) is handed back at once - failed, to run again - rather
    than left running until its lease runs out.

    Duplicate, late and stray wake-ups are harmless: a wake-up that finds nothing due costs one statement."""

    tasks: TaskRepository
    queue: WorkQueue
    dispatch: Dispatcher
    provider: AiProvider
    prices: Callable[[], PriceTable]  # the model prices (a cached copy of the database's)
    policy: RetryPolicy
    lease_s: int
    heartbeat_s: float
    ai_timeout_s: float
    margin_s: float = 10.0
    max_parallel: int = 10
    clock: Callable[[], datetime] = utc_now
    # The heartbeat's repository, on a connection of its own (bootstrap.lease_repository). None: `tasks`, whose
    # connection the heartbeat then takes turns on (a psycopg connection serves one thread at a time), so a beat may
    # wait behind a claim or a finish - for tests that need no more.
    leases: TaskRepository | None = None
    max_pause_s: float = 300.0  # AI_MAX_PAUSE_SECONDS: the longest a 429's Retry-After pauses its model
    account_pause_s: float = 300.0  # AI_ACCOUNT_PAUSE_SECONDS: a quota or auth error's pause, and its retry

    def __call__(
        self, deliveries: Sequence[Delivery], *, invocation_id: str, remaining_s: Callable[[], float]
    ) -> BatchReport:
        now = self.clock()
        due = [d for d in deliveries if not self._early(d.wake, now)]
        if not due:
            return BatchReport([])
        # A wake-up a claim sent for a rate-limited model's room asks for the slots that room holds.
        slots = min(sum(d.wake.slots or 1 for d in due), self.max_parallel)
        if remaining_s() - self.margin_s < self.ai_timeout_s:
            logger.warning("too little time left to start a model call: the wake-ups go back to the queue")
            return self._hand_back(due, HAND_BACK_DELAY_S)
        try:
            batch = _Batch(self, self.prices(), invocation_id, slots, remaining_s)
            batch.claim()
        except DependencyUnavailableError:
            logger.warning("the database is unreachable: the wake-ups go back to the queue", exc_info=True)
            return self._hand_back(due, DATABASE_DOWN_DELAY_S)
        except Exception:
            logger.exception("the claim failed: the wake-ups go back to the queue")
            return self._hand_back(due, DATABASE_DOWN_DELAY_S)
        return batch.run()

    def _early(self, wake: WakeUp, now: datetime) -> bool:
        """A wake-up that came before its time (its delay was capped, or a clock is ahead) is sent again for the
        rest of the wait: a claim now would not find its task due."""
        if wake.at is None or wake.at <= now:
            return False
        self.dispatch.wake(wake, now=now)
        return True

    def _hand_back(self, deliveries: Sequence[Delivery], delay_s: int) -> BatchReport:
        for delivery in deliveries:
            try:
                self.queue.change_visibility(delivery.receipt_handle, delay_s)
            except Exception:
                logger.warning("could not shorten a wake-up's visibility", exc_info=True)
        return BatchReport([], handed_back=[d.message_id for d in deliveries])

    def lease_end(self, now: datetime) -> datetime:
        return now + timedelta(seconds=self.lease_s)

    def can_start_a_call(self, remaining_s: float) -> bool:
        return remaining_s - self.margin_s >= self.ai_timeout_s

    @property
    def call_grace_s(self) -> float:
        """How long past its timeout a call is waited for before the run gives it up: within the margin, so that
        the run's finish still fits in the invocation."""
        return min(5.0, self.margin_s / 2)

    def outcome(self, run: _Run, elapsed_ms: int, prices: PriceTable) -> RunOutcome:
        """How a run ended, from its model call's answer or the reason it stopped waiting for one. It never raises:
        a run whose outcome cannot be made is handed back, so that one bad answer cannot lose its batch's ends."""
        try:
            return self._outcome(run, elapsed_ms, prices)
        except Exception:
            logger.exception(
                "a run's outcome could not be made: it is handed back", extra={"task_id": str(run.task.id)}
            )
            # its call was made: it may have been billed
            return self.handed_back(run.task, NO_OUTCOME, charge_held=True)

    def handed_back(self, task: Task, detail: str, *, charge_held: bool) -> RunOutcome:
        """The end of a run the executor itself failed: failed (`unknown`), to run again after the usual backoff -
        or dead-lettered if that was its last attempt - instead of when the sweeper finds its lease run out.
        `charge_held`: whether its call was made (and so may have been billed)."""
        decision = self.policy.decide(
            attempt_no=task.attempts_in_budget, retryable=True, now=self.clock(), max_attempts=task.max_attempts
        )
        return RunOutcome(
            TaskStatus.FAILED if decision.retry else TaskStatus.DEAD_LETTER,
            "failed",
            model=task.model,
            error_code="unknown",
            error_detail=detail,
            available_at=decision.at,
            charge_held=charge_held,
        )

    def _outcome(self, run: _Run, elapsed_ms: int, prices: PriceTable) -> RunOutcome:
        answer = run.answer
        if answer is None and run.stopped == "cancel":
            # A cancelled call is abandoned (best effort): its tokens, if any, are not known here.
            return RunOutcome(
                TaskStatus.CANCELLED,
                "cancelled",
                latency_ms=elapsed_ms,
                error_code="cancelled",
                error_detail="cancelled while the model was working",
                model=run.request.model,
                charge_held=True,
            )
        if answer is None:  # stopped for its timeout
            answer = AiError("timeout", "the provider did not return within its timeout")
        if isinstance(answer, AiResult):
            return self._succeeded(run.task, answer, prices)
        return self._failed(run.task, answer, elapsed_ms, run.request.model, prices)

    def _succeeded(self, task: Task, answer: AiResult, prices: PriceTable) -> RunOutcome:
        cost = self._cost(task, answer.model, answer.usage, prices)
        return RunOutcome(
            TaskStatus.SUCCEEDED,
            "succeeded",
            model=answer.model,
            tokens_in=answer.usage.tokens_in,
            tokens_out=answer.usage.tokens_out,
            cost=cost,
            latency_ms=answer.latency_ms,
            artifact=Artifact(_artifact_kind(task), answer.text),
            charge_held=cost is None,  # fail closed: an answer that cannot be priced is charged what it held
        )

    @staticmethod
    def _cost(task: Task, model: str | None, usage: Usage, prices: PriceTable) -> Decimal | None:
        """A call's cost: at the price of the model the provider reports, if that one is known and priced (a pricier
        snapshot is charged as such), else at the price of the task's own model, the one its hold was priced on (a
        compatible server that renames the model is charged as what it was asked). None: neither has a price."""
        for name in dict.fromkeys((model, task.model)):
            cost = prices.cost(name, usage) if name else None
            if cost is not None:
                return cost
        logger.warning("no price for this model: the attempt is charged what it held", extra={"model": model})
        return None

    def _failed(self, task: Task, error: AiError, elapsed_ms: int, model: str | None, prices: PriceTable) -> RunOutcome:
        usage, kind, now = error.usage, ERROR_CLASSES[error.code], self.clock()
        cost = self._cost(task, model, usage, prices) if usage is not None else None
        # Fail closed: a call that may have been billed, for an amount not known here, is charged what it held - one
        # that reported its usage but cannot be priced, and one that reported none unless its error is known free.
        charge_held = cost is None and (usage is not None or kind.billed)
        detail = error.detail
        retryable = error.retryable
        charged = cost if cost is not None else (task.worst_cost if charge_held else None)
        spent = (task.cost or 0) + (charged or 0)
        if retryable and task.max_cost_usd is not None and spent >= task.max_cost_usd:
            retryable = False
            detail = f"{detail} (not retried: the task has cost ${spent}, its maxCostUsd is ${task.max_cost_usd})"
        pause_s = self._pause_s(error, kind)
        decision = self.policy.decide(
            attempt_no=task.attempts_in_budget,
            retryable=retryable,
            now=now,
            max_attempts=task.max_attempts,
            # after a quota or auth error the task is due again when its model's pause ends
            retry_after_s=pause_s if kind.pauses == "account" else error.retry_after_s,
        )
        status = TaskStatus.FAILED if decision.retry else TaskStatus.DEAD_LETTER
        return RunOutcome(
            status,
            "failed",
            model=model,
            tokens_in=usage.tokens_in if usage else None,
            tokens_out=usage.tokens_out if usage else None,
            cost=cost,
            latency_ms=elapsed_ms,
            error_code=error.code,
            error_detail=detail,
            available_at=decision.at,
            charge_held=charge_held,
            pause_until=now + timedelta(seconds=pause_s) if pause_s is not None else None,
        )

    def _pause_s(self, error: AiError, kind: ErrorClass) -> float | None:
        """How long the error pauses its model for everyone; None: not at all. A provider's wait is clamped (a
        requests-per-day limit's reset, or a server's absurd Retry-After, must not stop a model for a day)."""
        if kind.pauses == "account":
            return self.account_pause_s
        if kind.pauses == "retry_after" and error.retry_after_s is not None:
            return clamp_wait_s(error.retry_after_s, self.max_pause_s)
        return None


class _Heartbeat:
    """The leases of one batch's runs, renewed by the process's heartbeat thread (`_HEARTBEATS`) through the engine's
    `leases`, never on the batch's thread: that one may be waiting on a claim or a finish for longer than a lease.
    It reads only the runs' keys (a tuple the batch's thread replaces whole) and hands what each beat found to the
    batch's thread through its inbox: that thread alone changes the runs."""

    def __init__(
        self,
        engine: Execute,
        invocation_id: str,
        inbox: queue.SimpleQueue[_Run | _Beat],
        turns: AbstractContextManager[object],
    ) -> None:
        self.every_s = engine.heartbeat_s
        self._engine = engine
        self._invocation_id = invocation_id
        self._inbox = inbox
        self._turns = turns
        self._keys: tuple[RunKey, ...] = ()

    def renew(self, keys: Iterable[RunKey]) -> None:
        """The runs whose leases the next beats renew."""
        self._keys = tuple(keys)

    def beat(self) -> bool:
        """One statement for every run; False when it failed. When the database cannot be reached, the runs go on
        even past their leases: a lease that ran out is only lost once the sweeper closes the attempt, and every
        write of a run is fenced by it (the task, this invocation, this attempt), so a run that lost its task
        writes nothing - two runs never both succeed. The next beat that gets through renews what is still held."""
        keys = self._keys
        if not keys:
            return True
        engine = self._engine
        try:
            with self._turns:
                held = (engine.leases or engine.tasks).extend_leases(
                    keys, locked_by=self._invocation_id, lease_until=engine.lease_end(engine.clock())
                )
        except Exception:
            logger.warning("could not renew the leases; trying again soon", exc_info=True)
            return False
        self._inbox.put(_Beat(keys, held))
        return True


class _HeartbeatThread:
    """One daemon thread beats for every batch of the process, each every `every_s` after its start (after a
    database error, again in BEAT_RETRY_S). Started by the first batch and kept: a thread per invocation cost more
    than a fast batch's own work, and a Lambda environment runs one invocation at a time anyway. One thread also
    means one beat at a time, so the heartbeat's connection never serves two - not even a beat whose statement
    outlived its invocation (the environment was frozen mid-statement) and the next invocation's."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._next: dict[_Heartbeat, float] = {}  # each batch's heartbeat, and when it beats next (monotonic)
        self._thread: threading.Thread | None = None

    def add(self, heartbeat: _Heartbeat) -> None:
        with self._cond:
            self._next[heartbeat] = time.monotonic() + heartbeat.every_s
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="heartbeat", daemon=True)
                self._thread.start()
            self._cond.notify()

    def remove(self, heartbeat: _Heartbeat) -> None:
        """No beat of this batch starts after this (one under way ends on its own: it is not waited for)."""
        with self._cond:
            self._next.pop(heartbeat, None)

    def _serve(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                due = [heartbeat for heartbeat, at in self._next.items() if at <= now]
                if not due:
                    first = min(self._next.values(), default=None)
                    self._cond.wait(None if first is None else first - now)
                    continue
            for heartbeat in due:
                try:
                    renewed = heartbeat.beat()
                except Exception:  # the one thread must outlive a bug of one beat
                    logger.exception("a heartbeat failed")
                    renewed = False
                with self._cond:
                    if heartbeat in self._next:
                        every = heartbeat.every_s
                        self._next[heartbeat] = time.monotonic() + (every if renewed else min(every, BEAT_RETRY_S))


_HEARTBEATS = _HeartbeatThread()


class _Batch:
    """The runs of one invocation, driven from the invocation's own thread: the model calls run on threads of their
    own and the heartbeat on another, and all report back through `inbox`; the claims and finishes happen here,
    batched."""

    def __init__(
        self, engine: Execute, prices: PriceTable, invocation_id: str, slots: int, remaining_s: Callable[[], float]
    ) -> None:
        self.engine = engine
        self.prices = prices
        self.invocation_id = invocation_id
        self.slots = slots
        self.remaining_s = remaining_s
        self.inflight: dict[RunKey, _Run] = {}
        self.inbox: queue.SimpleQueue[_Run | _Beat] = queue.SimpleQueue()  # calls that returned, heartbeats' findings
        self.unfinished: list[_Done] = []  # ended, but their finish could not be written yet
        self.reports: list[RunReport] = []
        self.claimed = 0
        self.may_find_work = True  # a claim filled every slot it asked for, or runs ended since the last one
        # Statements through `tasks`, when the heartbeat has no connection of its own, take turns with its beats.
        self.turns: AbstractContextManager[object] = (
            threading.Lock() if engine.leases is None else contextlib.nullcontext()
        )

    def claim(self) -> None:
        """Claim work for the free slots (one statement), and start the claimed tasks' model calls."""
        free = self.slots - len(self.inflight)
        if free <= 0 or not self.may_find_work:
            return
        engine = self.engine
        now = engine.clock()
        lease_until = engine.lease_end(now)
        with self.turns:
            answered = engine.tasks.claim_due(
                limit=free, locked_by=self.invocation_id, lease_until=lease_until, now=now
            )
        tasks = [t for t in answered if t.status is TaskStatus.RUNNING and t.locked_by == self.invocation_id]
        self.claimed += len(tasks)
        self.may_find_work = len(tasks) == free
        # Claimed: from here a run that cannot be started is handed back at once, never left to its lease.
        not_started = [task for task in tasks if not self._start(task, now)]
        if not_started:
            outcomes = [engine.handed_back(task, NOT_STARTED, charge_held=False) for task in not_started]
            self._record([_Done(t, _queue_delay_ms(t, now), o) for t, o in zip(not_started, outcomes, strict=True)])
        self._wake_deferred([t for t in answered if t.status is not TaskStatus.RUNNING], now)

    def _wake_deferred(self, deferred: list[Task], now: datetime) -> None:
        """The claim asks for a wake-up per model that needs one (it records them, so no other claim asks again): for
        when a limited or paused model has room again, or now when it has room this claim's slots could not take, each
        for as many slots as that room holds. Work a budget or a cap holds back runs as holds settle and slots free."""
        for task in deferred:
            if task.deferred_for == "rate_limit" and task.deferred_until is not None:
                wake = WakeUp(tenant_id=task.tenant_id, task_id=task.id, at=task.deferred_until, slots=task.wake_slots)
                self.engine.dispatch.wake(wake, now=now)

    def _start(self, task: Task, now: datetime) -> bool:
        """Start the task's model call on a thread of its own; False (logged) when it could not be started."""
        try:
            request = AiRequest.from_payload(
                task.type,
                task.payload,
                attempt_no=task.attempt_count,
                model=task.model,
                max_tokens=task.max_output_tokens,
            )
            run = _Run(task, request, _queue_delay_ms(task, now), time.perf_counter())
            self.inflight[run.key] = run
            _CALLS.run(self._call(run))
        except Exception:
            logger.exception("a claimed run could not be started: it is handed back", extra={"task_id": str(task.id)})
            self.inflight.pop((task.id, task.attempt_count), None)
            return False
        return True

    def _call(self, run: _Run) -> Callable[[], None]:
        provider, timeout_s, inbox = self.engine.provider, self.engine.ai_timeout_s, self.inbox

        def call() -> None:
            try:
                # An extract's answer is checked here too: under the run's deadline, off the batch's thread.
                run.answer = _usable(run.task, provider.complete(run.request, timeout_s=timeout_s))
            except AiError as exc:
                run.answer = exc
            except Exception as exc:  # a provider bug must not hang the run: record it as an unknown error
                logger.exception("the provider raised something other than AiError")
                run.answer = AiError("unknown", f"{type(exc).__name__}: {exc}")
            inbox.put(run)

        return call

    def run(self) -> BatchReport:
        if self.inflight or self.unfinished:
            heartbeat = _Heartbeat(self.engine, self.invocation_id, self.inbox, self.turns)
            _HEARTBEATS.add(heartbeat)
            try:
                self._until_every_run_ended(heartbeat)
            except Exception:
                # A bug of ours mid-batch: its runs are handed back rather than left to their leases.
                logger.exception("the batch failed: its runs are handed back")
                runs, self.inflight = list(self.inflight.values()), {}
                outcomes = [self.engine.handed_back(r.task, BATCH_FAILED, charge_held=True) for r in runs]
                self._record([_Done(r.task, r.queue_delay_ms, o) for r, o in zip(runs, outcomes, strict=True)])
            finally:
                _HEARTBEATS.remove(heartbeat)
        return BatchReport(self.reports, self.claimed)

    def _until_every_run_ended(self, heartbeat: _Heartbeat) -> None:
        while self.inflight or self.unfinished:
            # Every run still to be written keeps its lease, those being finished too (a beat never waits for a row
            # a finish holds: extend_leases skips it, and the next beat renews it).
            heartbeat.renew([*self.inflight, *(done.key for done in self.unfinished)])
            now = time.perf_counter()
            retry = [now + FINISH_RETRY_S] if self.unfinished else []
            ended = self._wait(min([*(self._deadline(run) for run in self.inflight.values()), *retry]) - now)
            now = time.perf_counter()
            for run in self.inflight.values():
                if now >= self._deadline(run) and run.answer is None and run.stopped is None:
                    run.stopped = "timeout"
                    ended[run.key] = run
            if ended or self.unfinished:
                self._refill(self._finish(list(ended.values())))

    def _deadline(self, run: _Run) -> float:
        """When the run stops waiting for its call: the provider's own timeout should have ended it before."""
        return run.started + self.engine.ai_timeout_s + self.engine.call_grace_s

    def _wait(self, timeout_s: float) -> dict[RunKey, _Run]:
        """The runs that ended: those whose calls returned (the first within `timeout_s`, then every other one
        already back) and those a heartbeat found cancelled."""
        items: list[_Run | _Beat] = []
        try:
            items.append(self.inbox.get(timeout=max(0.0, timeout_s)))
            while True:
                items.append(self.inbox.get_nowait())
        except queue.Empty:
            pass
        ended: dict[RunKey, _Run] = {}
        for item in items:
            if isinstance(item, _Beat):
                ended.update((run.key, run) for run in self._judge(item))
            elif self.inflight.get(item.key) is item:
                # (a call given up earlier - cancel, timeout, lost lease - may still come back: it is not in flight)
                ended[item.key] = item
        return ended

    def _judge(self, beat: _Beat) -> list[_Run]:
        """What a heartbeat found, applied to the runs still waiting for their calls: one whose cancel was requested
        stops waiting (it ends cancelled); one whose lease is gone (the sweeper closed its attempt; the task may be
        running again, even here as another attempt) is dropped without a write. The runs it returns are cancelled."""
        cancelled: list[_Run] = []
        for key in beat.keys:
            run = self.inflight.get(key)
            if run is None or run.answer is not None or run.stopped is not None:
                continue  # ended since: its finish is fenced
            lease = beat.held.get(key)
            if lease is None:
                logger.warning(
                    "lease lost while the model was working", extra={"task_id": str(key[0]), "attempt": key[1]}
                )
                del self.inflight[key]
            elif lease.cancel_requested:
                run.stopped = "cancel"
                cancelled.append(run)
        return cancelled

    def _finish(self, ended: list[_Run]) -> Counter[TenantId]:
        """End these runs (and any whose end could not be written before) in one statement; the slots it freed, by
        tenant."""
        now_p = time.perf_counter()
        done: list[_Done] = []
        for run in ended:
            del self.inflight[run.key]
            outcome = self.engine.outcome(run, round((now_p - run.started) * 1000), self.prices)
            done.append(_Done(run.task, run.queue_delay_ms, outcome))
        freed = self._record(done)
        self.may_find_work = True  # the slots they freed may admit work their tenants' caps held back
        return freed

    def _record(self, done: list[_Done]) -> Counter[TenantId]:
        """Write these ends (and any kept from before); a failed task is woken again at its retry time. If the
        statement fails, the ends are kept and written again while the runs' leases last (the heartbeat renews
        them); a row the database refuses is written alone, so it cannot take the others down with it. The slots
        written ends freed, by tenant."""
        pending, self.unfinished = self.unfinished + done, []
        freed: Counter[TenantId] = Counter()
        try:
            freed += self._write(pending)
        except DependencyUnavailableError:
            logger.warning("could not record the runs' outcomes; trying again", exc_info=True)
            self._keep(pending)
        except Exception:
            logger.exception("the runs' outcomes were refused together; writing them one by one")
            for one in pending:
                try:
                    freed += self._write([one])
                except DependencyUnavailableError:
                    self._keep([one])
                except Exception:
                    # Its lease runs out; the sweeper then closes the attempt and the task runs again.
                    logger.exception("a run's outcome was refused", extra={"task_id": str(one.task.id)})
        return freed

    def _write(self, pending: list[_Done]) -> Counter[TenantId]:
        engine = self.engine
        runs = [FinishedRun(done.task.id, done.task.attempt_count, done.outcome) for done in pending]
        with self.turns:
            finished = engine.tasks.finish_runs(runs, locked_by=self.invocation_id, now=engine.clock())
        # By (task, attempt): of two attempts of one task in this finish, only the one that still held it was written.
        by_key = {(task.id, task.attempt_count): task for task in finished}
        freed: Counter[TenantId] = Counter()
        for done in pending:
            task = by_key.get(done.key)
            if task is None:
                logger.warning(
                    "lease lost before the run ended: its outcome was discarded",
                    extra={"task_id": str(done.task.id), "attempt": done.task.attempt_count},
                )
                continue
            freed[task.tenant_id] += 1
            if task.status is TaskStatus.FAILED:
                engine.dispatch(task, now=engine.clock())
            self.reports.append(RunReport(task, done.task.attempt_count, done.outcome, done.queue_delay_ms))
        return freed

    def _keep(self, pending: list[_Done]) -> None:
        """Keep outcomes to write again while the invocation has time (the write is fenced: if another run took
        the task over meanwhile, it writes nothing). Past that, the runs' leases run out and the sweeper closes
        their attempts: the tasks run again."""
        if self.remaining_s() > FINISH_GIVE_UP_S:
            self.unfinished += pending
        else:
            logger.error("the invocation ends with outcomes it could not record", extra={"runs": len(pending)})

    def _refill(self, freed: Counter[TenantId]) -> None:
        """Claim for the slots that runs freed, while a new call could still finish in time; past that, wake other
        executors for the work those slots admit - now, not when this invocation's last run ends."""
        if self.engine.can_start_a_call(self.remaining_s()):
            try:
                self.claim()
            except Exception:
                logger.warning("could not claim more work", exc_info=True)
                self.may_find_work = False
            return
        if freed:
            self._wake_next(freed)

    def _wake_next(self, freed: Mapping[TenantId, int]) -> None:
        """Wake other executors for the work the slots freed here admit: for each tenant, as many of its next tasks
        as it freed slots (and its cap admits)."""
        engine = self.engine
        now = engine.clock()
        try:
            with self.turns:
                woken = engine.tasks.wake_freed(freed, now=now)
            for task in woken:
                engine.dispatch(task, now=now)
        except Exception:
            logger.warning("could not wake the work the freed slots admit; the sweeper will", exc_info=True)


def _queue_delay_ms(task: Task, now: datetime) -> int:
    return max(0, round((now - task.available_at).total_seconds() * 1000))


def _artifact_kind(task: Task) -> str:
    return REGISTRY[task.type].artifact_kind if task.type in REGISTRY else "text"


def _usable(task: Task, answer: AiResult) -> AiResult:
    """The answer, an extract's as compact JSON that matches its schema; else AiError (an answer that cannot be used
    was still billed: the error carries its usage)."""
    if _artifact_kind(task) != "json":
        return answer
    try:
        content = _valid_json(answer.text, (task.payload.get("params") or {}).get("schema") or {})
    except AiError as exc:
        raise AiError(exc.code, exc.detail, usage=answer.usage) from exc
    return dataclasses.replace(answer, text=content)


def _valid_json(text: str, schema: dict[str, object]) -> str:
    """The answer as compact JSON if it parses and matches the task's schema; else a retryable invalid_output. The
    schema's patterns run on RE2 (domain/schemas.py): linear in the answer's length."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise AiError("invalid_output", f"the answer is not JSON: {exc}") from exc
    errors = sorted(validator(schema).iter_errors(value), key=lambda e: list(e.path))
    if errors:
        where = "/".join(str(p) for p in errors[0].path) or "(root)"
        raise AiError("invalid_output", f"the answer does not match the schema at {where}: {errors[0].message}")
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


@dataclasses.dataclass(frozen=True, slots=True)
class RescueWakeUp:
    """A wake-up reached the DLQ: it kept failing (an executor crashed or could not reach the database). That is no
    verdict on a task - poison tasks are caught by their attempts. The task it names, if its run died, is closed
    (its attempt abandoned: failed and woken again, or dead-lettered only when its attempts are spent); a task that
    still waits gets a new wake-up; nothing else changes."""

    tasks: TaskRepository
    dispatch: Dispatcher
    clock: Callable[[], datetime] = utc_now

    def __call__(self, wake: WakeUp) -> Task | None:
        now = self.clock()
        task = self.tasks.get_by_id(wake.task_id) if wake.task_id else None
        if task is None:
            if wake.tenant_id:
                self.dispatch.wake(wake.model_copy(update={"at": None}), now=now)
            return None
        if task.status is TaskStatus.RUNNING and task.locked_until is not None and task.locked_until < now:
            closed = self.tasks.abandon_expired([task.id], now=now)
            task = closed[0] if closed else task
        if task.status in (TaskStatus.QUEUED, TaskStatus.FAILED):
            self.dispatch(task, now=now)
        return task
