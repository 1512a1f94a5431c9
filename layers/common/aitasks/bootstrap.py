"""The composition root: the one module that knows both the use cases and the adapters behind their ports.

Nothing connects at import time. Each builder is cached for the life of the process (a Lambda environment);
tests replace a builder (monkeypatch `bootstrap.task_repository`, say) and then run the real handlers.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Any

from aitasks.settings import get_settings

if TYPE_CHECKING:
    from collections.abc import Callable

    from aws_lambda_powertools import Logger, Tracer
    from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
    from aws_lambda_powertools.event_handler.middlewares import NextMiddleware
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from aitasks.adapters.idempotency import PostgresIdempotencyStore
    from aitasks.adapters.postgres import ConnectionProvider
    from aitasks.application.ai import AiProvider, PriceTable
    from aitasks.application.auth import Authenticate
    from aitasks.application.dispatch import Dispatcher
    from aitasks.application.events import RelayOutbox
    from aitasks.application.executor import Execute, RescueWakeUp
    from aitasks.application.limits import GetUsage, ModelCatalog
    from aitasks.application.live import Connect, Disconnect, IssueTicket, Notify, RedeemTicket
    from aitasks.application.maintenance import Prune, RedriveTask, Sweep
    from aitasks.application.ports import (
        ApiKeyRepository,
        ConnectionRegistry,
        EventPublisher,
        LimitsRepository,
        MessagePusher,
        ModelRepository,
        Scheduler,
        TaskQueries,
        TaskRepository,
        TicketStore,
        WorkQueue,
    )
    from aitasks.application.tasks import (
        CancelTask,
        CreateTask,
        GetArtifacts,
        GetAttempts,
        GetHistory,
        GetTask,
        ListTasks,
    )
    from aitasks.domain.task import TenantId

# Adapters and use cases are imported by the builders that need them, not here: a function's cold start loads
# only what its own requests use (the query function, say, never loads boto3 or the idempotency utility).

logger = logging.getLogger(__name__)


def structured_logs(source: Logger) -> None:
    """Our modules' log lines (the `aitasks` loggers) go out through the handler's Powertools logger: as JSON, with
    the invocation's keys, at its level."""
    from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers

    logging.getLogger("aitasks")
    copy_config_to_registered_loggers(source_logger=source, include={"aitasks"})


def database_url() -> str:
    settings = get_settings()
    if settings.database_url:
        return settings.database_url
    if settings.database_secret_arn:
        from aitasks.adapters.postgres import database_url_from_secret

        return database_url_from_secret(
            settings.database_secret_arn,
            max_age_s=settings.database_secret_max_age_s,
            host=settings.database_host,
            port=settings.database_port,
            dbname=settings.database_name,
        )
    raise RuntimeError("no database configured: set DATABASE_URL (or DATABASE_SECRET_ARN on AWS)")


@functools.cache
def connection() -> ConnectionProvider:
    from aitasks.adapters.postgres import ConnectionProvider

    return ConnectionProvider(database_url, prepare=get_settings().database_prepared_statements)


# An API request's statements end this long before its function's own timeout, so that it answers 503 itself (the
# gateway would answer 502 for a function that timed out), and never take more than API_DATABASE_BUDGET_S.
ANSWER_MARGIN_S = 1.5
API_DATABASE_BUDGET_S = 6.0


def request_budget_s(context: LambdaContext | None) -> float:
    """How long a request's database work may take: within its function's remaining time, with room to answer."""
    if context is None:
        return API_DATABASE_BUDGET_S
    return min(API_DATABASE_BUDGET_S, context.get_remaining_time_in_millis() / 1000 - ANSWER_MARGIN_S)


def database_deadline(app: APIGatewayRestResolver, next_middleware: NextMiddleware) -> Response[Any]:
    """API middleware: the request's database work ends by its deadline (503 + Retry-After past it)."""
    with connection().deadline(request_budget_s(app.lambda_context)):
        return next_middleware(app)


@functools.cache
def task_repository() -> TaskRepository:
    from aitasks.adapters.postgres import PostgresTaskRepository

    return PostgresTaskRepository(connection())


