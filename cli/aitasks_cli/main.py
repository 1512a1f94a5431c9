"""The `aitasks` command: operator tasks that talk to the database, and the local stack."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit
from uuid import UUID

import typer
from botocore.exceptions import BotoCoreError, ClientError

from aitasks import bootstrap
from aitasks.adapters.migrate import migrate as apply_migrations
from aitasks.adapters.postgres import (
    ConnectionProvider,
    PostgresApiKeyRepository,
    PostgresLimitsRepository,
    PostgresModelRepository,
    PostgresRetention,
    PostgresTaskRepository,
    PostgresTenantRepository,
    connect,
)
from aitasks.adapters.usage_plans import ApiGatewayUsagePlans, plan_ids_from_outputs, stack_outputs
from aitasks.application.auth import CreateApiKey, SetTier
from aitasks.application.dispatch import Dispatcher
from aitasks.application.limits import WakeReleasedWork, Woken
from aitasks.application.maintenance import Prune, RedriveDeadLetters
from aitasks.application.ports import WakeUp
from aitasks.domain.errors import AitasksError, DependencyUnavailableError
from aitasks.domain.task import TenantId
from aitasks.domain.tenant import DEFAULT_TIER, Tier
from aitasks.settings import get_settings
from aitasks_cli import __version__, profiles, work_queue
from aitasks_cli import tasks as task_commands

LOCAL_DIR = Path(".local")
# An operator command saved its change, but the wake-ups for the work it frees could not be sent.
EXIT_NOT_WOKEN = 5

app = typer.Typer(no_args_is_help=True, help="aitasks: asynchronous AI tasks on AWS.")
profiles_app = typer.Typer(no_args_is_help=True, help="Named profiles: an API URL and key each (~/.config/aitasks).")
keys_app = typer.Typer(no_args_is_help=True, help="API keys (talks to the database).")
local_app = typer.Typer(no_args_is_help=True, help="The local stack (no Docker).")
tenants_app = typer.Typer(no_args_is_help=True, help="Tenants: tiers (usage plans) and limits (the database).")
models_app = typer.Typer(no_args_is_help=True, help="Models: prices and rate limits (the database).")
tasks_app = typer.Typer(
    no_args_is_help=True, help="Tasks over the REST API (create, get, list, ...); redrive talks to the database."
)
tasks_app.add_typer(task_commands.app)
app.add_typer(keys_app, name="keys")
app.add_typer(tasks_app, name="tasks")
app.add_typer(tenants_app, name="tenants")
app.add_typer(models_app, name="models")
app.command("demo")(task_commands.demo)
app.command("usage")(task_commands.usage)
app.add_typer(local_app, name="local")
app.add_typer(profiles_app, name="profiles")


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"aitasks {__version__}")
        raise typer.Exit


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="print the version and exit"),
    ] = False,
) -> None:
    """aitasks: asynchronous AI tasks on AWS."""


DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="DATABASE_URL",
        show_envvar=True,
        help="libpq URL; defaults to .local/database_url written by `make run`.",
    ),
]


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(1)


def _database_url(option: str | None) -> str:
    if option:
        return option
    saved = LOCAL_DIR / "database_url"
    if saved.is_file():
        return saved.read_text().strip()
    raise _fail("no database: pass --database-url, set DATABASE_URL, or start the local stack with `make run`")


WorkQueueUrl = Annotated[
    str | None,
    typer.Option(
        "--work-queue-url",
        envvar=["AITASKS_WORK_QUEUE_URL", "WORK_QUEUE_URL"],
        show_envvar=True,
        help="the SQS queue the wake-ups go to; default: the local stack's (for its database), else --stack's",
    ),
]
WakeStack = Annotated[
    str | None,
    typer.Option(
        "--stack",
        envvar="AITASKS_STACK",
        show_envvar=True,
        help="the deployed stack whose work queue (output WorkQueueUrl) gets the wake-ups",
    ),
]


def _describe(exc: AitasksError) -> str:
    if isinstance(exc, DependencyUnavailableError) and exc.__cause__ is not None:
        detail = str(exc.__cause__).strip().splitlines()
        return f"cannot connect to the database: {detail[-1] if detail else exc.__cause__!r}"
    return str(exc)


@app.command()
def migrate(database_url: DatabaseUrl = None) -> None:
    """Apply pending schema migrations (safe to run concurrently and repeatedly) and sync the model prices."""
    url = _database_url(database_url)
    try:
        with connect(url, application_name="aitasks-migrate") as conn:
            applied = apply_migrations(conn)
            priced = bootstrap.sync_prices(PostgresModelRepository(lambda: conn))
    except AitasksError as exc:
        raise _fail(_describe(exc)) from None
    if applied:
        for m in applied:
            typer.echo(f"applied {m.version:04d}_{m.name}")
    else:
        typer.echo("schema is up to date")
    typer.echo(f"{priced} model prices written")


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option("--tenant", help="the tenant the key acts for")],
    name: Annotated[str, typer.Option("--name", help="a label for the key")] = "default",
    database_url: DatabaseUrl = None,
) -> None:
    """Create an API key for a tenant and print it once (only its SHA-256 hash is stored)."""
    provider = ConnectionProvider(lambda: _database_url(database_url), application_name="aitasks-cli")
    try:
        key_id, key = CreateApiKey(PostgresApiKeyRepository(provider))(TenantId(tenant), name)
        has_tier = PostgresTenantRepository(provider).get(TenantId(tenant)) is not None
    except AitasksError as exc:
        raise _fail(_describe(exc)) from None
    finally:
        provider.close()
    typer.echo(f"key id: {key_id}", err=True)
    if not has_tier:
        typer.echo(
            f"note: tenant {tenant} has no tier yet; API Gateway refuses its requests until "
            f"`aitasks tenants set-tier {tenant} {DEFAULT_TIER}`",
            err=True,
        )
    typer.echo(key)


@keys_app.command("revoke")
def keys_revoke(key_id: UUID, database_url: DatabaseUrl = None) -> None:
    """Revoke an API key by its id (API Gateway may keep serving a cached allow for up to 300 s)."""
    provider = ConnectionProvider(lambda: _database_url(database_url), application_name="aitasks-cli")
    try:
        revoked = PostgresApiKeyRepository(provider).revoke(key_id, now=datetime.now(UTC))
    except AitasksError as exc:
        raise _fail(_describe(exc)) from None
    finally:
        provider.close()
    if not revoked:
        raise _fail(f"no active key {key_id}")
    typer.echo(f"revoked {key_id}")


@tenants_app.command("set-tier")
def tenants_set_tier(
    tenant: Annotated[str, typer.Argument(help="the tenant")],
    tier: Annotated[Tier, typer.Argument(help="its tier: the usage plan whose throttle and quota it gets")],
    stack: Annotated[
        str, typer.Option("--stack", envvar="AITASKS_STACK", show_envvar=True, help="the deployed stack's name")
    ] = "aitasks",
    database_url: DatabaseUrl = None,
) -> None:
    """Put a tenant in a tier's usage plan (creates its API Gateway API key once; uses your AWS credentials).

    Takes effect within 300 s: the authorizer's answers are cached that long.
    """
    provider = ConnectionProvider(lambda: _database_url(database_url), application_name="aitasks-cli")
    try:
        outputs = stack_outputs(stack)
        plans = ApiGatewayUsagePlans(stack, plan_ids_from_outputs(outputs))
        plan = SetTier(PostgresTenantRepository(provider), plans)(TenantId(tenant), tier)
    except (BotoCoreError, ClientError, KeyError) as exc:
        raise _fail(f"stack {stack}: {exc}") from None
    except AitasksError as exc:
        raise _fail(_describe(exc)) from None
    finally:
        provider.close()
    typer.echo(f"tenant {plan.tenant_id}: tier {plan.tier} (usage plan key {plan.usage_key_id})")


def _cap(value: str) -> int | None:
    """--max-concurrency: a number of runs (0 pauses the tenant), or "default" (None) for its tier's."""
    if value == "default":
        return None
    try:
        number = int(value)
    except ValueError:
        raise typer.BadParameter("a whole number of runs, or `default`") from None
    if not 0 <= number <= 10_000:
        raise typer.BadParameter("between 0 (pauses the tenant) and 10000")
    return number


