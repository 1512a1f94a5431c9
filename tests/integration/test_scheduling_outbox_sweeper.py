"""ScheduledAt dispatch (SQS delay vs EventBridge Scheduler, on moto), the outbox relay, the sweeper, redrive
and retention, on PostgreSQL."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from jsonschema import Draft202012Validator
from moto import mock_aws

from aitasks.adapters.eventbridge import EventBridgePublisher
from aitasks.adapters.fake_provider import FakeAiProvider
from aitasks.adapters.postgres import ConnectionProvider, PostgresOutbox, PostgresRetention, PostgresTaskRepository
from aitasks.adapters.scheduler import EventBridgeScheduler
from aitasks.adapters.sqs import SqsWorkQueue
from aitasks.application.dispatch import Dispatcher
from aitasks.application.events import RelayOutbox
from aitasks.application.executor import Execute, RunReport
from aitasks.application.maintenance import Prune, RedriveDeadLetters, RedriveTask, Sweep
from aitasks.application.ports import Delivery, WakeUp
from aitasks.application.tasks import CancelTask, NewTask
from aitasks.domain.errors import IllegalTransitionError
from aitasks.domain.retry import RetryPolicy
from aitasks.domain.task import TaskStatus, TenantId
from tests.integration.conftest import create_task, prices_of
from tests.support.fakes import InMemoryEventPublisher, InMemoryScheduler, InMemoryWorkQueue

T = TenantId("tenant-a")
SCHEMAS = Path(__file__).parents[2] / "docs" / "events"


@pytest.fixture
def aws() -> Any:
    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        queue_url = sqs.create_queue(QueueName="work")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        scheduler = boto3.client("scheduler", region_name="us-east-1")
        scheduler.create_schedule_group(Name="wakeups")
        yield {"sqs": sqs, "queue_url": queue_url, "queue_arn": queue_arn, "scheduler": scheduler}


def fake_runner(
    repo: Any, queue: Any, dispatch: Dispatcher, *, policy: RetryPolicy | None = None, clock: Any = None
) -> Any:
    """An executor invocation with ten wake-ups: the reports of the runs it made, by task id."""
    extra = {"clock": clock} if clock else {}
    engine = Execute(
        repo if not isinstance(repo, ConnectionProvider) else PostgresTaskRepository(repo),
        queue,
        dispatch,
        FakeAiProvider(),
        lambda: prices_of(repo),
        policy or RetryPolicy(),
        lease_s=60,
        heartbeat_s=15,
        ai_timeout_s=10,
        **extra,
    )

    def run(invocation_id: str) -> dict[Any, RunReport]:
        wakes = [Delivery(f"m{i}", f"r{i}", WakeUp(tenant_id=T)) for i in range(10)]
        report = engine(wakes, invocation_id=invocation_id, remaining_s=lambda: 300)
        return {r.task.id: r for r in report.runs}

    return run


def visible_messages(aws: Any) -> list[dict[str, Any]]:
    return aws["sqs"].receive_message(QueueUrl=aws["queue_url"], MaxNumberOfMessages=10).get("Messages", [])


def create(db: ConnectionProvider, dispatch: Dispatcher, **kwargs: Any) -> Any:
    return create_task(db, dispatch)(T, NewTask(type="chat", payload={"prompt": "p"}, **kwargs))


# --- ScheduledAt ---------------------------------------------------------------------------------------------


def test_twenty_minutes_ahead_is_a_scheduler_schedule_and_no_message(db, aws) -> None:
    dispatch = Dispatcher(
        SqsWorkQueue(aws["queue_url"], aws["sqs"]),
        EventBridgeScheduler("wakeups", aws["queue_arn"], "arn:aws:iam::123456789012:role/s", aws["scheduler"]),
    )
    at = (datetime.now(UTC) + timedelta(minutes=20)).replace(microsecond=0)
    task = create(db, dispatch, scheduled_at=at)
    schedule = aws["scheduler"].get_schedule(Name=f"task-{task.id}", GroupName="wakeups")
    assert schedule["ScheduleExpression"] == f"at({at:%Y-%m-%dT%H:%M:%S})"
    assert schedule["ScheduleExpressionTimezone"] == "UTC"
    assert schedule["ActionAfterCompletion"] == "DELETE"
    assert schedule["Target"]["Arn"] == aws["queue_arn"]
    wake = WakeUp.model_validate_json(schedule["Target"]["Input"])
    assert (wake.tenant_id, wake.task_id, wake.at) == (T, task.id, at)
    assert visible_messages(aws) == []
    # Cancelling it deletes the schedule.
    CancelTask(PostgresTaskRepository(db), dispatch)(T, task.id)
    with pytest.raises(aws["scheduler"].exceptions.ResourceNotFoundException):
        aws["scheduler"].get_schedule(Name=f"task-{task.id}", GroupName="wakeups")


def test_five_minutes_ahead_is_a_delayed_message_and_the_past_runs_now(db, aws) -> None:
    scheduler = InMemoryScheduler()
    dispatch = Dispatcher(SqsWorkQueue(aws["queue_url"], aws["sqs"]), scheduler)
    soon = create(db, dispatch, scheduled_at=datetime.now(UTC) + timedelta(minutes=5))
    past = create(db, dispatch, scheduled_at=datetime.now(UTC) - timedelta(days=1))
    visible = [json.loads(m["Body"])["taskId"] for m in visible_messages(aws)]
    assert visible == [str(past.id)]  # the 5-minute one is delayed, not visible yet
    attributes = aws["sqs"].get_queue_attributes(
        QueueUrl=aws["queue_url"], AttributeNames=["ApproximateNumberOfMessagesDelayed"]
    )
    assert attributes["Attributes"]["ApproximateNumberOfMessagesDelayed"] == "1"
    assert scheduler.schedules == {}
    assert soon.available_at == soon.scheduled_at


def test_a_retry_due_beyond_fifteen_minutes_is_scheduled(db) -> None:
    queue, scheduler = InMemoryWorkQueue(), InMemoryScheduler()
    dispatch = Dispatcher(queue, scheduler)
    task = create(db, dispatch)
    run = fake_runner(PostgresTaskRepository(db), queue, dispatch)
    db().execute(
        "UPDATE tasks SET payload = payload || %s",
        (json.dumps({"params": {"fake": {"failAttempts": 1, "error": "rate_limit", "retryAfterS": 1800}}}),),
    )
    queue.sent.clear()
    report = run("run-1")[task.id]
    assert report.task.status is TaskStatus.FAILED
    wake, at = scheduler.schedules[task.id]
    assert (wake.tenant_id, wake.task_id, wake.at, at) == (T, task.id, at, report.task.available_at)
    assert queue.sent == []  # 30 minutes ahead: no message


# --- the outbox ----------------------------------------------------------------------------------------------


def validate(detail_type: str, detail: dict[str, Any]) -> None:
    schema = json.loads((SCHEMAS / f"{detail_type}.json").read_text())
    Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER).validate(detail)


def lifecycle(db: ConnectionProvider) -> None:
    """Tasks through every event type: created, queued, started, failed, succeeded, cancelled, dead_lettered."""
    queue = InMemoryWorkQueue()
    dispatch = Dispatcher(queue)
    repo = PostgresTaskRepository(db)
    run = fake_runner(repo, queue, dispatch, policy=RetryPolicy(base_delay_s=0.4, max_delay_s=0.4))
    flaky = create_task(repo, dispatch)(
        T, NewTask(type="chat", payload={"prompt": "p", "params": {"fake": {"failAttempts": 1}}})
    )
    assert run("a")[flaky.id].task.status is TaskStatus.FAILED
    import time

    time.sleep(0.5)
    assert run("b")[flaky.id].task.status is TaskStatus.SUCCEEDED
    cancelled = create(db, dispatch)
    CancelTask(repo, dispatch)(T, cancelled.id)
    doomed = create_task(repo, dispatch)(
        T,
        NewTask(
            type="summarize",
            payload={"prompt": "p", "context": "c", "params": {"fake": {"failAttempts": 1, "error": "bad_request"}}},
        ),
    )
    assert run("c")[doomed.id].task.status is TaskStatus.DEAD_LETTER
    RedriveTask(repo, dispatch)(T, doomed.id)


def test_every_published_event_validates_against_its_schema(db) -> None:
    lifecycle(db)
    publisher = InMemoryEventPublisher()
    published = RelayOutbox(PostgresOutbox(db), publisher)()
    types = {e.event_type for e in publisher.published}
    assert types == {
        "task.created",
        "task.queued",
        "task.started",
        "task.failed",
        "task.succeeded",
        "task.cancelled",
        "task.dead_lettered",
    }
    from aitasks.application.events import detail

    for event in publisher.published:
        validate(event.event_type, detail(event))
    assert published == len(publisher.published)
    assert db().execute("SELECT count(*) AS n FROM outbox_messages WHERE published_at IS NULL").fetchone() == {"n": 0}


def test_a_crash_between_put_events_and_marking_republishes_with_the_same_ids(db) -> None:
    create(db, Dispatcher(InMemoryWorkQueue()))
    sent: list[Any] = []

    class DiesAfterPublishing:
        def publish(self, events: list[Any]) -> set[Any]:
            sent.extend(events)
            raise SystemExit("killed between PutEvents and the UPDATE")

    with pytest.raises(SystemExit):
        RelayOutbox(PostgresOutbox(db), DiesAfterPublishing())()
    again = InMemoryEventPublisher()
    assert RelayOutbox(PostgresOutbox(db), again)() == 2
    assert {e.id for e in again.published} == {e.id for e in sent}  # the same eventIds: consumers can dedupe


def test_a_partial_put_events_failure_retries_only_the_failed_entries(db) -> None:
    for _ in range(6):
        create(db, Dispatcher(InMemoryWorkQueue()))

    class FlakyEventBridge:
        """PutEvents that rejects every other entry on the first call (FailedEntryCount), then accepts."""

        def __init__(self) -> None:
            self.calls: list[list[str]] = []

        def put_events(self, Entries: list[dict[str, Any]]) -> dict[str, Any]:
            self.calls.append([json.loads(e["Detail"])["eventId"] for e in Entries])
            first = len(self.calls) == 1
            results = [
                {"ErrorCode": "InternalFailure"} if first and i % 2 else {"EventId": f"e{i}"}
                for i in range(len(Entries))
            ]
            return {"FailedEntryCount": sum(1 for r in results if "ErrorCode" in r), "Entries": results}

    client = FlakyEventBridge()
    published = RelayOutbox(PostgresOutbox(db), EventBridgePublisher("bus", client, backoff_s=0))()
    assert published == 12
    assert [len(c) for c in client.calls] == [10, 5, 2]  # a chunk of 10, its 5 failures again, the last 2
    assert set(client.calls[1]) <= set(client.calls[0])


def test_the_eventbridge_adapter_puts_events_on_the_bus(db) -> None:
    with mock_aws():
        events = boto3.client("events", region_name="us-east-1")
        events.create_event_bus(Name="tasks")
        create(db, Dispatcher(InMemoryWorkQueue()))
        assert RelayOutbox(PostgresOutbox(db), EventBridgePublisher("tasks", events))() == 2


def test_two_relays_in_parallel_publish_each_row_once(db, database_url: str) -> None:
    dispatch = Dispatcher(InMemoryWorkQueue())
    for _ in range(150):
        create(db, dispatch)
    publishers = [InMemoryEventPublisher(), InMemoryEventPublisher()]
    barrier = threading.Barrier(2)

    def relay(publisher: InMemoryEventPublisher) -> None:
        provider = ConnectionProvider(lambda: database_url)
        barrier.wait()
        RelayOutbox(PostgresOutbox(provider), publisher, batch_size=20)()
        provider.close()

    threads = [threading.Thread(target=relay, args=(p,)) for p in publishers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [e.id for p in publishers for e in p.published]
    assert len(ids) == len(set(ids)) == 300
    assert all(p.published for p in publishers)  # both did work


# --- the sweeper ---------------------------------------------------------------------------------------------


def test_a_lost_message_is_sent_again_within_one_sweep(db) -> None:
    lost = InMemoryWorkQueue()
    task = create(db, Dispatcher(lost))
    later = datetime.now(UTC) + timedelta(minutes=3)
    queue = InMemoryWorkQueue()
    report = Sweep(PostgresTaskRepository(db), Dispatcher(queue), grace_s=120, clock=lambda: later)()
    assert (report.redispatched, [m.task_id for m in queue.sent]) == (1, [task.id])
    # Just re-sent: the next sweep leaves it alone for another grace period.
    assert Sweep(PostgresTaskRepository(db), Dispatcher(queue), grace_s=120, clock=lambda: later)().redispatched == 0


def test_the_sweeper_leaves_work_a_tenants_cap_holds_back_to_its_finishing_runs(db) -> None:
    # given: a tenant capped at one run, three tasks whose wake-ups were spent; one runs
    from aitasks.adapters.postgres import PostgresLimitsRepository
    from aitasks.application.ports import FinishedRun, RunOutcome

    repo = PostgresTaskRepository(db)
    PostgresLimitsRepository(db).set_max_concurrency(T, 1, now=datetime.now(UTC))
    ids = {create(db, Dispatcher(InMemoryWorkQueue())).id for _ in range(3)}
    now = datetime.now(UTC)
    [running] = repo.claim_due(limit=3, locked_by="run", lease_until=now + timedelta(hours=1), now=now)
    later, queue = now + timedelta(minutes=3), InMemoryWorkQueue()
    # when / then: at its cap, nothing is re-sent (a wake-up would only find the cap)
    assert Sweep(repo, Dispatcher(queue), grace_s=120, clock=lambda: later)().redispatched == 0
    # once its run ends, the next sweep wakes as many as its cap has room for: one
    done = RunOutcome(TaskStatus.SUCCEEDED, "succeeded")
    assert repo.finish_runs([FinishedRun(running.id, 1, done)], locked_by="run", now=later)
    assert Sweep(repo, Dispatcher(queue), grace_s=120, clock=lambda: later)().redispatched == 1
    assert {m.task_id for m in queue.sent} < ids - {running.id}
    # raised to 5: the last one too
    PostgresLimitsRepository(db).set_max_concurrency(T, 5, now=later)
    assert Sweep(repo, Dispatcher(queue), grace_s=120, clock=lambda: later)().redispatched == 1
    assert {m.task_id for m in queue.sent} == ids - {running.id}


def test_a_task_within_its_grace_period_is_left_alone(db) -> None:
    create(db, Dispatcher(InMemoryWorkQueue()))
    assert Sweep(PostgresTaskRepository(db), Dispatcher(InMemoryWorkQueue()), grace_s=120)().redispatched == 0


def test_an_expired_lease_is_freed_and_the_task_runs_again(db) -> None:
    repo = PostgresTaskRepository(db)
    task = create(db, Dispatcher(InMemoryWorkQueue()))
    now = datetime.now(UTC)
    repo.claim_due(limit=1, locked_by="dead-run", lease_until=now + timedelta(seconds=1), now=now)
    later = now + timedelta(minutes=5)
    queue = InMemoryWorkQueue()
    report = Sweep(repo, Dispatcher(queue), clock=lambda: later)()
    assert report.leases_freed == 1
    assert [m.task_id for m in queue.sent] == [task.id]
    run = fake_runner(repo, queue, Dispatcher(queue), clock=lambda: later)
    assert run("new-run")[task.id].task.status is TaskStatus.SUCCEEDED
    statuses = [
        r["status"]
        for r in db().execute("SELECT status FROM task_attempts WHERE task_id = %s ORDER BY attempt_no", (task.id,))
    ]
    assert statuses == ["abandoned", "succeeded"]


def test_two_sweepers_at_once_do_no_harm(db, database_url: str) -> None:
    dispatch = Dispatcher(InMemoryWorkQueue())
    ids = [create(db, dispatch).id for _ in range(40)]
    later = datetime.now(UTC) + timedelta(minutes=3)
    queues = [InMemoryWorkQueue(), InMemoryWorkQueue()]
    barrier = threading.Barrier(2)

    def sweeper(queue: InMemoryWorkQueue) -> None:
        provider = ConnectionProvider(lambda: database_url)
        barrier.wait()
        Sweep(PostgresTaskRepository(provider), Dispatcher(queue), batch=10, clock=lambda: later)()
        Sweep(PostgresTaskRepository(provider), Dispatcher(queue), batch=10, clock=lambda: later)()
        provider.close()

    threads = [threading.Thread(target=sweeper, args=(q,)) for q in queues]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sent = [m.task_id for q in queues for m in q.sent]
    assert len(sent) == len(set(sent))  # never twice in one grace period
    assert set(sent) <= set(ids)


# --- redrive and retention -----------------------------------------------------------------------------------


def test_redrive_gives_a_dead_letter_a_new_budget_and_keeps_its_history(db) -> None:
    repo = PostgresTaskRepository(db)
    queue = InMemoryWorkQueue()
    dispatch = Dispatcher(queue)
    task = create_task(repo, dispatch)(
        T, NewTask(type="chat", payload={"prompt": "p", "params": {"fake": {"failAttempts": 1}}}, max_attempts=1)
    )
    run = fake_runner(repo, queue, dispatch)
    assert run("a")[task.id].task.status is TaskStatus.DEAD_LETTER
    with pytest.raises(IllegalTransitionError):
        RedriveTask(repo, dispatch)(T, create(db, dispatch).id)  # a queued task: 409
    dry = RedriveDeadLetters(repo, dispatch)(dry_run=True)
    assert [t.id for t in dry] == [task.id] and repo.get(T, task.id).status is TaskStatus.DEAD_LETTER
    [again] = RedriveDeadLetters(repo, dispatch)(types=["chat"])
    assert (again.status, again.redrive_count, again.budget_from, again.attempt_count) == (TaskStatus.QUEUED, 1, 1, 1)
    # attempt 2 is the first of the new budget: the fake fails attempt 1 only, so it succeeds now
    assert run("b")[task.id].task.status is TaskStatus.SUCCEEDED
    rows = db().execute("SELECT attempt_no, status FROM task_attempts WHERE task_id = %s ORDER BY 1", (task.id,))
    assert [tuple(r.values()) for r in rows] == [(1, "failed"), (2, "succeeded")]


def test_retention_prunes_finished_tasks_and_never_a_live_one(db) -> None:
    dispatch = Dispatcher(InMemoryWorkQueue())
    old_done, old_live, new_done = (create(db, dispatch) for _ in range(3))
    db().execute(
        "UPDATE tasks SET status = 'succeeded', updated_at = now() - interval '40 days' WHERE id = %s", (old_done.id,)
    )
    db().execute("UPDATE tasks SET updated_at = now() - interval '40 days' WHERE id = %s", (old_live.id,))
    db().execute("UPDATE tasks SET status = 'cancelled' WHERE id = %s", (new_done.id,))
    db().execute(
        "UPDATE outbox_messages SET published_at = now() - interval '8 days' WHERE task_id = %s", (new_done.id,)
    )
    db().execute("UPDATE outbox_messages SET published_at = now() WHERE task_id = %s", (old_done.id,))
    old_unannounced = create(db, dispatch)  # finished long ago, but its events are not published yet
    db().execute(
        "UPDATE tasks SET status = 'succeeded', updated_at = now() - interval '40 days' WHERE id = %s",
        (old_unannounced.id,),
    )
    events_only = Prune(PostgresRetention(db), batch=1, prune_tasks=False)()
    assert (events_only.tasks, events_only.outbox_rows) == (0, 2)  # task retention is opt-in
    assert db().execute("SELECT count(*) AS n FROM tasks").fetchone() == {"n": 4}
    report = Prune(PostgresRetention(db), batch=1)()
    assert (report.tasks, report.outbox_rows) == (1, 0)
    left = {r["id"] for r in db().execute("SELECT id FROM tasks")}
    assert left == {old_live.id, new_done.id, old_unannounced.id}
    assert db().execute("SELECT count(*) AS n FROM outbox_messages WHERE task_id = %s", (old_done.id,)).fetchone() == {
        "n": 0
    }


def test_the_backlog_counts_only_old_unpublished_events(db) -> None:
    create(db, Dispatcher(InMemoryWorkQueue()))
    relay = RelayOutbox(PostgresOutbox(db), InMemoryEventPublisher(reject={"task.created", "task.queued"}))
    assert relay.backlog(older_than_s=120) == 0  # just written
    db().execute("UPDATE outbox_messages SET occurred_at = now() - interval '5 minutes'")
    relay()
    assert relay.backlog(older_than_s=120) == 2  # rejected by the bus, still waiting
    RelayOutbox(PostgresOutbox(db), InMemoryEventPublisher())()
    assert relay.backlog(older_than_s=120) == 0
