"""Configuration: one pydantic model, read from the environment once. Nothing else reads os.environ."""

from __future__ import annotations

import functools
import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator


class Settings(BaseModel):
    """Env vars hold names and addresses (a secret's ARN, a queue URL); secret values are fetched at run time.

    A missing setting is reported when the resource is first needed, not at import: the health route and the
    tests of pure handlers need no database.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    database_url: str | None = Field(default=None, description="libpq URL; wins over DATABASE_SECRET_ARN")
    database_secret_arn: str | None = Field(default=None, description="Secrets Manager secret in RDS format")
    database_host: str | None = Field(default=None, description="wins over the secret's host (an RDS Proxy)")
    database_port: int | None = Field(default=None, description="wins over the secret's port")
    database_name: str | None = Field(default=None, description="wins over the secret's dbname")
    database_prepared_statements: bool = Field(
        default=True, description="prepare repeated statements server-side; off behind RDS Proxy (it would pin)"
    )
    database_secret_max_age_s: int = Field(default=300, ge=0, description="how long a fetched secret is cached")
    work_queue_url: str | None = Field(default=None, description="the SQS queue the executor consumes")
    lease_seconds: int = Field(default=20, ge=1, description="a run's lease, renewed by every heartbeat")
    heartbeat_seconds: int = Field(default=5, ge=1, description="how often the executor renews its runs' leases")
    executor_margin_seconds: float = Field(
        default=10, ge=0, description="kept free at an invocation's end: a call starts only if it can finish before"
    )
    executor_max_parallel: int = Field(default=10, ge=1, le=100, description="model calls one invocation runs at once")
    ai_provider: Literal["fake", "openai"] = Field(default="fake", description="the model provider")
    ai_timeout_seconds: float = Field(default=100, gt=0, description="one model call; below the executor timeout")
    ai_default_model: str = Field(default="gpt-4o-mini", description="the model when a task names none")
    ai_max_pause_seconds: float = Field(
        default=300, ge=0, le=86_400, description="the longest a provider's 429 (its Retry-After) pauses its model"
    )
    ai_account_pause_seconds: float = Field(
        default=300, gt=0, le=86_400, description="how long a quota or auth error pauses its model (then retried)"
    )
    openai_api_key: SecretStr | None = Field(default=None, description="local use; on AWS use the secret")
    openai_api_key_secret_arn: str | None = Field(default=None, description="Secrets Manager secret: the key")
    openai_base_url: str | None = Field(default=None, description="OpenAI-compatible or Azure OpenAI endpoint")
    ai_prices_json: str | None = Field(default=None, description="price overrides (see application/ai.py)")
    ai_allowed_models: str | None = Field(
        default=None, description="models tasks may ask for, comma-separated (default: the priced ones)"
    )
    work_queue_arn: str | None = Field(default=None, description="the work queue, as a Scheduler target")
    schedule_group_name: str | None = Field(default=None, description="Scheduler group for far-off wake-ups")
    scheduler_role_arn: str | None = Field(default=None, description="role the Scheduler sends wake-ups with")
    max_queue_delay_seconds: int = Field(default=900, ge=1, le=900, description="longer waits use the scheduler")
    event_bus_name: str | None = Field(default=None, description="the bus task events are published to")
    websocket_url: str | None = Field(default=None, description="the live-updates WebSocket stage (wss://...)")
    sweeper_grace_seconds: int = Field(default=120, ge=1, description="a due task's wake-up is re-sent after this")
    sweeper_watch_seconds: float = Field(
        default=0, ge=0, le=600, description="how long a sweep keeps closing expired leases (0: once)"
    )
    sweeper_lease_interval_seconds: float = Field(
        default=10, gt=0, description="while it watches, a sweep closes expired leases this often"
    )
    retention_enabled: bool = Field(default=False, description="the sweeper prunes finished tasks")
    retention_days: int = Field(default=30, ge=1, description="finished tasks are kept this long")
    outbox_retention_days: int = Field(default=7, ge=1, description="published events are kept this long")
    powertools_trace_disabled: bool = Field(default=False, description="Powertools Tracer off (no X-Ray daemon)")
    lambda_task_root: str | None = Field(default=None, description="set by Lambda; Powertools traces only there")

    @property
    def tracing(self) -> bool:
        """Whether Powertools' Tracer would trace (it turns itself off outside Lambda)."""
        return not self.powertools_trace_disabled and self.lambda_task_root is not None

    @model_validator(mode="after")
    def _timeouts_nest(self) -> Settings:
        if not 2 * self.heartbeat_seconds < self.lease_seconds:
            raise ValueError("LEASE_SECONDS must be over twice HEARTBEAT_SECONDS (one missed beat keeps the lease)")
        return self


@functools.cache
def get_settings() -> Settings:
    """The environment, each variable under its lower-cased name (what pydantic-settings would read, without its
    import: about 40 ms of every cold start), validated as the model says."""
    return Settings.model_validate({name.lower(): value for name, value in os.environ.items()})
