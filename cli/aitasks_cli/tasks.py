"""`aitasks tasks create|get|list|cancel|retry|attempts|artifacts|events|watch` and `aitasks usage`: the REST API,
through aitasks_client (the project's one HTTP client).

The base URL and key come from --api-url/--api-key, then AITASKS_API_URL/AITASKS_API_KEY, then the profile
(--profile or AITASKS_PROFILE, else `default`) in ~/.config/aitasks/config.toml, then .local/api_url and
.local/api_key (written by `make run`). Exit codes: 0 ok, 1 the API answered with a problem, 2 usage error,
3 the API cannot be reached, 4 a waited-for task ended without succeeding, 130 interrupted.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar
from uuid import UUID

import httpx2
import typer
from aitasks_client import AitasksError, APIStatusError, Client, Task, UnexpectedResponseError, __version__
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from aitasks.domain.task import DEFAULT_MAX_ATTEMPTS, DEFAULT_PRIORITY, MAX_ATTEMPTS_CEILING, TaskStatus
from aitasks.domain.task_types import REGISTRY
from aitasks_cli import profiles

T = TypeVar("T")
LOCAL_DIR = Path(".local")
TERMINAL = {TaskStatus.SUCCEEDED, TaskStatus.DEAD_LETTER, TaskStatus.CANCELLED}
STATUS_STYLE = {
    "queued": "cyan",
    "reserved": "blue",
    "running": "bold blue",
    "succeeded": "green",
    "failed": "yellow",
    "dead_letter": "bold red",
    "cancelled": "dim",
}
EXIT_PROBLEM, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_TASK_FAILED = 1, 2, 3, 4

# Tests set this to drive the real handlers in-process (tests/support/handler_transport.py).
transport: httpx2.BaseTransport | None = None

app = typer.Typer()
# Piped output is not cut to 80 columns: tables keep whole ids.
# Task data is shown as it is: no rich markup or emoji codes in prompts, errors or outputs.
out = Console(highlight=False, markup=False, emoji=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, highlight=False, markup=False, emoji=False, soft_wrap=True)

ApiUrl = Annotated[
    str | None,
    typer.Option("--api-url", help="…/api/v1; else --profile's, AITASKS_API_URL, the default profile's, .local"),
]
ApiKey = Annotated[
    str | None,
    typer.Option("--api-key", help="else the chosen profile's, AITASKS_API_KEY, the default profile's, .local"),
]
Profile = Annotated[
    str | None,
    typer.Option("--profile", envvar="AITASKS_PROFILE", show_envvar=True, help="a profile of the config file"),
]
AsJson = Annotated[bool, typer.Option("--json", help="print the API's JSON, for scripts")]
TaskId = Annotated[UUID, typer.Argument(help="the task's id")]


def _local(file: str) -> str | None:
    saved = LOCAL_DIR / file
    return saved.read_text().strip() if saved.is_file() else None


def _settings(api_url: str | None, api_key: str | None, profile: str | None) -> tuple[str, str]:
    """The URL and the key, each from the first place that has it: the option; the profile named by --profile or
    AITASKS_PROFILE; AITASKS_API_URL and AITASKS_API_KEY; the `default` profile; .local (make run). A key is
    taken from a profile or from .local only together with that place's URL, so that no key goes to another
    deployment's URL."""
    try:
        chosen = profiles.load(profile)
    except profiles.ProfileError as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(EXIT_USAGE) from None
    env_url, env_key = os.environ.get("AITASKS_API_URL"), os.environ.get("AITASKS_API_KEY")
    if api_url:
        url, place_key = api_url, None
    elif profile and chosen.api_url:
        url, place_key = chosen.api_url, chosen.api_key
    elif env_url:
        url, place_key = env_url, None
    elif chosen.api_url:
        url, place_key = chosen.api_url, chosen.api_key
    else:
        url, place_key = _local("api_url") or "", _local("api_key")
    key = api_key or (place_key if profile else None) or env_key or place_key
    if not url or not key:
        what = "api-url" if not url else "api-key"
        err.print(f"error: no {what.replace('-', ' ')}: pass --{what}, set AITASKS_{what.replace('-', '_').upper()}, "
                  f"add a profile (aitasks profiles set default --{what} ...), or start the local stack with "
                  "`make run`")  # fmt: skip
        raise typer.Exit(EXIT_USAGE)
    if not url.startswith(("http://", "https://")):
        err.print(f"error: the API URL must start with http:// or https://, not {url!r}")
        raise typer.Exit(EXIT_USAGE)
    return url, key