@functools.cache
def task_queries() -> TaskQueries:
    from aitasks.adapters.postgres import PostgresTaskRepository

    return PostgresTaskRepository(connection())


@functools.cache
def idempotency_store() -> PostgresIdempotencyStore:
    from aitasks.adapters.idempotency import PostgresIdempotencyStore

    return PostgresIdempotencyStore(connection())


@functools.cache
def api_key_repository() -> ApiKeyRepository:
    from aitasks.adapters.postgres import PostgresApiKeyRepository

    return PostgresApiKeyRepository(connection())


@functools.cache
def work_queue() -> WorkQueue:
    from aitasks.adapters.sqs import SqsWorkQueue

    url = get_settings().work_queue_url
    if not url:
        raise RuntimeError("WORK_QUEUE_URL is not set")
    return SqsWorkQueue(url)


@functools.cache
def ai_provider() -> AiProvider:
    """The model provider of the settings. The OpenAI SDK is imported only when this provider is built."""
    settings = get_settings()
    if settings.ai_provider == "fake":
        from aitasks.adapters.fake_provider import FakeAiProvider

        return FakeAiProvider()
    from aitasks.adapters.openai_provider import OpenAiProvider

    return OpenAiProvider(
        api_key=openai_api_key(), base_url=settings.openai_base_url, default_model=settings.ai_default_model
    )


def openai_api_key() -> str:
    settings = get_settings()
    if settings.openai_api_key is not None:
        return settings.openai_api_key.get_secret_value()
    if settings.openai_api_key_secret_arn:
        from aws_lambda_powertools.utilities import parameters

        return str(parameters.get_secret(settings.openai_api_key_secret_arn, max_age=300))
    raise RuntimeError("AI_PROVIDER=openai needs OPENAI_API_KEY (locally) or OPENAI_API_KEY_SECRET_ARN (on AWS)")


@functools.cache
def model_repository() -> ModelRepository:
    from aitasks.adapters.postgres import PostgresModelRepository

    return PostgresModelRepository(connection())


def prices() -> PriceTable:
    """Every model's price, from the database (synced from genai-prices), read again every few minutes."""
    return model_repository().price_table()


def model_catalog() -> ModelCatalog:
    from aitasks.application.limits import ModelCatalog

    settings = get_settings()
    return ModelCatalog.of(
        prices(),
        default_model=settings.ai_default_model,
        allowed=settings.ai_allowed_models,
        provider=settings.ai_provider,
    )


def sync_prices(
    models: ModelRepository | None = None, *, provider: str | None = None, overrides_json: str | None = None
) -> int:
    """Write genai-prices' prices for the provider (the settings' unless given), with AI_PRICES_JSON's overrides (the
    settings' unless a provider is given), to the database."""
    from datetime import UTC, datetime

    from aitasks.adapters.genai_prices import provider_prices, source
    from aitasks.application.limits import SyncPrices

    if provider is None:
        provider, overrides_json = get_settings().ai_provider, get_settings().ai_prices_json
    api = "openai" if provider == "fake" else provider  # the fake deployment prices OpenAI's models too
    return SyncPrices(
        models or model_repository(),
        lambda: provider_prices(api, on=datetime.now(UTC).date()),
        provider=api,
        source=source(),
        overrides_json=overrides_json,
    )()


@functools.cache
def scheduler() -> Scheduler | None:
    """EventBridge Scheduler for wake-ups beyond 15 minutes, when the stack configured it."""
    settings = get_settings()
    if not (settings.schedule_group_name and settings.work_queue_arn and settings.scheduler_role_arn):
        return None
    from aitasks.adapters.scheduler import EventBridgeScheduler

    return EventBridgeScheduler(settings.schedule_group_name, settings.work_queue_arn, settings.scheduler_role_arn)


def dispatcher() -> Dispatcher:
    from aitasks.application.dispatch import Dispatcher

    return Dispatcher(work_queue(), scheduler(), max_queue_delay_s=get_settings().max_queue_delay_seconds)


@functools.cache
def event_publisher() -> EventPublisher | None:
    bus = get_settings().event_bus_name
    if not bus:
        return None
    from aitasks.adapters.eventbridge import EventBridgePublisher

    return EventBridgePublisher(bus)