def _usd(value: str) -> Decimal | None:
    """--monthly-budget-usd: dollars (0 stops all spending), or "default" (None) for its tier's (none by default)."""
    if value == "default":
        return None
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise typer.BadParameter("an amount in USD, like 25 or 0.50, or `default`") from None
    if not amount.is_finite() or not 0 <= amount < 10**8:
        raise typer.BadParameter("an amount from 0 to 99999999.99")
    return amount


def _limit(value: str | None) -> int | None:
    """--rpm / --tpm: a positive number, or "none"."""
    if value is None or value == "none":
        return None
    try:
        number = int(value)
    except ValueError:
        raise typer.BadParameter("a whole number, or `none`") from None
    if number < 1:
        raise typer.BadParameter("at least 1 (or `none`: no limit)")
    return number


def _weight(value: str) -> Decimal | None:
    """--weight: a positive number (its share of a scarce model against the others'), or "default" for its tier's."""
    if value == "default":
        return None
    try:
        weight = Decimal(value)
    except InvalidOperation:
        raise typer.BadParameter("a positive number, like 1, 2 or 0.5, or `default`") from None
    if not weight.is_finite() or not Decimal("0.001") <= weight < 10**5 or weight != round(weight, 3):
        raise typer.BadParameter("from 0.001 to 99999.999, in steps of 0.001")
    return weight