def _api(api_url: str | None, api_key: str | None, profile: str | None = None) -> Client:
    url, key = _settings(api_url, api_key, profile)
    user_agent = f"aitasks-cli/{__version__} aitasks-client/{__version__} python"
    return Client(url, key, transport=transport, default_headers={"User-Agent": user_agent})


def _call(api_url: str | None, api_key: str | None, profile: str | None, request: Callable[[Client], T]) -> T:
    """One request to the API; a problem or an unreachable API ends the command with its exit code."""
    with _api(api_url, api_key, profile) as api:
        try:
            return request(api)
        except AitasksError as exc:
            _fail(exc)


def _fail(exc: AitasksError) -> NoReturn:
    if isinstance(exc, UnexpectedResponseError):
        err.print(Text.assemble(("not an aitasks answer", "red"), f": {exc}"))
        raise typer.Exit(EXIT_PROBLEM) from None
    if isinstance(exc, APIStatusError):
        problem = exc.problem
        detail = f": {problem.detail}" if problem.detail and problem.detail != problem.title else ""
        fields = "; ".join(f"{e.field}: {e.message}" for e in problem.errors or [])
        err.print(Text.assemble((f"{problem.status} {problem.title}", "red"), detail, f": {fields}" if fields else ""))
        raise typer.Exit(EXIT_PROBLEM) from None
    err.print(f"error: cannot reach the API: {exc}")
    raise typer.Exit(EXIT_UNREACHABLE) from None


def _wire(value: Any) -> Any:
    """A model (or a list of them) as the API's JSON: camelCase, decimals and times as strings."""
    if isinstance(value, list):
        return [_wire(v) for v in value]
    return value.model_dump(mode="json", by_alias=True) if hasattr(value, "model_dump") else value


def _print_json(value: Any) -> None:
    out.print_json(json.dumps(_wire(value)))


def _status(status: str) -> Text:
    return Text(status, style=STATUS_STYLE.get(status, ""))


def _state(task: dict[str, Any]) -> Text:
    """The status, and why a queued task waits (`queued (concurrency)`: its tenant is at its cap)."""
    waiting = task.get("waitingFor")
    return _status(task["status"]) + (f" ({waiting})" if waiting else "")


def _money(cost: str | None) -> str:
    """USD without trailing zeros: `$0`, `$0.00042`; `—` when no attempt has a known price."""
    if cost is None:
        return "—"
    whole, _, fraction = cost.partition(".")
    fraction = fraction.rstrip("0")
    return f"${whole}.{fraction}" if fraction else f"${whole}"


def _when(timestamp: str) -> str:
    """A compact local time: `14:03:07` today, `11-23 14:03` before."""
    moment = datetime.fromisoformat(timestamp).astimezone()
    today = datetime.now().astimezone().date()
    return moment.strftime("%H:%M:%S") if moment.date() == today else moment.strftime("%m-%d %H:%M")


def parse_at(value: str, now: datetime | None = None) -> datetime:
    """`+90s`, `+5m`, `+2h`, `+1d` from now, or an ISO 8601 time (local time when it has no offset)."""
    now = now or datetime.now(UTC)
    relative = re.fullmatch(r"\+(\d+)([smhd])", value.strip())
    if relative:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[relative.group(2)]
        return now + timedelta(**{unit: int(relative.group(1))})
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise typer.BadParameter("use +90s, +5m, +2h, +1d or an ISO 8601 time such as 2026-12-01T09:00") from None
    return moment.astimezone(UTC) if moment.tzinfo else moment.astimezone().astimezone(UTC)


