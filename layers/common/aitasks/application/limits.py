"""Models and money: which models a deployment lets tenants use, what each costs, and what a tenant's month used.

The rules that hold a run back (rate limits, a 429's pause, budgets) live in the claim statement (migration 0009);
this module keeps what Python decides: a model's price and worst cost when a task is created, the allow-list, the
price sync, the usage report, and the wake-ups that make an operator's change take effect at once.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, time, timedelta
from typing import TYPE_CHECKING

from aitasks.application.ai import FAKE_MODEL_PRICE, ModelPrice, PriceTable
from aitasks.application.ports import WakeUp
from aitasks.application.tasks import utc_now
from aitasks.domain.errors import InvalidTaskError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from decimal import Decimal

    from aitasks.application.ports import LimitsRepository, ModelRepository, ModelSpend, TaskRepository, WorkQueue
    from aitasks.domain.task import Task, TenantId

FAKE_MODEL = "fake-echo-1"


@dataclasses.dataclass(frozen=True, slots=True)
class ModelCatalog:
    """The models a deployment runs: its default, their prices, and the allow-list (None: any name, as the fake
    provider takes)."""

    default_model: str
    prices: PriceTable
    allowed: frozenset[str] | None

    @classmethod
    def of(cls, prices: PriceTable, *, default_model: str, allowed: str | None, provider: str) -> ModelCatalog:
        """`allowed` is AI_ALLOWED_MODELS (comma-separated); unset, the default model and every model the provider
        has a price for are allowed - or any model at all with the fake provider."""
        if allowed:
            names = {name.strip().lower() for name in allowed.split(",") if name.strip()}
            return cls(default_model, prices, frozenset(names))
        if provider == "fake":
            return cls(default_model, prices, None)
        priced = {name for name, price in prices.prices.items() if price.provider == provider}
        return cls(default_model, prices, frozenset({default_model.lower(), *priced}))

    def resolve(self, asked: str | None) -> str:
        """The model a task runs on: the one it asks for if the deployment allows it, else its default.

        A dated snapshot of an allowed model is allowed (`gpt-4o-mini-2024-07-18`); anything else is a 422."""
        model = asked or self.default_model
        if self.allowed is None or model.lower() in self.allowed:
            return model
        known = self.prices.known_name(model)
        if known is not None and known in self.allowed:
            return model
        raise InvalidTaskError([("payload.model", f"this deployment does not run {model!r}")])


@dataclasses.dataclass(frozen=True, slots=True)
class SyncPrices:
    """Write the prices the functions use: genai-prices' for the provider, then AI_PRICES_JSON's overrides, and the
    fake model's. Run with every migration and by `aitasks models sync-prices`."""

    models: ModelRepository
    provider_prices: Callable[[], Mapping[str, ModelPrice]]
    provider: str
    source: str
    overrides_json: str | None = None
    clock: Callable[[], datetime] = utc_now

    def __call__(self) -> int:
        prices: dict[str, tuple[str, ModelPrice, str]] = {
            name: (self.provider, price, self.source) for name, price in self.provider_prices().items()
        }
        prices[FAKE_MODEL] = ("fake", FAKE_MODEL_PRICE, "aitasks: the fake provider's model")
        if self.overrides_json:
            table = PriceTable.of({}, effective_date=self.clock().date()).with_overrides(self.overrides_json)
            for name, price in table.prices.items():
                prices[name] = (self.provider, price, f"AI_PRICES_JSON ({table.effective_date})")
        return self.models.save_prices(prices, now=self.clock())


@dataclasses.dataclass(frozen=True, slots=True)
class Usage:
    """A tenant's month: its budget, what it spent and holds, per model; its concurrency and its work."""

    period_start: datetime
    period_end: datetime
    budget_usd: Decimal | None
    spent_usd: Decimal
    reserved_usd: Decimal
    max_concurrency: int
    running: int
    queued: int
    by_model: list[ModelSpend]


def period_bounds(now: datetime) -> tuple[datetime, datetime]:
    """The budget period (a calendar month, UTC) `now` falls in: its first instant and the next month's."""
    start = datetime.combine(now.astimezone(UTC).date().replace(day=1), time(), tzinfo=UTC)
    end = (start + timedelta(days=32)).replace(day=1)
    return start, end


@dataclasses.dataclass(frozen=True, slots=True)
class GetUsage:
    limits: LimitsRepository
    clock: Callable[[], datetime] = utc_now

    def __call__(self, tenant_id: TenantId) -> Usage:
        now = self.clock()
        limits = self.limits.limits(tenant_id, now=now)
        start, end = period_bounds(now)
        return Usage(
            period_start=start,
            period_end=end,
            budget_usd=limits.monthly_budget_usd,
            spent_usd=limits.spent_usd,
            reserved_usd=limits.reserved_usd,
            max_concurrency=limits.max_concurrency,
            running=limits.running,
            queued=limits.queued,
            by_model=self.limits.spend_by_model(tenant_id, now=now),
        )


# An operator's change wakes at most this many tasks itself: each wake-up starts an executor that claims up to its
# batch and goes on claiming as its runs end, and the sweeper wakes whatever is left within a minute or two.
MAX_WAKE_UPS = 50


@dataclasses.dataclass(frozen=True, slots=True)
class Woken:
    """What waking after an operator's change did: the tasks whose wake-ups went out, those whose did not (the
    sweeper sends theirs), and why they did not."""

    sent: list[Task]
    unsent: list[Task] = dataclasses.field(default_factory=list)
    error: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class WakeReleasedWork:
    """After an operator's change - a tenant's cap, budget or weight, a model's limits, a lifted pause - wake-ups at
    once for the work it may let run, so that it starts within seconds instead of at the sweeper's next minute. A
    wake-up only says there is due work: the claim decides what runs, by the limits as they are now.

    The change is saved before this runs, in its own transaction: a wake-up that cannot be sent costs delay, never
    the change."""

    tasks: TaskRepository
    models: ModelRepository
    queue: WorkQueue
    clock: Callable[[], datetime] = utc_now

    def tenant(self, tenant_id: TenantId) -> Woken:
        """The tenant's due tasks, as many as its cap has room for now (marked woken, so the sweeper leaves them)."""
        return self.send(self.tasks.wake_freed({tenant_id: MAX_WAKE_UPS}, now=self.clock()))

    def model(self, model: str) -> Woken:
        """One due task of each tenant waiting on the model."""
        return self.send(self.models.due_tasks(model, now=self.clock(), limit=MAX_WAKE_UPS))

    def send(self, tasks: list[Task]) -> Woken:
        """Wake-ups for these tasks (a redrive's, say), in order, until one cannot be sent."""
        for i, task in enumerate(tasks):
            try:
                self.queue.send(WakeUp(tenant_id=task.tenant_id, task_id=task.id))
            except Exception as exc:  # the queue's client raises its own errors; the rest would fail the same way
                return Woken(tasks[:i], tasks[i:], f"{type(exc).__name__}: {exc}")
        return Woken(tasks)