def _not_woken(what: str, why: str) -> typer.Exit:
    typer.secho(
        f"error: the change is saved, but {what} could not be sent ({why}); the sweeper will send the wake-ups "
        "within three minutes",
        err=True,
        fg=typer.colors.RED,
    )
    return typer.Exit(EXIT_NOT_WOKEN)


NO_QUEUE = (
    "note: no work queue known (--work-queue-url, AITASKS_WORK_QUEUE_URL, --stack, or the local stack with its "
    "database); the sweeper will send the wake-ups within three minutes"
)


def _wake(
    provider: ConnectionProvider,
    wake: Callable[[WakeReleasedWork], Woken],
    *,
    database_url: str,
    queue_url: str | None,
    stack: str | None,
) -> None:
    """After a saved change: wake-ups for the work it frees, and what was woken (exit 5 when they could not go)."""
    try:
        address = work_queue.locate(queue_url, stack=stack, database_url=database_url, local_dir=LOCAL_DIR)
        queue = work_queue.open_queue(address) if address is not None else None
    except (BotoCoreError, ClientError, KeyError) as exc:
        raise _not_woken("its wake-ups", f"no work queue: {_aws_error(exc)}") from None
    if address is None or queue is None:
        typer.echo(NO_QUEUE, err=True)
        return
    try:
        woken = wake(WakeReleasedWork(PostgresTaskRepository(provider), PostgresModelRepository(provider), queue))
    except AitasksError as exc:
        raise _not_woken("its wake-ups", _describe(exc)) from None
    if woken.sent:
        ids = ", ".join(str(t.id) for t in woken.sent)
        typer.echo(f"woke {len(woken.sent)} task(s) through {address.source}: {ids}", err=True)
    elif not woken.unsent:
        typer.echo("nothing to wake: no due work that the change lets run now", err=True)
    if woken.unsent:
        raise _not_woken(f"{len(woken.unsent)} wake-up(s) through {address.source}", woken.error or "unknown")