def _read_context(source: str | None) -> str | None:
    if source is None:
        return None
    if source == "-":
        return sys.stdin.read()
    path = Path(source)
    if not path.is_file():
        raise typer.BadParameter(f"no such file: {source}", param_hint="--context")
    return path.read_text()


def _params(pairs: list[str], schema: Path | None) -> dict[str, Any] | None:
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{pair!r}: use KEY=VALUE", param_hint="--param")
        try:
            params[key] = json.loads(raw)
        except ValueError:
            params[key] = raw
    if schema is not None:
        try:
            params["schema"] = json.loads(schema.read_text())
        except (OSError, ValueError) as exc:
            raise typer.BadParameter(f"{schema}: {exc}", param_hint="--schema") from None
    return params or None


@app.command("create")
def create(
    *,
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="the instruction")],
    type_: Annotated[str, typer.Option("--type", "-t", help=f"one of: {', '.join(REGISTRY)}")] = "chat",
    context: Annotated[
        str | None, typer.Option("--context", "-c", help="a file with the material, or - for stdin")
    ] = None,
    model: Annotated[str | None, typer.Option("--model", help="a model name (else the stack's default)")] = None,
    param: Annotated[
        list[str] | None, typer.Option("--param", help="a provider parameter KEY=VALUE (repeatable)")
    ] = None,
    schema: Annotated[Path | None, typer.Option("--schema", help="extract: a JSON Schema file for the output")] = None,
    priority: Annotated[int, typer.Option("--priority", min=0, max=9, help="0 is the most urgent")] = DEFAULT_PRIORITY,
    at: Annotated[str | None, typer.Option("--at", help="run later: +90s, +5m, +2h, +1d or an ISO 8601 time")] = None,
    max_attempts: Annotated[
        int, typer.Option("--max-attempts", min=1, max=MAX_ATTEMPTS_CEILING)
    ] = DEFAULT_MAX_ATTEMPTS,
    idempotency_key: Annotated[
        str | None, typer.Option("--idempotency-key", help="retrying with it creates one task")
    ] = None,
    max_cost_usd: Annotated[
        str | None, typer.Option("--max-cost-usd", help="no retry once its attempts have cost this much (USD)")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", "-w", help="follow the task to its end and print the output")] = False,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    profile: Profile = None,
    as_json: AsJson = False,
) -> None:
    """Submit a task (202: it is queued); with --wait, follow it live and print its output.

    An Idempotency-Key is made unless given, and reused if the request has to be tried again: one task."""
    context_text = _read_context(context)
    params = _params(param or [], schema)
    scheduled_at = parse_at(at) if at is not None else None
    with _api(api_url, api_key, profile) as api:
        try:
            created = api.create(
                type_, prompt, context=context_text, model=model, params=params, priority=priority,
                scheduled_at=scheduled_at, max_attempts=max_attempts, max_cost_usd=max_cost_usd,
                idempotency_key=idempotency_key,
            )  # fmt: skip
            if wait:
                _wait(api, created, as_json)
                return
        except AitasksError as exc:
            _fail(exc)
    task = _wire(created)
    if as_json:
        _print_json(task)
        return
    when = f" (runs at {task['scheduledAt']})" if task.get("scheduledAt") else ""
    out.print(Text.assemble(_status(task["status"]), f" {task['id']} {task['type']}{when}"))


