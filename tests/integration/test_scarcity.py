"""Flow control under scarcity, against PostgreSQL: the claim (migration 0011) shares a limited model by the tenants'
recent use of it, budgets fail closed and release held work as holds settle, a paused popular model costs the claim
nothing, and every write of a run is keyed by (task, attempt). Each test is a finding of the engine review
(shared/reviews/engine-2026-12.md) that failed before its fix.

The tests call the repository with an explicit clock: the rules live in SQL, and time is the claim's argument."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

import psycopg
import pytest

from aitasks.adapters.postgres import PostgresLimitsRepository, PostgresModelRepository, PostgresTaskRepository
from aitasks.application.ports import Artifact, FinishedRun, RunOutcome
from aitasks.domain.task import Task, TaskStatus, TenantId

if TYPE_CHECKING:
    from aitasks.adapters.postgres import ConnectionProvider

NOW = datetime(2026, 12, 10, 12, 0, tzinfo=UTC)


class World:
    """Tasks put straight into the store, claims and finishes at chosen times."""

    def __init__(self, db: ConnectionProvider) -> None:
        self.db = db
        self.repo = PostgresTaskRepository(db)
        self.limits = PostgresLimitsRepository(db)
        self.models = PostgresModelRepository(db)

    def add(
        self,
        tenant: str,
        n: int = 1,
        *,
        model: str = "m",
        at: datetime = NOW,
        priority: int = 5,
        worst: str | None = "0.001",
        tokens: int = 100,
    ) -> list[Task]:
        out = []
        for _ in range(n):
            task = Task.submit(
                tenant_id=TenantId(tenant),
                type="chat",
                payload={"prompt": "p"},
                now=at,
                priority=priority,
                model=model,
                input_tokens=tokens // 2,
                max_output_tokens=tokens - tokens // 2,
                worst_cost=Decimal(worst) if worst is not None else None,
                rate_tokens=tokens,
            )
            stored = self.repo.add(task)
            assert stored is not None
            out.append(stored)
        return out

    def claim(self, at: datetime = NOW, limit: int = 10, by: str = "inv") -> list[Task]:
        return self.repo.claim_due(limit=limit, locked_by=by, lease_until=at + timedelta(seconds=20), now=at)

    def running(self, at: datetime = NOW, limit: int = 10, by: str = "inv") -> list[Task]:
        return [t for t in self.claim(at, limit, by) if t.status is TaskStatus.RUNNING]

    def succeed(
        self, tasks: list[Task], at: datetime = NOW, *, cost: str | None = "0.0001", by: str = "inv"
    ) -> list[Task]:
        runs = [
            FinishedRun(
                t.id,
                t.attempt_count,
                RunOutcome(
                    TaskStatus.SUCCEEDED,
                    "succeeded",
                    model=t.model,
                    tokens_in=10,
                    tokens_out=10,
                    cost=Decimal(cost) if cost is not None else None,
                    artifact=Artifact("text", "ok"),
                    charge_held=cost is None,
                ),
            )
            for t in tasks
        ]
        return self.repo.finish_runs(runs, locked_by=by, now=at)

    def spend(self, tenant: str) -> tuple[Decimal, Decimal]:
        row = (
            self.db()
            .execute(
                "SELECT COALESCE(sum(spent_usd), 0) AS s, COALESCE(sum(reserved_usd), 0) AS r FROM tenant_spend "
                "WHERE tenant_id = %s",
                [tenant],
            )
            .fetchone()
        )
        return row["s"], row["r"]

    def set_rpm(self, model: str, rpm: int | None, tpm: int | None = None) -> None:
        self.models.set_limits(model, rpm=rpm, tpm=tpm, now=NOW)

    def pause(self, model: str, until: datetime) -> None:
        self.db().execute(
            "INSERT INTO model_limits (model, paused_until, updated_at) VALUES (%s, %s, %s) "
            "ON CONFLICT (model) DO UPDATE SET paused_until = EXCLUDED.paused_until",
            [model, until, NOW],
        )


@pytest.fixture
def world(db: ConnectionProvider) -> World:
    return World(db)


def bulk(db: ConnectionProvider, *, tenants: int, each: int, model: str, tenant_prefix: str = "t") -> None:
    """Many due tasks at once, as creates would store them (with their queues)."""
    db().execute(
        """
        INSERT INTO tasks (id, tenant_id, type, priority, status, payload, available_at, max_attempts, attempt_count,
                           created_at, updated_at, dispatched_at, model, model_key, input_tokens, rate_tokens,
                           max_output_tokens, worst_cost)
        SELECT gen_random_uuid(), %(prefix)s || t, 'chat', 5, 'queued', '{"prompt": "p"}', %(now)s, 3, 0,
               %(now)s, %(now)s, %(now)s, %(model)s, %(model)s, 50, 100, 50, 0.001
        FROM generate_series(1, %(tenants)s) t, generate_series(1, %(each)s) i
        """,
        {"prefix": tenant_prefix, "now": NOW - timedelta(minutes=1), "model": model, "tenants": tenants, "each": each},
    )
    db().execute(
        "INSERT INTO task_queues (tenant_id, model_key, ready_at) SELECT DISTINCT tenant_id, model_key, %s FROM tasks "
        "WHERE model_key = %s ON CONFLICT DO NOTHING",
        [NOW - timedelta(minutes=1), model],
    )
    db().execute("ANALYZE tasks")


def tasks_read_by_one_claim(db: ConnectionProvider, world: World, limit: int = 10) -> tuple[list[Task], int]:
    """A claim, and how many rows of `tasks` it read (its transaction's own statistics: no timing)."""
    conn = db()
    read = (
        "SELECT COALESCE(idx_tup_fetch, 0) + COALESCE(seq_tup_read, 0) AS n FROM pg_stat_xact_user_tables "
        "WHERE relname = 'tasks'"
    )
    with conn.transaction():
        before = conn.execute(read).fetchone()["n"]
        claimed = world.claim(limit=limit)
        after = conn.execute(read).fetchone()["n"]
    return claimed, after - before


# --- review 1, 6, 9: a paused popular model, a budget-blocked backlog ----------------------------------------------


def test_a_paused_popular_model_and_a_blocked_backlog_cost_a_claim_nothing(world: World, db) -> None:
    # given: 400 tenants with 5 due tasks each on a paused model, 5,000 tasks of a tenant whose budget is spent,
    # and two tasks of another model
    bulk(db, tenants=400, each=5, model="popular")
    world.pause("popular", NOW + timedelta(minutes=5))
    bulk(db, tenants=1, each=5000, model="other", tenant_prefix="broke")
    world.limits.set_monthly_budget(TenantId("broke1"), Decimal("0.0005"), now=NOW)
    fine = world.add("fine", 2, model="other")
    # when: one claim of 10 slots
    claimed, read = tasks_read_by_one_claim(db, world)
    # then: it starts the two tasks it can, reads a handful of rows of tasks (not thousands), and names one task
    # of the paused model to wake when the pause ends
    running = {t.id for t in claimed if t.status is TaskStatus.RUNNING}
    assert running == {t.id for t in fine}
    assert read < 60, read
    wakes = [t for t in claimed if t.deferred_until is not None]
    assert [(t.model_key, t.deferred_until) for t in wakes] == [("popular", NOW + timedelta(minutes=5))]
    # and the next claim does not send that wake-up again
    assert [t for t in world.claim() if t.deferred_until is not None] == []
    # the held-back work says why, read where the rules keep their state
    paused = db().execute("SELECT id FROM tasks WHERE model_key = 'popular' LIMIT 1").fetchone()["id"]
    broke = db().execute("SELECT id FROM tasks WHERE tenant_id = 'broke1' LIMIT 1").fetchone()["id"]
    got = (
        db()
        .execute(
            "SELECT id, task_waiting_for(tenant_id, status, available_at, model_key, worst_cost, %s) AS w FROM tasks "
            "WHERE id = ANY(%s)",
            [NOW, [paused, broke]],
        )
        .fetchall()
    )
    assert {r["id"]: r["w"] for r in got} == {paused: "rate_limit", broke: "budget"}


def test_a_tenants_paused_model_does_not_hold_back_its_work_on_another(world: World) -> None:
    # given: tenant A's 30 tasks on a paused model X, queued before its 3 on Y (review 6)
    world.add("A", 30, model="x", at=NOW - timedelta(minutes=5))
    y = world.add("A", 3, model="y")
    world.pause("x", NOW + timedelta(hours=1))
    # then: the first claim runs Y's
    assert {t.id for t in world.running()} == {t.id for t in y}


# --- review 2, 3: budgets bind and release --------------------------------------------------------------------


def test_a_budget_releases_held_work_as_holds_settle_and_is_never_exceeded(world: World) -> None:
    # given: a $0.01 budget and 12 tasks that hold $0.004 each and really cost $0.002 (review 2: 2 ran, 10 waited for
    # the next month)
    world.limits.set_monthly_budget(TenantId("A"), Decimal("0.01"), now=NOW)
    world.add("A", 12, worst="0.004")
    at, ran = NOW, 0
    for _ in range(12):
        running = world.running(at)
        spent, held = world.spend("A")
        assert spent + held <= Decimal("0.01")
        if not running:
            break
        ran += len(running)
        world.succeed(running, at, cost="0.002")
        at += timedelta(seconds=1)
    # then: work ran until the settled spend left less than one hold: $0.008 of $0.01
    spent, held = world.spend("A")
    assert (ran, spent, held) == (4, Decimal("0.008"), 0)


def test_an_attempt_whose_cost_is_unknown_is_charged_its_hold_and_marked_estimated(world: World, db) -> None:
    # review 3a: a success whose reported model has no price was charged $0 and the budget did not bind
    world.limits.set_monthly_budget(TenantId("A"), Decimal("0.01"), now=NOW)
    [task] = world.add("A", worst="0.004")
    [run] = world.running()
    world.succeed([run], cost=None)
    assert world.spend("A") == (Decimal("0.004"), 0)
    attempt = db().execute("SELECT cost, cost_estimated FROM task_attempts WHERE task_id = %s", [task.id]).fetchone()
    assert (attempt["cost"], attempt["cost_estimated"]) == (Decimal("0.004"), True)
    assert world.repo.get(TenantId("A"), task.id).cost == Decimal("0.004")


def test_a_hold_is_priced_at_the_greater_of_the_price_at_create_and_todays(world: World, db) -> None:
    # review 3b: a price that rose between create and claim no longer lets the actual cost pass the hold
    db().execute(
        "INSERT INTO model_prices (model, provider, input_per_m, output_per_m, source, updated_at) "
        "VALUES ('m', 'openai', 100, 100, 'test', now()) ON CONFLICT (model) DO UPDATE SET input_per_m = 100, "
        "output_per_m = 100"
    )
    world.limits.set_monthly_budget(TenantId("A"), Decimal("1"), now=NOW)
    [task] = world.add("A", worst="0.000001", tokens=100)  # 100 tokens at $100/M: $0.01 today
    world.running()
    assert db().execute("SELECT reserved_usd FROM tasks WHERE id = %s", [task.id]).fetchone()[
        "reserved_usd"
    ] == Decimal("0.01")


def test_a_task_without_a_price_under_a_budget_ends_with_the_reason(world: World) -> None:
    [task] = world.add("A", worst=None, model="unpriced-model")
    world.limits.set_monthly_budget(TenantId("A"), Decimal("1"), now=NOW)
    [dead] = world.claim()
    assert (dead.id, dead.status) == (task.id, TaskStatus.DEAD_LETTER)
    assert dead.last_error is not None and dead.last_error.startswith("unpriced_model:")


# --- review 4: runs keyed by (task, attempt) ---------------------------------------------------------------------


def test_two_attempts_of_one_task_in_one_finish_end_only_the_current_one(world: World, db) -> None:
    world.limits.set_monthly_budget(TenantId("A"), Decimal("1.00"), now=NOW)
    x = world.add("A", worst="0.10", at=NOW - timedelta(minutes=2))[0]
    world.add("A", worst="0.10", at=NOW - timedelta(minutes=1))
    first = world.running(limit=2)
    x1 = next(t for t in first if t.id == x.id)
    # the sweeper closes X's attempt 1 (its lease ran out while the call went on), and the invocation claims X again
    db().execute("UPDATE tasks SET locked_until = %s WHERE id = %s", [NOW - timedelta(seconds=1), x.id])
    world.repo.abandon_expired([x.id], now=NOW)
    [x2] = world.running(limit=1)
    assert (x2.id, x2.attempt_count) == (x.id, 2)
    # when: both attempts' calls come back in one finish
    done = world.succeed([x1, x2], cost="0.01")
    # then: only attempt 2 ends; Y still holds its $0.10; X#1 was charged its hold once, X#2 its cost
    assert [(t.id, t.attempt_count) for t in done] == [(x.id, 2)]
    assert world.spend("A") == (Decimal("0.11"), Decimal("0.10"))
    artifacts = db().execute("SELECT count(*) AS n FROM task_artifacts WHERE task_id = %s", [x.id]).fetchone()["n"]
    events = [
        r["event_type"]
        for r in db().execute("SELECT event_type FROM outbox_messages WHERE task_id = %s ORDER BY seq", [x.id])
    ]
    assert artifacts == 1
    assert events.count("task.succeeded") == 1


# --- review 5: one lock order on tenant_spend -------------------------------------------------------------------


def test_a_claim_and_a_finish_across_the_same_tenants_do_not_deadlock(world: World, db, database_url: str) -> None:
    # given: six tenants each with a running task and a queued one; a trigger that widens the window between the
    # row locks on tenant_spend (as the review's exp2 did)
    tenants = ["acme", "alpha", "beta", "kappa", "omega", "zeta"]
    for t in tenants:
        world.add(t, 2)
    running = world.running(limit=6, by="one")
    assert len(running) == 6
    db().execute(
        """
        CREATE FUNCTION slow_spend() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN PERFORM pg_sleep(0.05); RETURN NEW; END $$;
        CREATE TRIGGER slow_spend BEFORE UPDATE ON tenant_spend FOR EACH ROW EXECUTE FUNCTION slow_spend();
        """
    )
    errors: list[BaseException] = []

    def claim() -> None:
        try:
            with psycopg.connect(database_url, autocommit=True) as conn:
                conn.execute("SELECT * FROM claim_tasks('two', %s, %s, 6)", [NOW + timedelta(seconds=20), NOW])
        except BaseException as exc:
            errors.append(exc)

    # when: one invocation ends its six runs while another claims those tenants' next tasks
    thread = threading.Thread(target=claim)
    thread.start()
    try:
        world.succeed(running, by="one")
    except BaseException as exc:
        errors.append(exc)
    finally:
        thread.join()
        db().execute("DROP TRIGGER slow_spend ON tenant_spend; DROP FUNCTION slow_spend()")
    # then: both went through
    assert errors == []
    assert Counter(r["status"] for r in db().execute("SELECT status FROM tasks")) == {"succeeded": 6, "running": 6}


# --- fair shares of a rate-limited model --------------------------------------------------------------------------


def start_order(world: World, *, seconds: int, step: float = 1.0, start: datetime = NOW) -> list[str]:
    """Claims every `step` s for `seconds`, each run ending at once: the tenants in the order their tasks started."""
    order: list[str] = []
    at = start
    while at < start + timedelta(seconds=seconds):
        running = world.running(at)
        order += [t.tenant_id for t in running]
        if running:
            world.succeed(running, at + timedelta(milliseconds=100))
        at += timedelta(seconds=step)
    return order


def test_a_rate_limited_model_is_shared_by_recent_use_not_first_come_first_served(world: World) -> None:
    # review: rpm 20; tenant A queued 30 short tasks, then tenant B 2: B's started 25th and 27th of 32
    world.set_rpm("m", 20)
    world.add("A", 30, at=NOW - timedelta(minutes=1))
    before = start_order(world, seconds=15)  # A alone: a start every 3 s
    world.add("B", 2, at=NOW + timedelta(seconds=15))
    after = start_order(world, seconds=120, start=NOW + timedelta(seconds=15))
    assert before == ["A"] * 5
    assert len(after) == 27
    assert [i for i, t in enumerate(after) if t == "B"] == [0, 2]  # its first at the next slot, then every other one


def test_weights_2_to_1_share_a_limited_model_2_to_1(world: World) -> None:
    world.set_rpm("m", 60)
    world.limits.set_weight(TenantId("heavy"), Decimal(2), now=NOW)
    world.limits.set_weight(TenantId("light"), Decimal(1), now=NOW)
    world.add("heavy", 100)
    world.add("light", 100)
    shares = Counter(start_order(world, seconds=60))
    assert shares["heavy"] + shares["light"] == 60
    assert 1.8 <= shares["heavy"] / shares["light"] <= 2.2


def test_a_tenant_alone_gets_the_whole_model(world: World) -> None:
    world.set_rpm("m", 600)  # bursts of 10 calls
    world.add("A", 30)
    assert len(world.running(limit=10)) == 10


def test_snapshots_and_casing_share_their_models_limits(world: World, db) -> None:
    db().execute(
        "INSERT INTO model_prices (model, provider, input_per_m, output_per_m, source, updated_at) "
        "VALUES ('gpt-4o-mini', 'openai', 0.15, 0.6, 'test', now()) ON CONFLICT (model) DO NOTHING"
    )
    key = world.models.set_limits("GPT-4o-mini", rpm=1, tpm=None, now=NOW)
    assert key == "gpt-4o-mini"
    prices = world.models.price_table()
    world.add("A", model=prices.key("gpt-4o-mini-2024-07-18"))
    world.add("B", model=prices.key("gpt-4o-mini"))
    assert len(world.running()) == 1


# --- priority that ages -------------------------------------------------------------------------------------------


def test_priority_orders_a_tenants_work_and_ages(world: World) -> None:
    old_low = world.add("A", priority=9, at=NOW - timedelta(minutes=100))[0]
    recent_low = world.add("A", priority=9, at=NOW - timedelta(minutes=5))[0]
    high = world.add("A", 2, priority=0, at=NOW)
    world.limits.set_max_concurrency(TenantId("A"), 1, now=NOW)
    order = []
    for i in range(4):
        [run] = world.running(NOW + timedelta(seconds=i))
        order.append(run.id)
        world.succeed([run], NOW + timedelta(seconds=i))
    # a priority-9 task waiting 100 minutes goes before priority-0 work that came since (90 minutes is the bound); one
    # waiting 5 minutes does not
    assert (order[0], set(order[1:3]), order[3]) == (old_low.id, {t.id for t in high}, recent_low.id)


# --- nothing waits forever ----------------------------------------------------------------------------------------


def test_a_task_over_its_models_lowered_tpm_ends_with_the_reason(world: World) -> None:
    [task] = world.add("A", tokens=5000)
    world.set_rpm("m", None, tpm=1000)  # an operator lowers the limit below what one call counts
    [dead] = world.claim()
    assert (dead.id, dead.status) == (task.id, TaskStatus.DEAD_LETTER)
    assert dead.last_error is not None and dead.last_error.startswith("exceeds_model_tpm:")


def test_a_task_that_can_never_fit_its_models_tpm_is_not_stored(world: World) -> None:
    world.set_rpm("m", None, tpm=1000)
    task = Task.submit(
        tenant_id=TenantId("A"), type="chat", payload={"prompt": "p"}, now=NOW, model="m", rate_tokens=2000
    )
    assert world.repo.add(task) is None
    assert world.limits.model_tpm("m") == 1000


# --- property: whatever the interleaving, the budget and the window hold and no attempt ends twice ----------------


def _invariants(db: ConnectionProvider, budget: Decimal, rpm: int) -> None:
    for row in db().execute("SELECT tenant_id, sum(spent_usd + reserved_usd) AS c FROM tenant_spend GROUP BY 1"):
        assert row["c"] <= budget, row
    starts = [r["at"] for r in db().execute("SELECT at FROM model_calls ORDER BY at")]
    for t in starts:
        assert sum(1 for s in starts if t - timedelta(seconds=61) < s <= t) <= rpm
    twice = (
        db()
        .execute(
            "SELECT count(*) AS n FROM (SELECT task_id FROM task_attempts WHERE status = 'succeeded' GROUP BY task_id "
            "HAVING count(*) > 1) x"
        )
        .fetchone()["n"]
    )
    assert twice == 0


def test_random_interleavings_of_claims_finishes_abandons_and_limit_changes_keep_every_invariant(db) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    steps = st.lists(
        st.tuples(st.sampled_from(["claim", "finish", "fail", "abandon", "limits", "tick"]), st.integers(0, 5)),
        min_size=5,
        max_size=40,
    )

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    @given(steps)
    def run(plan: list[tuple[str, int]]) -> None:
        db().execute(
            "TRUNCATE tasks, task_attempts, task_artifacts, outbox_messages, tenant_spend, tenant_limits, model_calls, "
            "model_limits, model_state, task_queues CASCADE"
        )
        world = World(db)
        budget, rpm = Decimal("0.01"), 6
        for tenant in ("A", "B", "C"):
            world.limits.set_monthly_budget(TenantId(tenant), budget, now=NOW)
            world.add(tenant, 6, worst="0.003")
        world.set_rpm("m", rpm)
        at = NOW
        inflight: list[Task] = []
        for action, arg in plan:
            if action == "claim":
                inflight += world.running(at, limit=1 + arg, by=f"inv{arg % 2}")
            elif action in ("finish", "fail") and inflight:
                run_, inflight = inflight[: arg + 1], inflight[arg + 1 :]
                for by in ("inv0", "inv1"):
                    mine = [t for t in run_ if t.locked_by == by]
                    if action == "finish":
                        world.succeed(mine, at, cost="0.002", by=by)
                    else:
                        outcome = RunOutcome(TaskStatus.FAILED, "failed", error_code="timeout", charge_held=True)
                        world.repo.finish_runs(
                            [FinishedRun(t.id, t.attempt_count, outcome) for t in mine], locked_by=by, now=at
                        )
            elif action == "abandon" and inflight:
                # its lease runs out while its call goes on: the call's end comes later, with other runs' (fenced)
                victim = inflight.pop(arg % len(inflight))
                db().execute(
                    "UPDATE tasks SET locked_until = %s WHERE id = %s AND status = 'running'",
                    [at - timedelta(seconds=1), victim.id],
                )
                world.repo.abandon_expired([victim.id], now=at)
                inflight.append(victim)
            elif action == "limits":
                rpm = 3 + arg
                world.set_rpm("m", rpm)
            else:
                at += timedelta(seconds=5 * (arg + 1))
            _invariants(db, budget, max(rpm, 8))

    run()


def test_claim_results_name_their_rows_as_the_tasks_table_has_them(world: World) -> None:
    # the claim returns (task, wake_at): a column added to tasks later must not break the composite
    world.add("A")
    [task] = world.running()
    assert isinstance(task.id, uuid.UUID) and task.locked_by == "inv"


def test_queues_that_hold_nothing_and_that_the_models_clock_passed_are_pruned(world: World, db) -> None:
    from aitasks.adapters.postgres import PostgresRetention

    world.add("gone")
    world.succeed(world.running())  # gone's queue is empty now
    world.add("busy", 2)
    world.succeed(world.running(limit=1))  # busy still has one queued
    # a claim that takes busy's other task finds gone's queue empty, and marks it so
    assert [t.tenant_id for t in world.claim(limit=1)] == ["busy"]
    PostgresRetention(db).prune_model_calls(cutoff=NOW - timedelta(minutes=5), limit=100)
    assert {r["tenant_id"] for r in db().execute("SELECT tenant_id FROM task_queues")} == {"busy"}
    # busy's is kept (a task of it runs); a task for the pruned queue makes it again, and it is served
    world.add("gone")
    assert [t.tenant_id for t in world.running()] == ["gone"]


def test_a_models_wake_up_asks_for_as_many_slots_as_its_room_holds(world: World) -> None:
    # given: a model at 1,000 tokens a minute and calls of 100: room for 10
    world.set_rpm("m", None, tpm=1000)
    world.limits.set_max_concurrency(TenantId("A"), 50, now=NOW)
    world.add("A", 30, tokens=100)
    # a claim of one slot takes one call and sees room for 9 more now: one wake-up, now, for 9 slots (not 9 messages)
    answer = world.claim(limit=1)
    [notice] = [t for t in answer if t.deferred_until is not None]
    assert (notice.deferred_until, notice.wake_slots) == (NOW, 9)
    # a claim of 10 takes the other 9; the window is full: one wake-up for when the first call leaves it, for the
    # slots the calls leaving then free (the first one's)
    answer = world.claim(NOW + timedelta(seconds=1), limit=10)
    assert len([t for t in answer if t.status is TaskStatus.RUNNING]) == 9
    [notice] = [t for t in answer if t.deferred_until is not None]
    assert (notice.deferred_until, notice.wake_slots) == (NOW + timedelta(seconds=61), 1)
