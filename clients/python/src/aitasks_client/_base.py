"""What the sync and the async client share: settings, the requests each method makes, when to try again and
how long to wait, and reading answers into models. No I/O here."""

from __future__ import annotations

import dataclasses
import email.utils
import os
import random
import re
import time
import uuid
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import httpx2
from pydantic import BaseModel, TypeAdapter, ValidationError

from aitasks_client._version import __version__
from aitasks_client.errors import AitasksError, APIConnectionError, APITimeoutError, UnexpectedResponseError
from aitasks_client.models import Task

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from datetime import datetime
    from decimal import Decimal
    from uuid import UUID

M = TypeVar("M", bound=BaseModel)

DEFAULT_TIMEOUT_S = 30.0
DEFAULT_CONNECT_TIMEOUT_S = 5.0
DEFAULT_MAX_RETRIES = 4
MAX_RETRY_AFTER_S = 60.0  # a longer Retry-After (a quota for the day) is the caller's to decide: raised at once
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 8.0
DEFAULT_POLL_INTERVAL_S = 2.0
# With the WebSocket open, the task is still read in case an event was missed (a cold stack's first events can be
# late): after poll_interval, then twice as long each time nothing changed, at most LIVE_RECHECK_S apart.
LIVE_RECHECK_S = 15.0


def live_recheck_s(poll_interval: float, quiet: int) -> float:
    return min(LIVE_RECHECK_S, poll_interval * 2.0**quiet)


PAGE_SIZE = 100
USER_AGENT = f"aitasks-client/{__version__} python"
_NEXT = re.compile(r'rel="?next"?')


@dataclasses.dataclass(frozen=True, slots=True)
class Call:
    """One API request; `idempotent` when repeating it after it may have reached the server changes nothing."""

    method: str
    path: str
    params: Mapping[str, str | int] | None = None
    json: Any = None
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    idempotent: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class TaskPage:
    """One page of `list_page`: its tasks, the number of tasks that match (`X-Total-Count`), and whether more
    follow."""

    items: list[Task]
    total: int | None
    page: int
    has_next: bool


def settings(base_url: str | None, api_key: str | None) -> tuple[str, str]:
    """The base URL (…/api/v1) and key: the arguments, else AITASKS_API_URL and AITASKS_API_KEY."""
    url = (base_url or os.environ.get("AITASKS_API_URL") or "").strip()
    key = (api_key or os.environ.get("AITASKS_API_KEY") or "").strip()
    if not url:
        raise AitasksError("no base URL: pass base_url (…/api/v1) or set AITASKS_API_URL")
    if not key:
        raise AitasksError("no API key: pass api_key or set AITASKS_API_KEY")
    return url.rstrip("/") + "/", key


def client_options(
    base_url: str, api_key: str, timeout: float | httpx2.Timeout, headers: Mapping[str, str] | None
) -> dict[str, Any]:
    return {
        "base_url": base_url,
        "headers": {
            "Authorization": f"Bearer {api_key}",
            "User-Agent": USER_AGENT,
            "Accept": "application/json",
            **(headers or {}),
        },
        "timeout": timeout
        if isinstance(timeout, httpx2.Timeout)
        else httpx2.Timeout(timeout, connect=min(timeout, DEFAULT_CONNECT_TIMEOUT_S)),
    }


# -- the requests ---------------------------------------------------------------------------------------------------


def task_path(task_id: str | UUID, *rest: str) -> str:
    return "/".join(["tasks", quote(str(task_id), safe=""), *rest])


def create_call(
    type: str,
    prompt: str | None,
    *,
    payload: Mapping[str, Any] | None,
    context: str | Mapping[str, Any] | None,
    model: str | None,
    params: Mapping[str, Any] | None,
    priority: int | None,
    scheduled_at: datetime | None,
    max_attempts: int | None,
    max_cost_usd: Decimal | str | float | None,
    idempotency_key: str | None,
) -> Call:
    body_payload: dict[str, Any] = dict(payload or {})
    for name, value in (("prompt", prompt), ("context", context), ("model", model), ("params", params)):
        if value is not None:
            body_payload[name] = value
    body: dict[str, Any] = {"type": type, "payload": body_payload}
    if priority is not None:
        body["priority"] = priority
    if scheduled_at is not None:
        if scheduled_at.tzinfo is None:
            raise ValueError("scheduled_at needs a time zone (datetime.now(UTC), not datetime.now())")
        body["scheduledAt"] = scheduled_at.isoformat()
    if max_attempts is not None:
        body["maxAttempts"] = max_attempts
    if max_cost_usd is not None:
        body["maxCostUsd"] = str(max_cost_usd)
    # One key per create, the same on each of its retries: however many tries reach the server, one task.
    key = idempotency_key or str(uuid.uuid4())
    return Call("POST", "tasks", json=body, headers={"Idempotency-Key": key}, idempotent=True)


