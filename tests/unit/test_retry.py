"""Backoff bounds, the attempt budget, and Retry-After winning."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aitasks.domain.retry import RetryPolicy

NOW = datetime(2026, 1, 1, tzinfo=UTC)

policies = st.builds(
    RetryPolicy,
    base_delay_s=st.floats(min_value=0.1, max_value=60),
    multiplier=st.floats(min_value=1, max_value=4),
    max_delay_s=st.floats(min_value=60, max_value=3600),
    max_attempts=st.integers(min_value=1, max_value=10),
)


@given(policies, st.integers(min_value=1, max_value=1000), st.integers())
def test_the_delay_stays_within_half_a_step_and_the_cap(policy: RetryPolicy, attempt: int, seed: int) -> None:
    step = policy.step(attempt)
    delay = policy.delay(attempt, rng=random.Random(seed))
    assert step <= policy.max_delay_s
    assert step / 2 <= delay <= step


@given(policies, st.integers(min_value=1, max_value=200))
def test_steps_never_shrink(policy: RetryPolicy, attempt: int) -> None:
    assert policy.step(attempt) <= policy.step(attempt + 1)


@given(policies, st.integers(min_value=1, max_value=9), st.floats(min_value=-10, max_value=10_000))
def test_retry_after_wins_within_its_clamp(policy: RetryPolicy, attempt: int, retry_after: float) -> None:
    decision = policy.decide(attempt_no=attempt, retryable=True, now=NOW, max_attempts=10, retry_after_s=retry_after)
    assert decision.retry
    assert decision.delay_s == min(max(retry_after, 0.0), policy.max_retry_after_s)
    assert decision.at == NOW + timedelta(seconds=decision.delay_s)


@given(policies, st.integers(min_value=1, max_value=10), st.integers(min_value=1, max_value=10))
def test_the_budget_is_the_tasks_own(policy: RetryPolicy, attempt: int, budget: int) -> None:
    decision = policy.decide(attempt_no=attempt, retryable=True, now=NOW, max_attempts=budget)
    assert decision.retry is (attempt < budget)


def test_a_non_retryable_error_never_retries() -> None:
    assert not RetryPolicy().decide(attempt_no=1, retryable=False, now=NOW, max_attempts=10).retry


def test_the_default_budget_is_three_attempts() -> None:
    policy = RetryPolicy()
    assert [policy.decide(attempt_no=n, retryable=True, now=NOW).retry for n in (1, 2, 3)] == [True, True, False]


@pytest.mark.parametrize(
    "kwargs", [{"base_delay_s": 0}, {"multiplier": 0.5}, {"max_delay_s": 1, "base_delay_s": 2}, {"max_attempts": 11}]
)
def test_nonsense_policies_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


@given(st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([1e12, -1e12, float("inf"), float("nan")]))
def test_any_retry_after_a_provider_sends_is_a_wait_within_the_clamp(retry_after: float) -> None:
    # a hostile or buggy server's Retry-After: 1e12, inf, NaN or negative never overflows a datetime
    policy = RetryPolicy()
    decision = policy.decide(attempt_no=1, retryable=True, now=NOW, retry_after_s=retry_after)
    assert 0 <= decision.delay_s <= policy.max_retry_after_s
    assert decision.at == NOW + timedelta(seconds=decision.delay_s)
