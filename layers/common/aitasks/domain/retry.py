"""When to try again: exponential backoff with equal jitter, a cap, an attempt budget, Retry-After wins."""

from __future__ import annotations

import dataclasses
import math
import random
from datetime import datetime, timedelta

from aitasks.domain.task import DEFAULT_MAX_ATTEMPTS, MAX_ATTEMPTS_CEILING


def clamp_wait_s(seconds: float, ceiling_s: float) -> float:
    """A provider's wait hint within [0, ceiling_s]: what it sends is not ours to trust, and a wait of 1e12 s, inf or
    NaN must not reach a datetime (OverflowError, ValueError). NaN, like a negative wait, is no wait."""
    if math.isnan(seconds):
        return 0.0
    return min(max(seconds, 0.0), ceiling_s)


@dataclasses.dataclass(frozen=True, slots=True)
class RetryDecision:
    retry: bool
    delay_s: float = 0.0
    at: datetime | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Delay before attempt n+1 after attempt n failed.

    The exponential step is `base_delay_s * multiplier ** (n - 1)`, capped at `max_delay_s`; the delay is drawn
    uniformly from the upper half of that step (equal jitter), so it is never shorter than half the step and
    never longer than the cap. A provider's Retry-After replaces the computed delay (clamped to
    `max_retry_after_s`), because the provider knows better than our guess when it will accept us again.
    """

    base_delay_s: float = 2.0
    multiplier: float = 2.0
    max_delay_s: float = 900.0
    max_retry_after_s: float = 3600.0
    max_attempts: int = DEFAULT_MAX_ATTEMPTS

    def __post_init__(self) -> None:
        if self.base_delay_s <= 0 or self.multiplier < 1 or self.max_delay_s < self.base_delay_s:
            raise ValueError("need 0 < base_delay_s <= max_delay_s and multiplier >= 1")
        if not 1 <= self.max_attempts <= MAX_ATTEMPTS_CEILING:
            raise ValueError(f"max_attempts must be within 1..{MAX_ATTEMPTS_CEILING}")

    def step(self, attempt_no: int) -> float:
        """The un-jittered delay after attempt `attempt_no` (1-based) failed, capped."""
        if attempt_no < 1:
            raise ValueError("attempt numbers start at 1")
        # Bound the exponent so huge attempt numbers do not overflow before the cap applies.
        exponent = min(attempt_no - 1, 64)
        return float(min(self.max_delay_s, self.base_delay_s * self.multiplier**exponent))

    def delay(self, attempt_no: int, *, retry_after_s: float | None = None, rng: random.Random | None = None) -> float:
        if retry_after_s is not None:
            return clamp_wait_s(retry_after_s, self.max_retry_after_s)
        step = self.step(attempt_no)
        return step / 2 + (rng or random).uniform(0, step / 2)

    def decide(
        self,
        *,
        attempt_no: int,
        retryable: bool,
        now: datetime,
        max_attempts: int | None = None,
        retry_after_s: float | None = None,
        rng: random.Random | None = None,
    ) -> RetryDecision:
        """Retry (and when), or give up: not retryable, or the task's attempt budget is spent."""
        budget = max_attempts if max_attempts is not None else self.max_attempts
        if not retryable or attempt_no >= budget:
            return RetryDecision(retry=False)
        delay = self.delay(attempt_no, retry_after_s=retry_after_s, rng=rng)
        return RetryDecision(retry=True, delay_s=delay, at=now + timedelta(seconds=delay))