def _aws_error(exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return f"the stack has no output {exc}"
    return str(exc)


@tenants_app.command("set-limits")
def tenants_set_limits(
    tenant: Annotated[str, typer.Argument(help="the tenant")],
    *,
    max_concurrency: Annotated[
        str | None,
        typer.Option(
            "--max-concurrency",
            help="most tasks of the tenant running at once (0 pauses it; `default`: its tier's)",
            metavar="N|default",
        ),
    ] = None,
    monthly_budget_usd: Annotated[
        str | None,
        typer.Option(
            "--monthly-budget-usd",
            help="the most its tasks may cost in a calendar month, UTC (`default`: its tier's; none by default)",
            metavar="USD|default",
        ),
    ] = None,
    weight: Annotated[
        str | None,
        typer.Option(
            "--weight",
            help="its share of a rate-limited model against the other tenants' (`default`: its tier's)",
            metavar="W|default",
        ),
    ] = None,
    database_url: DatabaseUrl = None,
    queue_url: WorkQueueUrl = None,
    stack: WakeStack = None,
) -> None:
    """Set a tenant's limits (without an option: show them). Claims apply them at once, and the command wakes the
    tenant's due work right after (as much as its cap has room for), so that what the change lets run starts within
    seconds."""
    cap = _cap(max_concurrency) if max_concurrency is not None else None
    budget = _usd(monthly_budget_usd) if monthly_budget_usd is not None else None
    share = _weight(weight) if weight is not None else None
    url = _database_url(database_url)
    provider = ConnectionProvider(lambda: url, application_name="aitasks-cli")
    now = datetime.now(UTC)
    try:
        try:
            limits = PostgresLimitsRepository(provider)
            if max_concurrency is not None:
                limits.set_max_concurrency(TenantId(tenant), cap, now=now)
            if monthly_budget_usd is not None:
                limits.set_monthly_budget(TenantId(tenant), budget, now=now)
            if weight is not None:
                limits.set_weight(TenantId(tenant), share, now=now)
            current = limits.limits(TenantId(tenant), now=now)
        except AitasksError as exc:
            raise _fail(_describe(exc)) from None
        tier = f"{current.tier or DEFAULT_TIER} tier"
        cap_source = "override" if current.max_concurrency_override is not None else tier
        typer.echo(
            f"tenant {tenant}: max concurrency {current.max_concurrency} ({cap_source}); "
            f"running {current.running}, queued {current.queued}"
        )
        month = f"this month: ${current.spent_usd:f} spent, ${current.reserved_usd:f} held"
        if current.monthly_budget_usd is None:
            typer.echo(f"no monthly budget; {month}")
        else:
            budget_source = "override" if current.budget_override is not None else tier
            typer.echo(f"monthly budget ${current.monthly_budget_usd:f} ({budget_source}); {month}")
        weight_source = "override" if current.weight_override is not None else tier
        typer.echo(f"weight {current.weight:g} ({weight_source})")
        if max_concurrency is not None or monthly_budget_usd is not None or weight is not None:
            _wake(provider, lambda w: w.tenant(TenantId(tenant)), database_url=url, queue_url=queue_url, stack=stack)
    finally:
        provider.close()


@models_app.command("set-limits")
def models_set_limits(
    model: Annotated[str, typer.Argument(help="the model, as tasks name it (payload.model or the default)")],
    *,
    rpm: Annotated[
        str | None, typer.Option("--rpm", help="calls started in any 60 s (`none`: no limit)", metavar="N|none")
    ] = None,
    tpm: Annotated[
        str | None,
        typer.Option("--tpm", help="tokens (input + output reserved) in any 60 s (`none`: no limit)", metavar="N|none"),
    ] = None,
    database_url: DatabaseUrl = None,
    queue_url: WorkQueueUrl = None,
    stack: WakeStack = None,
) -> None:
    """Limit how fast every executor together may call a model (both options are set each time: an option left out
    means no limit). Claims apply it at once; work it holds back shows waitingFor rate_limit. The command wakes the
    model's due work right after (one task of each tenant waiting on it)."""
    requests, tokens = _limit(rpm), _limit(tpm)
    url = _database_url(database_url)
    provider = ConnectionProvider(lambda: url, application_name="aitasks-cli")
    try:
        try:
            key = PostgresModelRepository(provider).set_limits(model, rpm=requests, tpm=tokens, now=datetime.now(UTC))
        except AitasksError as exc:
            raise _fail(_describe(exc)) from None
        typer.echo(f"{key}: {requests or 'no'} rpm, {tokens or 'no'} tpm")
        _wake(provider, lambda w: w.model(key), database_url=url, queue_url=queue_url, stack=stack)
    finally:
        provider.close()


@models_app.command("resume")
def models_resume(
    model: Annotated[str, typer.Argument(help="the model, as tasks name it")],
    database_url: DatabaseUrl = None,
    queue_url: WorkQueueUrl = None,
    stack: WakeStack = None,
) -> None:
    """Lift the pause a provider's 429 put on a model (its Retry-After), and wake the model's due work at once."""
    url = _database_url(database_url)
    provider = ConnectionProvider(lambda: url, application_name="aitasks-cli")
    try:
        try:
            repo = PostgresModelRepository(provider)
            now = datetime.now(UTC)
            paused = {m.model: m.paused_until for m in repo.models(now=now) if m.paused_until is not None}
            key = repo.resume(model, now=now)
        except AitasksError as exc:
            raise _fail(_describe(exc)) from None
        if key is not None and key in paused:
            typer.echo(f"{key}: resumed (it was paused until {paused[key].isoformat(timespec='seconds')})")
        else:
            typer.echo(f"{key or model}: not paused")
        _wake(provider, lambda w: w.model(key or model), database_url=url, queue_url=queue_url, stack=stack)
    finally:
        provider.close()


@models_app.command("list")
def models_list(database_url: DatabaseUrl = None) -> None:
    """Every priced or limited model: price per 1M tokens, limits, a 429's pause, its last 60 s."""
    provider = ConnectionProvider(lambda: _database_url(database_url), application_name="aitasks-cli")
    try:
        models = PostgresModelRepository(provider).models(now=datetime.now(UTC))
    except AitasksError as exc:
        raise _fail(_describe(exc)) from None
    finally:
        provider.close()
    typer.echo("model\tprovider\tin $/1M\tout $/1M\trpm\ttpm\tpaused until\tcalls/60s\ttokens/60s")
    for m in models:
        price = [f"{p.normalize():f}" if p is not None else "-" for p in (m.input_per_m, m.output_per_m)]
        paused = m.paused_until.isoformat(timespec="seconds") if m.paused_until else "-"
        typer.echo(
            f"{m.model}\t{m.provider or '-'}\t{price[0]}\t{price[1]}\t{m.rpm or '-'}\t{m.tpm or '-'}\t{paused}"
            f"\t{m.calls}\t{m.tokens}"
        )


@models_app.command("sync-prices")
def models_sync_prices(database_url: DatabaseUrl = None) -> None:
    """Write genai-prices' prices (and AI_PRICES_JSON's overrides) to the database; every migration does it too.
    Functions read them again within five minutes."""
    provider = ConnectionProvider(lambda: _database_url(database_url), application_name="aitasks-cli")
    try:
        count = bootstrap.sync_prices(PostgresModelRepository(provider))
    except AitasksError as exc:
        raise _fail(_describe(exc)) from None
    finally:
        provider.close()
    typer.echo(f"{count} model prices written")


@local_app.command("up")
def local_up(
    port: Annotated[int, typer.Option(help="MiniStack's port", envvar="AITASKS_LOCAL_PORT")] = 4566,
    watch: Annotated[
        bool, typer.Option("--watch/--no-watch", help="push saved changes under functions/ and layers/common/")
    ] = True,
) -> None:
    """Start embedded PostgreSQL (or use DATABASE_URL) and MiniStack, deploy template.yaml, stay in the foreground."""
    from aitasks_cli import local_stack

    raise typer.Exit(local_stack.run(port=port, database_url=get_settings().database_url, watch=watch))


@local_app.command("logs")
def local_logs(
    function: Annotated[str | None, typer.Option("--function", help="only this function (its directory name)")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing new records")] = False,
) -> None:
    """The local functions' logs, one line per record: time, level, function, task id, message."""
    from aitasks_cli import local_logs, local_stack

    saved = LOCAL_DIR / "api_url"
    if not saved.is_file():
        raise _fail("no local stack: start it with `make run`")
    parts = urlsplit(saved.read_text().strip())
    endpoint = f"{parts.scheme}://{parts.netloc}"
    try:
        functions = local_stack.stack_code(endpoint).functions
        if function is not None:
            if function not in functions:
                raise _fail(f"no function {function}; the stack has {', '.join(sorted(functions))}")
            functions = {function: functions[function]}
        with contextlib.suppress(KeyboardInterrupt):
            local_logs.show(endpoint, functions, follow=follow)
    except (BotoCoreError, ClientError) as exc:
        raise _fail(f"the local stack at {endpoint}: {exc}") from None


class _WokenAfter:
    """The redrive's wake-ups are sent after it, by _wake, which says whether they went."""

    def send(self, wake: WakeUp, *, delay_s: int = 0) -> None:
        return None

    def change_visibility(self, receipt_handle: str, seconds: int) -> None:
        return None


@tasks_app.command("redrive")
def tasks_redrive(
    *,
    status: Annotated[str, typer.Option("--status", help="only dead_letter can be redriven")] = "dead_letter",
    type_: Annotated[list[str] | None, typer.Option("--type", help="only these task types (repeatable)")] = None,
    since: Annotated[
        datetime | None, typer.Option("--since", help="only tasks dead-lettered since (ISO 8601; UTC if no offset)")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=100_000)] = 1000,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="list what would be redriven")] = False,
    database_url: DatabaseUrl = None,
    queue_url: WorkQueueUrl = None,
    stack: WakeStack = None,
) -> None:
    """Queue dead-lettered tasks again with a new attempt budget (their history is kept); writes task.queued."""
    if status != "dead_letter":
        raise _fail("only --status dead_letter can be redriven")
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    url = _database_url(database_url)
    provider = ConnectionProvider(lambda: url, application_name="aitasks-cli")
    try:
        try:
            redrive = RedriveDeadLetters(PostgresTaskRepository(provider), Dispatcher(_WokenAfter()))
            tasks = redrive(types=type_, since=since, limit=limit, dry_run=dry_run)
        except AitasksError as exc:
            raise _fail(_describe(exc)) from None
        for task in tasks:
            typer.echo(f"{task.id}\t{task.tenant_id}\t{task.type}\t{task.last_error or ''}")
        typer.echo(f"{'would redrive' if dry_run else 'redrove'} {len(tasks)} task(s)", err=True)
        if tasks and not dry_run:
            _wake(provider, lambda w: w.send(tasks), database_url=url, queue_url=queue_url, stack=stack)
    finally:
        provider.close()