@functools.cache
def inline_event_publisher() -> EventPublisher | None:
    """For the relay right after a request: one try and a one-second timeout, so a slow bus costs a request at
    most about a second; what it leaves is the scheduled relay's."""
    bus = get_settings().event_bus_name
    if not bus:
        return None
    from aitasks.adapters.eventbridge import EventBridgePublisher

    return EventBridgePublisher(bus, tries=1, timeout_s=1)


def relay_outbox() -> RelayOutbox | None:
    from aitasks.adapters.postgres import PostgresOutbox
    from aitasks.application.events import RelayOutbox

    publisher = event_publisher()
    return RelayOutbox(PostgresOutbox(connection()), publisher) if publisher else None


def publish_events_soon(budget_s: float = 1.0) -> None:
    """After a handler commits: publish what it wrote, best effort and bounded in time. A failure only delays the
    events until the scheduled relay (every minute) picks them up."""
    publisher = inline_event_publisher()
    if publisher is None:
        return
    from aitasks.adapters.postgres import PostgresOutbox
    from aitasks.application.events import RelayOutbox

    try:
        RelayOutbox(PostgresOutbox(connection()), publisher, batch_size=20)(budget_s=budget_s, max_batches=1)
    except Exception:
        logger.warning("inline outbox relay failed; the scheduled relay will publish", exc_info=True)


def create_task() -> CreateTask:
    from aitasks.application.tasks import CreateTask

    return CreateTask(
        task_repository(),
        dispatcher(),
        model_catalog(),
        limits_repository(),
        allow_fake=get_settings().ai_provider == "fake",
    )


def get_usage() -> GetUsage:
    from aitasks.application.limits import GetUsage

    return GetUsage(limits_repository())


def get_task() -> GetTask:
    from aitasks.application.tasks import GetTask

    return GetTask(task_repository())


def cancel_task() -> CancelTask:
    from aitasks.application.tasks import CancelTask

    return CancelTask(task_repository(), dispatcher())


def redrive_task() -> RedriveTask:
    from aitasks.application.maintenance import RedriveTask

    return RedriveTask(task_repository(), dispatcher())


def prune() -> Prune:
    from aitasks.adapters.postgres import PostgresRetention
    from aitasks.application.maintenance import Prune

    settings = get_settings()
    return Prune(
        PostgresRetention(connection()),
        task_days=settings.retention_days,
        outbox_days=settings.outbox_retention_days,
        prune_tasks=settings.retention_enabled,
    )


def sweep() -> Sweep:
    from aitasks.application.maintenance import Sweep

    settings = get_settings()
    return Sweep(
        task_repository(),
        dispatcher(),
        prune(),
        grace_s=settings.sweeper_grace_seconds,
        watch_s=settings.sweeper_watch_seconds,
        lease_every_s=settings.sweeper_lease_interval_seconds,
        after_freeing=publish_events_soon,
    )


def list_tasks() -> ListTasks:
    from aitasks.application.tasks import ListTasks

    return ListTasks(task_queries())


def get_attempts() -> GetAttempts:
    from aitasks.application.tasks import GetAttempts

    return GetAttempts(task_queries())


def get_artifacts() -> GetArtifacts:
    from aitasks.application.tasks import GetArtifacts

    return GetArtifacts(task_queries())


def get_history() -> GetHistory:
    from aitasks.application.tasks import GetHistory

    return GetHistory(task_queries())


@functools.cache
def ticket_store() -> TicketStore:
    from aitasks.adapters.postgres import PostgresTicketStore

    return PostgresTicketStore(connection())


@functools.cache
def connection_registry() -> ConnectionRegistry:
    from aitasks.adapters.postgres import PostgresConnectionRegistry

    return PostgresConnectionRegistry(connection())


def websocket_url() -> str:
    url = get_settings().websocket_url
    if not url:
        raise RuntimeError("WEBSOCKET_URL is not set")
    return url


@functools.cache
def pusher() -> MessagePusher:
    from aitasks.adapters.websocket import ApiGatewayPusher

    return ApiGatewayPusher(websocket_url())


def issue_ticket() -> IssueTicket:
    from aitasks.application.live import IssueTicket

    return IssueTicket(ticket_store())