def list_call(status: str | Iterable[str] | None, type: str | Iterable[str] | None, page: int, page_size: int) -> Call:
    params: dict[str, str | int] = {"page": page, "pageSize": page_size}
    if status:
        params["status"] = status if isinstance(status, str) else ",".join(str(s) for s in status)
    if type:
        params["type"] = type if isinstance(type, str) else ",".join(type)
    return Call("GET", "tasks", params=params, idempotent=True)


def page_of(response: httpx2.Response, page: int) -> TaskPage:
    total = response.headers.get("X-Total-Count", "")
    return TaskPage(
        items=parse_list(Task, response),
        total=int(total) if total.isdigit() else None,
        page=page,
        has_next=_NEXT.search(response.headers.get("Link", "")) is not None,
    )


def ticket_url(url: str, ticket: str) -> str:
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, urlencode({"ticket": ticket})) if q)
    return urlunsplit(parts._replace(query=query))


def task_key(task_id: str | UUID) -> str:
    """A task id as the API writes it (lowercase UUID), to match the live events' ids."""
    try:
        return str(uuid.UUID(str(task_id)))
    except ValueError:
        return str(task_id)


def event_task_id(frame: str | bytes) -> str | None:
    """The task a live-updates frame (`{"event": ..., "detail": {"taskId": ...}}`) is about."""
    import json

    try:
        message = json.loads(frame)
    except ValueError:
        return None
    detail = message.get("detail") if isinstance(message, dict) else None
    task_id = detail.get("taskId") if isinstance(detail, dict) else None
    return str(task_id) if task_id is not None else None


# -- answers --------------------------------------------------------------------------------------------------------


def parse(model: type[M], response: httpx2.Response) -> M:
    try:
        return model.model_validate_json(response.content)
    except ValidationError as exc:
        raise _unexpected(response, exc) from exc


def parse_list(model: type[M], response: httpx2.Response) -> list[M]:
    try:
        return TypeAdapter(list[model]).validate_json(response.content)  # type: ignore[valid-type]
    except ValidationError as exc:
        raise _unexpected(response, exc) from exc


def _unexpected(response: httpx2.Response, exc: ValidationError) -> UnexpectedResponseError:
    """Where the answer broke the model (the first place; never its value, which may be the task's content)."""
    first = exc.errors(include_input=False, include_url=False)[0]
    where = ".".join(str(part) for part in first["loc"]) or "the body"
    return UnexpectedResponseError(
        response.status_code, response.headers.get("Content-Type"), str(response.url), f"{where}: {first['msg']}"
    )


# -- trying again ---------------------------------------------------------------------------------------------------


def retry_after_s(response: httpx2.Response) -> float | None:
    """Retry-After in seconds (delta-seconds or an HTTP date), or None."""
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def retry_delay(call: Call, attempt: int, response: httpx2.Response | None) -> float | None:
    """How long to wait before trying `call` again after `response` (None: no answer), or None not to."""
    if response is not None:
        retryable = response.status_code in (429, 503) or (
            response.status_code == 409 and call.idempotent and _problem_type(response).endswith("/request-in-progress")
        )
        if not retryable:
            return None
        server_says = retry_after_s(response)
        if server_says is not None:
            return server_says if server_says <= MAX_RETRY_AFTER_S else None
    # full jitter, growing: spreads clients that failed together
    return random.uniform(0.5, 1.0) * min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2.0**attempt)


def _problem_type(response: httpx2.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    return str(body.get("type", "")) if isinstance(body, dict) else ""


def per_try_timeout(deadline: float | None, configured: httpx2.Timeout) -> httpx2.Timeout | None:
    """What is left before `deadline` when it is less than the client's own timeout (None: the client's)."""
    if deadline is None:
        return None
    left = max(0.05, deadline - time.monotonic())
    return httpx2.Timeout(left) if configured.read is None or left < configured.read else None


def retryable_exception(call: Call, exc: httpx2.TransportError) -> bool:
    """A request that never left (no connection) may always be repeated; one that may have reached the server
    only when it is idempotent."""
    if isinstance(exc, httpx2.ConnectError | httpx2.ConnectTimeout | httpx2.PoolTimeout):
        return True
    after_sending = httpx2.TimeoutException | httpx2.NetworkError | httpx2.RemoteProtocolError
    return call.idempotent and isinstance(exc, after_sending)


def connection_error(base_url: str, exc: httpx2.TransportError) -> APIConnectionError:
    message = f"{base_url}: {str(exc) or type(exc).__name__}"
    return APITimeoutError(message) if isinstance(exc, httpx2.TimeoutException) else APIConnectionError(message)