@app.command()
def prune(
    older_than_days: Annotated[int, typer.Option(min=1, help="finished tasks older than this")] = 30,
    outbox_days: Annotated[int, typer.Option(min=1, help="published events older than this")] = 7,
    database_url: DatabaseUrl = None,
) -> None:
    """Delete finished tasks (with attempts, artifacts, events), old published events and expired keys."""
    provider = ConnectionProvider(lambda: _database_url(database_url), application_name="aitasks-cli")
    try:
        report = Prune(PostgresRetention(provider), task_days=older_than_days, outbox_days=outbox_days)()
    except AitasksError as exc:
        raise _fail(_describe(exc)) from None
    finally:
        provider.close()
    typer.echo(
        f"pruned {report.tasks} task(s), {report.outbox_rows} event(s), {report.idempotency_keys} expired key(s)"
    )


API_FUNCTIONS = ("create_task", "query_tasks", "cancel_task", "dashboard")
OPENAPI_COPIES = (Path("docs/openapi.json"), Path("layers/common/aitasks/http/openapi.json"))


@app.command()
def openapi(
    check: Annotated[bool, typer.Option("--check", help="fail if the committed copies are out of date")] = False,
) -> None:
    """Generate the OpenAPI document from the API functions' routes (run from the repository root)."""
    from aitasks.http.openapi import document

    text = document([_load_function(name).app for name in API_FUNCTIONS])
    stale = [str(path) for path in OPENAPI_COPIES if not path.is_file() or path.read_text() != text]
    if check:
        if stale:
            raise _fail(f"out of date: {', '.join(stale)}; run `make openapi`")
        typer.echo("OpenAPI document is up to date")
        return
    for path in OPENAPI_COPIES:
        path.write_text(text)
    typer.echo(f"wrote {', '.join(str(p) for p in OPENAPI_COPIES)}")