def _wait(api: Client, created: Task, as_json: bool) -> None:
    """Follow the task live (the client's watch: the WebSocket, else polling) and print how it ended."""
    started = time.monotonic()
    task: dict[str, Any] = _wire(created)
    try:
        with err.status("", spinner="dots") as spinner:
            for state in api.watch(created.id, poll_interval=1.0):
                task = _wire(state)
                attempt = f" · attempt {task['attemptCount']}/{task['maxAttempts']}" if task["attemptCount"] else ""
                spinner.update(Text.assemble(f"{task['id']} ", _state(task), attempt))
    except KeyboardInterrupt:
        err.print(f"stopped waiting; the task goes on: aitasks tasks get {task['id']}")
        raise typer.Exit(130) from None
    artifacts = _wire(api.artifacts(task["id"])) if task["status"] == TaskStatus.SUCCEEDED else []
    if as_json:
        _print_json({"task": task, "artifacts": artifacts})
    else:
        elapsed = time.monotonic() - started
        summary = (
            f" {task['id']} in {elapsed:.1f} s · {task['tokensIn']}+{task['tokensOut']} tokens · {_money(task['cost'])}"
        )
        err.print(Text.assemble(_status(task["status"]), summary))
        if task.get("lastError") and task["status"] != TaskStatus.SUCCEEDED:
            err.print(f"last error: {task['lastError']}")
        for artifact in artifacts:
            _print_artifact(artifact)
    if task["status"] != TaskStatus.SUCCEEDED:
        raise typer.Exit(EXIT_TASK_FAILED)


def _print_artifact(artifact: dict[str, Any]) -> None:
    content = artifact.get("content")
    if artifact["kind"] == "json" and content:
        try:
            _print_json(json.loads(content))
        except ValueError:
            out.print(content)
        else:
            return
    elif content is not None:
        out.print(content)
    else:
        out.print(artifact.get("uri") or "")


@app.command("get")
def get(
    task_id: TaskId, api_url: ApiUrl = None, api_key: ApiKey = None, profile: Profile = None, as_json: AsJson = False
) -> None:
    """One task: status, attempts so far, tokens and cost."""
    task = _wire(_call(api_url, api_key, profile, lambda api: api.get(task_id)))
    if as_json:
        _print_json(task)
        return
    table = Table.grid(padding=(0, 2))
    rows: list[tuple[str, str | Text]] = [
        ("id", task["id"]),
        ("type", task["type"]),
        ("status", _state(task) + (" (cancel requested)" if task["cancelRequested"] else "")),
        ("priority", str(task["priority"])),
        ("attempts", f"{task['attemptCount']} of {task['maxAttempts']}"),
        ("tokens", f"{task['tokensIn']} in, {task['tokensOut']} out"),
        ("cost", _money(task["cost"])),
        ("created", task["createdAt"]),
        ("updated", task["updatedAt"]),
    ]
    if task.get("scheduledAt"):
        rows.append(("scheduled", task["scheduledAt"]))
    if task.get("lastError"):
        rows.append(("last error", task["lastError"]))
    rows.append(("prompt", (task["payload"] or {}).get("prompt", "")))
    for name, value in rows:
        table.add_row(Text(name, style="bold"), value)
    out.print(table)


def _tasks_table(tasks: list[dict[str, Any]], changed: set[str] | None = None) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column, width in (("id", 36), ("type", 9), ("status", 11), ("pri", 3), ("try", 3), ("tokens", 6),
                          ("cost", 5), ("created", 11)):  # fmt: skip
        right = column in {"pri", "tokens", "cost"}
        table.add_column(column, no_wrap=True, min_width=width, justify="right" if right else "left")
    for t in tasks:
        table.add_row(
            t["id"],
            t["type"],
            _state(t),
            str(t["priority"]),
            f"{t['attemptCount']}/{t['maxAttempts']}",
            str(t["tokensIn"] + t["tokensOut"]),
            _money(t["cost"]),
            _when(t["createdAt"]),
            style="reverse" if changed and t["id"] in changed else None,
        )
    return table


