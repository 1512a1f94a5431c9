"""The state machine: property tests over random walks, and the shape of the table itself."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aitasks.domain.errors import IllegalTransitionError
from aitasks.domain.task import EVENT_FOR_STATUS, TERMINAL, TRANSITIONS, Task, TaskStatus, TenantId, sources_of

NOW = datetime(2026, 1, 1, tzinfo=UTC)
statuses = st.sampled_from(list(TaskStatus))


def new_task(**kwargs: object) -> Task:
    return Task.submit(tenant_id=TenantId("t"), type="chat", payload={"prompt": "hi"}, now=NOW, **kwargs)  # type: ignore[arg-type]


@given(st.lists(statuses, max_size=30))
def test_a_random_walk_moves_only_along_the_table(walk: list[TaskStatus]) -> None:
    task = new_task()
    for target in walk:
        before = task.status
        if target in TRANSITIONS[before]:
            task = task.transition(target, NOW)
            assert task.status is target
        else:
            with pytest.raises(IllegalTransitionError):
                task.transition(target, NOW)
            assert task.status is before  # a refused transition changes nothing


def test_terminal_states_have_no_way_out_but_an_operators_redrive() -> None:
    assert TRANSITIONS[TaskStatus.SUCCEEDED] == TRANSITIONS[TaskStatus.CANCELLED] == frozenset()
    assert TRANSITIONS[TaskStatus.DEAD_LETTER] == {TaskStatus.QUEUED}


def test_every_status_is_reachable_from_created_and_every_live_one_can_end() -> None:
    reachable, frontier = {TaskStatus.CREATED}, [TaskStatus.CREATED]
    while frontier:
        for nxt in TRANSITIONS[frontier.pop()]:
            if nxt not in reachable:
                reachable.add(nxt)
                frontier.append(nxt)
    assert reachable == set(TaskStatus)
    for status in set(TaskStatus) - TERMINAL:
        assert {TaskStatus.CANCELLED, TaskStatus.DEAD_LETTER} <= TRANSITIONS[status], status


def test_the_table_is_the_one_of_the_design() -> None:
    s = TaskStatus
    assert sources_of(s.CANCELLED) == {s.CREATED, s.QUEUED, s.FAILED, s.RESERVED, s.RUNNING}
    assert sources_of(s.SUCCEEDED) == {s.RUNNING}
    assert sources_of(s.FAILED) == {s.RUNNING}
    assert sources_of(s.QUEUED) == {s.CREATED, s.FAILED, s.DEAD_LETTER}
    assert sources_of(s.DEAD_LETTER) == set(s) - TERMINAL
    # Every status but `reserved` announces itself (a claim passes through reserved and says task.started).
    assert set(EVENT_FOR_STATUS) == set(s) - {s.RESERVED}


@given(st.integers(min_value=1, max_value=10), st.integers(min_value=0, max_value=9))
def test_submit_queues_with_bounds_respected(max_attempts: int, priority: int) -> None:
    task = new_task(max_attempts=max_attempts, priority=priority)
    assert task.status is TaskStatus.QUEUED
    assert (task.max_attempts, task.priority, task.attempt_count) == (max_attempts, priority, 0)


@pytest.mark.parametrize("max_attempts", [0, 11, -1])
def test_submit_refuses_an_attempt_budget_out_of_range(max_attempts: int) -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        new_task(max_attempts=max_attempts)


def test_a_scheduled_task_becomes_available_at_its_time_and_a_past_one_now() -> None:
    later = NOW + timedelta(minutes=20)
    assert new_task(scheduled_at=later).available_at == later
    assert new_task(scheduled_at=NOW - timedelta(days=1)).available_at == NOW
