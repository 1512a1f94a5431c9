"""Configuration: one pydantic model, read from the environment once. Nothing else reads os.environ."""

from __future__ import annotations

import functools

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Env vars hold names and addresses (a secret's ARN, a queue URL); secret values are fetched at run time.

    A missing setting is reported when the resource is first needed, not at import: the health route and the
    tests of pure handlers need no database.
    """

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    database_url: str | None = Field(default=None, description="libpq URL; wins over DATABASE_SECRET_ARN")
    database_secret_arn: str | None = Field(default=None, description="Secrets Manager secret in RDS format")
    database_secret_max_age_s: int = Field(default=300, ge=0, description="how long a fetched secret is cached")
    work_queue_url: str | None = Field(default=None, description="the SQS queue the executor consumes")
    lease_seconds: int = Field(default=150, ge=1, description="executor lease; below the queue visibility timeout")


@functools.cache
def get_settings() -> Settings:
    return Settings()
