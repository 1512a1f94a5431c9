"""The REST API v1 over HTTP, for the `aitasks tasks ...` commands (httpx2, the HTTP client the openai SDK uses).

Any answer of 400 or more becomes an ApiProblem (RFC 9457 when the body is one; API Gateway's own `{"message"}`
otherwise); a request that never got an answer is ApiUnreachableError.
"""

from __future__ import annotations

import dataclasses
import re
import time
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import quote

import httpx2

from aitasks_cli import __version__

if TYPE_CHECKING:
    from collections.abc import Callable

USER_AGENT = f"aitasks-cli/{__version__}"
RETRYABLE = {429, 503}
GET_RETRIES = 4
MAX_RETRY_AFTER_S = 30.0


class ApiUnreachableError(Exception):
    """No answer: DNS, connection, TLS or timeout."""


class ApiProblem(Exception):
    def __init__(self, status: int, title: str, detail: str | None, body: Any) -> None:
        super().__init__(f"{title}: {detail}" if detail else title)
        self.status = status
        self.title = title
        self.detail = detail
        self.body = body

    @classmethod
    def of(cls, response: httpx2.Response) -> ApiProblem:
        try:
            body: Any = response.json()
        except ValueError:
            body = response.text
        title, detail = response.reason_phrase or f"HTTP {response.status_code}", None
        if isinstance(body, dict):
            title = str(body.get("title") or title)
            detail = body.get("detail") or body.get("message")
            errors = [e for e in body.get("errors") or [] if isinstance(e, dict)]
            if errors:  # our validation problems: [{field, message}]
                fields = "; ".join(f"{e.get('field')}: {e.get('message')}" for e in errors)
                detail = f"{detail}: {fields}" if detail else fields
        elif body:
            detail = str(body)[:500]
        return cls(response.status_code, title, str(detail) if detail is not None else None, body)


@dataclasses.dataclass(frozen=True, slots=True)
class Page:
    items: list[dict[str, Any]]
    total: int | None
    has_next: bool


class AitasksApi:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout_s: float = 30,
        transport: httpx2.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._sleep = sleep
        self._http = httpx2.Client(
            base_url=base_url.rstrip("/") + "/",
            headers={"Authorization": f"Bearer {api_key}", "User-Agent": USER_AGENT, "Accept": "application/json"},
            timeout=timeout_s,
            transport=transport,
        )

    def __enter__(self) -> AitasksApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    def create(self, body: dict[str, Any], *, idempotency_key: str | None = None) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return cast("dict[str, Any]", self._json("POST", "tasks", json=body, headers=headers))

    def get(self, task_id: str) -> dict[str, Any]:
        return cast("dict[str, Any]", self._json("GET", f"tasks/{_id(task_id)}"))

    def cancel(self, task_id: str) -> dict[str, Any]:
        return cast("dict[str, Any]", self._json("POST", f"tasks/{_id(task_id)}/cancel"))

    def attempts(self, task_id: str) -> list[dict[str, Any]]:
        return cast("list[dict[str, Any]]", self._json("GET", f"tasks/{_id(task_id)}/attempts"))

    def artifacts(self, task_id: str) -> list[dict[str, Any]]:
        return cast("list[dict[str, Any]]", self._json("GET", f"tasks/{_id(task_id)}/artifacts"))

    def usage(self) -> dict[str, Any]:
        return cast("dict[str, Any]", self._json("GET", "usage"))

    def list(
        self,
        *,
        statuses: list[str] | None = None,
        types: list[str] | None = None,
        page: int = 1,
        page_size: int = 20,
    ) -> Page:
        params: dict[str, str | int] = {"page": page, "pageSize": page_size}
        if statuses:
            params["status"] = ",".join(statuses)
        if types:
            params["type"] = ",".join(types)
        response = self._send("GET", "tasks", params=params)
        total = response.headers.get("X-Total-Count")
        links = response.headers.get("Link", "")
        return Page(
            items=_body(response),
            total=int(total) if total and total.isdigit() else None,
            has_next=re.search(r'rel="?next"?', links) is not None,
        )

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return _body(self._send(method, path, **kwargs))

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx2.Response:
        """One request; a GET answered 429 or 503 is tried again after its Retry-After (reads are safe to repeat)."""
        retries = GET_RETRIES if method == "GET" else 0
        for attempt in range(retries + 1):
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx2.TransportError as exc:
                raise ApiUnreachableError(f"{self._http.base_url}: {str(exc) or type(exc).__name__}") from exc
            if response.status_code not in RETRYABLE or attempt == retries:
                break
            self._sleep(_retry_after(response, default_s=2.0**attempt))
        if not response.is_success:
            raise ApiProblem.of(response)
        return response


def _body(response: httpx2.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        detail = f"{response.headers.get('Content-Type')} from {response.url}"
        raise ApiProblem(response.status_code, "Not an aitasks answer", detail, response.text[:500]) from None


def _retry_after(response: httpx2.Response, *, default_s: float) -> float:
    value = response.headers.get("Retry-After", "")
    return min(float(value), MAX_RETRY_AFTER_S) if value.isdigit() else default_s


def _id(task_id: str) -> str:
    return quote(task_id, safe="")