def _load_function(name: str) -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"function_{name}", Path("functions") / name / "app.py")
    if spec is None or spec.loader is None:
        raise _fail(f"functions/{name}/app.py not found: run from the repository root")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    app()


@profiles_app.command("set")
def profiles_set(
    name: Annotated[str, typer.Argument(help="the profile's name (default: used when no --profile is given)")],
    api_url: Annotated[str | None, typer.Option("--api-url", help="the API's base URL, …/api/v1")] = None,
    api_key: Annotated[
        str | None, typer.Option("--api-key", help="its key; leave out to give it by AITASKS_API_KEY")
    ] = None,
) -> None:
    """Add or change a profile in ~/.config/aitasks/config.toml (written readable by you only)."""
    if api_url is not None and not api_url.startswith(("http://", "https://")):
        raise typer.BadParameter("must start with http:// or https://", param_hint="--api-url")
    path = profiles.save(profiles.Profile(name, api_url, api_key))
    typer.echo(f"profile {name} saved in {path}")


@profiles_app.command("list")
def profiles_list() -> None:
    """The profiles, their URLs, and whether each has a key."""
    found = profiles.list_all()
    if not found:
        typer.echo(f"no profiles in {profiles.config_path()}", err=True)
    for p in found:
        key = "key set" if p.api_key else "key from AITASKS_API_KEY"
        typer.echo(f"{p.name}\t{p.api_url or '-'}\t{key}")
