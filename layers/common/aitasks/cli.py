"""The `aitasks` command: operator tasks that talk to the database, and the local stack."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from uuid import UUID

import typer

from aitasks.adapters.migrate import migrate as apply_migrations
from aitasks.adapters.postgres import ConnectionProvider, PostgresApiKeyRepository, connect
from aitasks.application.auth import CreateApiKey
from aitasks.domain.errors import AitasksError, DependencyUnavailableError
from aitasks.domain.task import TenantId
from aitasks.settings import get_settings

LOCAL_DIR = Path(".local")

app = typer.Typer(no_args_is_help=True, add_completion=False, help="aitasks: asynchronous AI tasks on AWS.")
keys_app = typer.Typer(no_args_is_help=True, help="API keys (talks to the database).")
local_app = typer.Typer(no_args_is_help=True, help="The local stack (no Docker).")
app.add_typer(keys_app, name="keys")
app.add_typer(local_app, name="local")

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


def _describe(exc: AitasksError) -> str:
    if isinstance(exc, DependencyUnavailableError) and exc.__cause__ is not None:
        detail = str(exc.__cause__).strip().splitlines()
        return f"cannot connect to the database: {detail[-1] if detail else exc.__cause__!r}"
    return str(exc)


@app.command()
def migrate(database_url: DatabaseUrl = None) -> None:
    """Apply pending schema migrations (safe to run concurrently and repeatedly)."""
    url = _database_url(database_url)
    try:
        with connect(url, application_name="aitasks-migrate") as conn:
            applied = apply_migrations(conn)
    except AitasksError as exc:
        raise _fail(_describe(exc)) from None
    if applied:
        for m in applied:
            typer.echo(f"applied {m.version:04d}_{m.name}")
    else:
        typer.echo("schema is up to date")


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
    except AitasksError as exc:
        raise _fail(_describe(exc)) from None
    finally:
        provider.close()
    typer.echo(f"key id: {key_id}", err=True)
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


@local_app.command("up")
def local_up(
    port: Annotated[int, typer.Option(help="MiniStack's port")] = 4566,
) -> None:
    """Start embedded PostgreSQL (or use DATABASE_URL) and MiniStack, deploy template.yaml, stay in the foreground."""
    from aitasks import local_stack

    raise typer.Exit(local_stack.run(port=port, database_url=get_settings().database_url))


API_FUNCTIONS = ("create_task", "query_tasks", "cancel_task")
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
