"""The composition root: the one module that knows both the use cases and the adapters behind their ports.

Nothing connects at import time. Each builder is cached for the life of the process (a Lambda environment);
tests replace a builder (monkeypatch `bootstrap.task_repository`, say) and then run the real handlers.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from aitasks.adapters.postgres import (
    ConnectionProvider,
    PostgresApiKeyRepository,
    PostgresTaskRepository,
    database_url_from_secret,
)
from aitasks.adapters.sqs import SqsWorkQueue
from aitasks.application.auth import Authenticate, CreateApiKey
from aitasks.application.tasks import CreateTask, GetTask, RunTask
from aitasks.settings import get_settings

if TYPE_CHECKING:
    from aitasks.application.ports import ApiKeyRepository, TaskRepository, WorkQueue


def database_url() -> str:
    settings = get_settings()
    if settings.database_url:
        return settings.database_url
    if settings.database_secret_arn:
        return database_url_from_secret(settings.database_secret_arn, max_age_s=settings.database_secret_max_age_s)
    raise RuntimeError("no database configured: set DATABASE_URL (or DATABASE_SECRET_ARN on AWS)")


@functools.cache
def connection() -> ConnectionProvider:
    return ConnectionProvider(database_url)


@functools.cache
def task_repository() -> TaskRepository:
    return PostgresTaskRepository(connection())


@functools.cache
def api_key_repository() -> ApiKeyRepository:
    return PostgresApiKeyRepository(connection())


@functools.cache
def work_queue() -> WorkQueue:
    url = get_settings().work_queue_url
    if not url:
        raise RuntimeError("WORK_QUEUE_URL is not set")
    return SqsWorkQueue(url)


def create_task() -> CreateTask:
    return CreateTask(task_repository(), work_queue())


def get_task() -> GetTask:
    return GetTask(task_repository())


def run_task() -> RunTask:
    return RunTask(task_repository(), lease_s=get_settings().lease_seconds)


def authenticate() -> Authenticate:
    return Authenticate(api_key_repository())


def create_api_key() -> CreateApiKey:
    return CreateApiKey(api_key_repository())