@app.command("list")
def list_(
    *,
    status: Annotated[list[TaskStatus] | None, typer.Option("--status", "-s", help="only these (repeatable)")] = None,
    type_: Annotated[list[str] | None, typer.Option("--type", "-t", help="only these types (repeatable)")] = None,
    page: Annotated[int, typer.Option("--page", min=1)] = 1,
    page_size: Annotated[int, typer.Option("--page-size", min=1, max=100)] = 20,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    profile: Profile = None,
    as_json: AsJson = False,
) -> None:
    """Your tasks, newest first, a page at a time."""
    result = _call(
        api_url,
        api_key,
        profile,
        lambda api: api.list_page(status=[s.value for s in status or []], type=type_, page=page, page_size=page_size),
    )
    items = _wire(result.items)
    if as_json:
        _print_json({"items": items, "total": result.total, "page": page, "pageSize": page_size})
        return
    out.print(_tasks_table(items))
    pages = -(-(result.total or 0) // page_size)
    more = f"; next: --page {page + 1}" if result.has_next else ""
    err.print(f"page {page} of {max(pages, 1)} · {result.total} task(s){more}")


@app.command("cancel")
def cancel(
    task_id: TaskId, api_url: ApiUrl = None, api_key: ApiKey = None, profile: Profile = None, as_json: AsJson = False
) -> None:
    """Cancel a task: at once if it is not running, else its executor stops the run."""
    task = _wire(_call(api_url, api_key, profile, lambda api: api.cancel(task_id)))
    if as_json:
        _print_json(task)
    elif task["status"] == TaskStatus.CANCELLED:
        out.print(Text.assemble(_status("cancelled"), f" {task['id']}"))
    else:
        out.print(Text.assemble(_status(task["status"]), f" {task['id']}: cancel requested; the run stops shortly"))


@app.command("retry")
def retry(
    task_id: TaskId, api_url: ApiUrl = None, api_key: ApiKey = None, profile: Profile = None, as_json: AsJson = False
) -> None:
    """Run a dead-lettered or cancelled task again: queued, its attempts start afresh."""
    task = _wire(_call(api_url, api_key, profile, lambda api: api.retry(task_id)))
    if as_json:
        _print_json(task)
    else:
        out.print(Text.assemble(_state(task), f" {task['id']} {task['type']}"))


@app.command("events")
def events(
    task_id: TaskId, api_url: ApiUrl = None, api_key: ApiKey = None, profile: Profile = None, as_json: AsJson = False
) -> None:
    """The task's history: every event, in order (seq)."""
    rows = _wire(_call(api_url, api_key, profile, lambda api: api.events(task_id)))
    if as_json:
        _print_json(rows)
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("seq", "at", "event", "status", "attempt"):
        table.add_column(column, no_wrap=True, justify="right" if column in {"seq", "attempt"} else "left")
    for e in rows:
        status = _status(e["status"]) if e["status"] else Text("—")
        table.add_row(str(e["seq"]), e["occurredAt"], e["eventType"], status, str(e["attemptNo"] or ""))
    out.print(table)


@app.command("attempts")
def attempts(
    task_id: TaskId, api_url: ApiUrl = None, api_key: ApiKey = None, profile: Profile = None, as_json: AsJson = False
) -> None:
    """Every attempt: model, tokens, cost, latency and error."""
    rows = _wire(_call(api_url, api_key, profile, lambda api: api.attempts(task_id)))
    if as_json:
        _print_json(rows)
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("#", "status", "model", "tokens in", "tokens out", "cost", "latency", "error"):
        table.add_column(column, no_wrap=column != "error")
    for a in rows:
        latency = "—" if a["latencyMs"] is None else f"{a['latencyMs']} ms"
        error = ": ".join(x for x in (a["errorCode"], a["errorDetail"]) if x)
        table.add_row(str(a["attemptNo"]), _status(a["status"]), a["model"] or "—", str(a["tokensIn"] or 0),
                      str(a["tokensOut"] or 0), _money(a["cost"]), latency, error)  # fmt: skip
    out.print(table)


def usage(api_url: ApiUrl = None, api_key: ApiKey = None, profile: Profile = None, as_json: AsJson = False) -> None:
    """Your month: the budget, what your tasks spent and hold, per model; your concurrency, running and queued."""
    found = _wire(_call(api_url, api_key, profile, lambda api: api.usage()))
    if as_json:
        _print_json(found)
        return
    start, end = (datetime.fromisoformat(found["period"][k]).date().isoformat() for k in ("start", "end"))
    money = f"spent {_money(found['spentUsd'])} · held {_money(found['reservedUsd'])}"
    budget = found["budgetUsd"]
    if budget is None:
        out.print(f"{start} to {end} (UTC) · no budget · {money}")
    else:
        left = Decimal(budget) - Decimal(found["spentUsd"]) - Decimal(found["reservedUsd"])
        out.print(f"{start} to {end} (UTC) · budget {_money(budget)} · {money} · {_money(format(left, 'f'))} left")
    out.print(f"max concurrency {found['maxConcurrency']} · running {found['running']} · queued {found['queued']}")
    if not found["byModel"]:
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("model", "spent", "held", "tokens in", "tokens out", "attempts"):
        table.add_column(column, no_wrap=True, justify="left" if column == "model" else "right")
    for m in found["byModel"]:
        table.add_row(m["model"], _money(m["spentUsd"]), _money(m["reservedUsd"]), str(m["tokensIn"]),
                      str(m["tokensOut"]), str(m["attempts"]))  # fmt: skip
    out.print(table)


@app.command("artifacts")
def artifacts(
    task_id: TaskId, api_url: ApiUrl = None, api_key: ApiKey = None, profile: Profile = None, as_json: AsJson = False
) -> None:
    """The task's outputs (JSON output pretty-printed)."""
    rows = _wire(_call(api_url, api_key, profile, lambda api: api.artifacts(task_id)))
    if as_json:
        _print_json(rows)
        return
    if not rows:
        err.print("no output yet")
    for artifact in rows:
        err.print(Text(f"{artifact['kind']} · {artifact['createdAt']}", style="dim"))
        _print_artifact(artifact)


@app.command("watch")
def watch(
    task_id: Annotated[UUID | None, typer.Argument(help="follow one task to its end; else your recent tasks")] = None,
    *,
    interval: Annotated[float, typer.Option("--interval", min=0.2, help="seconds between refreshes")] = 1.0,
    timeout: Annotated[float | None, typer.Option("--timeout", min=0, help="stop after this many seconds")] = None,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    profile: Profile = None,
    as_json: AsJson = False,
) -> None:
    """A live table of your recent tasks and their status changes (with --json: one change per line)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    seen: dict[str, str] = {}
    try:
        # With --json no live table: Live would also capture stdout, where the change lines go.
        live = contextlib.nullcontext() if as_json else Live(console=err, auto_refresh=False)
        with _api(api_url, api_key, profile) as api, live:
            while True:
                tasks = _wire([api.get(task_id)] if task_id else api.list_page(page_size=20).items)
                changed = {t["id"] for t in tasks if seen.get(t["id"]) != t["status"]}
                for t in tasks:
                    if t["id"] in changed:
                        _announce(t, seen.get(t["id"]), as_json)
                    seen[t["id"]] = t["status"]
                if isinstance(live, Live):
                    live.update(_tasks_table(tasks, changed if len(seen) > len(changed) else None), refresh=True)
                done = task_id is not None and TaskStatus(tasks[0]["status"]) in TERMINAL
                if done or (deadline is not None and time.monotonic() >= deadline):
                    return
                time.sleep(interval)
    except AitasksError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def _announce(task: dict[str, Any], before: str | None, as_json: bool) -> None:
    at = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    if as_json:
        print(json.dumps({"at": at, "id": task["id"], "from": before, "to": task["status"]}), flush=True)
    elif before is not None:
        err.print(Text.assemble(f"{at} {task['id']} ", _status(before), " → ", _status(task["status"])))


DEMO_TEXT = (
    "aitasks runs AI work asynchronously on AWS: a REST API stores each task in PostgreSQL, SQS wakes an executor "
    "Lambda that calls the model, failed attempts are retried with backoff, and every attempt's model, tokens, "
    "cost and latency are recorded."
)
DEMO_SCHEMA = {
    "type": "object",
    "properties": {"service": {"type": "string"}, "queue": {"type": "string"}},
    "required": ["service"],
}
FAIL_ONCE = {"fake": {"failAttempts": 1, "error": "server_error"}}
FAIL_FOR_GOOD = {"fake": {"failAttempts": 5, "error": "bad_request"}}


def demo(
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    profile: Profile = None,
    timeout: Annotated[float, typer.Option("--timeout", min=10, help="give up after this many seconds")] = 180,
) -> None:
    """Submit a few tasks of every kind to the local stack and show them reach their final states."""
    now = datetime.now(UTC)
    plan: list[tuple[str, dict[str, Any]]] = [
        ("chat", {"type": "chat", "payload": {"prompt": "Say hello in French"}}),
        ("summarize", {"type": "summarize", "payload": {"prompt": "Summarise in one line", "context": DEMO_TEXT}}),
        ("extract → JSON", {"type": "extract", "payload": {"prompt": "Which service and which queue?",
                                                          "context": DEMO_TEXT, "params": {"schema": DEMO_SCHEMA}}}),
        ("priority 0", {"type": "chat", "priority": 0, "payload": {"prompt": "Urgent: reply with OK"}}),
        ("scheduled in 20 s", {"type": "chat", "scheduledAt": (now + timedelta(seconds=20)).isoformat(),
                               "payload": {"prompt": "This one waited its turn"}}),
        ("fails once, retried", {"type": "chat", "payload": {"prompt": "Second time lucky", "params": FAIL_ONCE}}),
        ("fails for good", {"type": "chat", "maxAttempts": 2,
                            "payload": {"prompt": "A request the model refuses", "params": FAIL_FOR_GOOD}}),
        ("cancelled", {"type": "chat", "scheduledAt": (now + timedelta(hours=1)).isoformat(),
                       "payload": {"prompt": "Never mind"}}),
    ]  # fmt: skip
    with _api(api_url, api_key, profile) as api:
        try:
            tasks = [(what, _wire(api.create(**_create_args(body)))) for what, body in plan]
            what, to_cancel = tasks[-1]
            tasks[-1] = (what, _wire(api.cancel(to_cancel["id"])))
            finished = _follow(api, tasks, time.monotonic() + timeout)
        except AitasksError as exc:
            _fail(exc)
    err.print("details: aitasks tasks attempts <id> · aitasks tasks artifacts <id> · aitasks tasks list")
    if not finished:
        err.print(f"error: not every task reached its end within {timeout:.0f} s")
        raise typer.Exit(EXIT_TASK_FAILED)


def _create_args(body: dict[str, Any]) -> dict[str, Any]:
    """A request body of the plan as the client's arguments."""
    scheduled = body.get("scheduledAt")
    return {"type": body["type"], "payload": body["payload"], "priority": body.get("priority"),
            "max_attempts": body.get("maxAttempts"),
            "scheduled_at": datetime.fromisoformat(scheduled) if scheduled else None}  # fmt: skip


def _follow(api: Client, tasks: list[tuple[str, dict[str, Any]]], deadline: float) -> bool:
    """Refresh the table until every task has ended (True) or the deadline passes (False)."""
    started = time.monotonic()
    outputs: dict[str, str] = {}
    with Live(console=out, auto_refresh=False) as live:
        while True:
            tasks = [(what, t if TaskStatus(t["status"]) in TERMINAL else _wire(api.get(t["id"]))) for what, t in tasks]
            for _, t in tasks:
                if t["status"] == TaskStatus.SUCCEEDED and t["id"] not in outputs:
                    contents = [a.content or "" for a in api.artifacts(t["id"])]
                    outputs[t["id"]] = " ".join(" ".join(contents).split())
            live.update(_demo_table(tasks, outputs, time.monotonic() - started), refresh=True)
            if all(TaskStatus(t["status"]) in TERMINAL for _, t in tasks):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.5)


def _demo_table(tasks: list[tuple[str, dict[str, Any]]], outputs: dict[str, str], elapsed: float) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold", title=f"aitasks demo · {elapsed:.0f} s",
                  title_justify="left")  # fmt: skip
    for column in ("task", "id", "status", "try", "output / last error"):
        table.add_column(column, no_wrap=True, overflow="ellipsis", max_width=60 if column.startswith("out") else None)
    for what, t in tasks:
        detail = outputs.get(t["id"]) or t.get("lastError") or ""
        table.add_row(what, t["id"], _status(t["status"]), f"{t['attemptCount']}/{t['maxAttempts']}", detail)
    return table