def redeem_ticket() -> RedeemTicket:
    from aitasks.application.live import RedeemTicket

    return RedeemTicket(ticket_store())


def open_connection() -> Connect:
    from aitasks.application.live import Connect

    return Connect(connection_registry())


def close_connection() -> Disconnect:
    from aitasks.application.live import Disconnect

    return Disconnect(connection_registry())


def notify() -> Notify:
    from aitasks.application.live import Notify

    return Notify(connection_registry(), pusher())


def idempotently(
    fn: Callable[[], dict[str, Any]],
    *,
    scope: str,
    tenant_id: TenantId,
    key: str | None,
    payload: Any,
    lambda_context: LambdaContext | None,
) -> tuple[dict[str, Any], bool]:
    """`fn()` once per tenant and Idempotency-Key (no key: just `fn()`); True when the result is a replay."""
    if key is None:
        return fn(), False
    from aitasks.adapters.idempotency import idempotent_call

    return idempotent_call(
        idempotency_store(), fn, scope=scope, tenant=tenant_id, key=key, payload=payload, lambda_context=lambda_context
    )


@functools.cache
def heartbeat_connection() -> ConnectionProvider:
    """The executor heartbeat's own connection, opened by its first beat (an invocation shorter than a heartbeat
    opens none): a beat never waits behind the invocation's claim or finish on `connection()`, and a psycopg
    connection serves one thread at a time."""
    from aitasks.adapters.postgres import ConnectionProvider

    return ConnectionProvider(
        database_url, application_name="aitasks-heartbeat", prepare=get_settings().database_prepared_statements
    )


@functools.cache
def lease_repository() -> TaskRepository:
    """The tasks, for the executor's heartbeat only (its leases), on the heartbeat's connection."""
    from aitasks.adapters.postgres import PostgresTaskRepository

    return PostgresTaskRepository(heartbeat_connection())


def execute() -> Execute:
    from aitasks.application.executor import Execute
    from aitasks.domain.retry import RetryPolicy

    settings = get_settings()
    return Execute(
        task_repository(),
        work_queue(),
        dispatcher(),
        ai_provider(),
        prices,
        RetryPolicy(),
        lease_s=settings.lease_seconds,
        heartbeat_s=settings.heartbeat_seconds,
        ai_timeout_s=settings.ai_timeout_seconds,
        margin_s=settings.executor_margin_seconds,
        max_parallel=settings.executor_max_parallel,
        leases=lease_repository(),
        max_pause_s=settings.ai_max_pause_seconds,
        account_pause_s=settings.ai_account_pause_seconds,
    )


def rescue_wakeup() -> RescueWakeUp:
    from aitasks.application.executor import RescueWakeUp

    return RescueWakeUp(task_repository(), dispatcher())


@functools.cache
def limits_repository() -> LimitsRepository:
    from aitasks.adapters.postgres import PostgresLimitsRepository

    return PostgresLimitsRepository(connection())


def migrate_database() -> list[str]:
    """Apply pending migrations and sync the model prices (the deploy's custom resource); the migrations applied."""
    from aitasks.adapters.migrate import migrate
    from aitasks.adapters.postgres import PostgresModelRepository, connect

    with connect(database_url(), application_name="aitasks-migrate") as conn:
        applied = [f"{m.version:04d}_{m.name}" for m in migrate(conn)]
        sync_prices(PostgresModelRepository(lambda: conn))
        return applied


def report_to_cloudformation(event: dict[str, Any], **outcome: Any) -> None:
    """Answer the deploy's custom resource (see adapters/cloudformation.respond)."""
    from aitasks.adapters.cloudformation import respond

    respond(event, **outcome)


def tracer() -> Tracer:
    """Powertools' Tracer; when it would not trace (tracing off, or outside Lambda), one on a provider that records
    nothing, so that the X-Ray SDK is not loaded (adapters/tracing.py)."""
    from aws_lambda_powertools import Tracer

    if get_settings().tracing:
        return Tracer()
    from aitasks.adapters.tracing import NoTracing

    return Tracer(provider=NoTracing(), disabled=True)


def authenticate() -> Authenticate:
    from aitasks.application.auth import Authenticate

    return Authenticate(api_key_repository())
