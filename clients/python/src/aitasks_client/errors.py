"""Errors as typed exceptions. An answer of 400 or more is an `APIStatusError` subclass carrying the problem
document; no answer at all is an `APIConnectionError`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from aitasks_client.models import Problem

if TYPE_CHECKING:
    import httpx2

    from aitasks_client.models import Task

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AitasksError",
    "AuthenticationError",
    "BadRequestError",
    "BudgetExceededError",
    "ConflictError",
    "InternalServerError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "RateLimitError",
    "ServiceUnavailableError",
    "UnexpectedResponseError",
    "UnprocessableEntityError",
    "WaitTimeoutError",
]


class AitasksError(Exception):
    """Everything this client raises."""


class APIConnectionError(AitasksError):
    """The request got no answer: DNS, connection refused or reset, TLS."""


class APITimeoutError(APIConnectionError):
    """The request got no answer in time."""


class APIStatusError(AitasksError):
    """The API answered with a problem (status 400 or more)."""

    def __init__(self, problem: Problem, *, headers: dict[str, str] | None = None) -> None:
        message = f"{problem.status} {problem.title}" + (f": {problem.detail}" if problem.detail else "")
        if problem.errors:
            message += " (" + "; ".join(f"{e.field}: {e.message}" for e in problem.errors) + ")"
        super().__init__(message)
        self.problem = problem
        self.headers = headers or {}

    @property
    def status(self) -> int:
        return self.problem.status

    @property
    def type(self) -> str:
        return self.problem.type

    @property
    def title(self) -> str:
        return self.problem.title

    @property
    def detail(self) -> str:
        return self.problem.detail

    @property
    def trace_id(self) -> str:
        return self.problem.trace_id


class BadRequestError(APIStatusError):
    """400: the body is not JSON, or the gateway refused the request's shape."""


class AuthenticationError(APIStatusError):
    """401: no, unknown or revoked API key."""


class BudgetExceededError(APIStatusError):
    """402: the tenant's monthly budget is spent or held; `problem` has budgetUsd, spentUsd, reservedUsd, periodEnd."""


class PermissionDeniedError(APIStatusError):
    """403: blocked before reaching the API."""


class NotFoundError(APIStatusError):
    """404: no such task (for this tenant) or route."""


class ConflictError(APIStatusError):
    """409: the task's status forbids it, or a request with the same Idempotency-Key is still running."""


class PayloadTooLargeError(APIStatusError):
    """413: the payload is over its size limit."""


class UnprocessableEntityError(APIStatusError):
    """422: the request breaks the contract; `problem.errors` names each field."""


class RateLimitError(APIStatusError):
    """429: throttled or over quota (retried by the client before it is raised)."""


class InternalServerError(APIStatusError):
    """500 or another 5xx: a fault on the server's side."""


class ServiceUnavailableError(InternalServerError):
    """503: the service cannot answer now (retried by the client before it is raised)."""


_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    402: BudgetExceededError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: UnprocessableEntityError,
    429: RateLimitError,
    503: ServiceUnavailableError,
}


class UnexpectedResponseError(AitasksError):
    """A successful answer that is not the API's (a wrong base URL answered by another server, a proxy's page)."""

    def __init__(self, status: int, content_type: str | None, url: str, reason: str = "") -> None:
        message = f"not an aitasks answer: {status} {content_type or 'no content type'} from {url}"
        super().__init__(f"{message} ({reason})" if reason else message)
        self.status = status


class WaitTimeoutError(AitasksError, TimeoutError):
    """`wait` ran out of time; `task` is the last state seen."""

    def __init__(self, task: Task, timeout: float) -> None:
        super().__init__(f"task {task.id} is still {task.status.value} after {timeout:g} s")
        self.task = task


def status_error(response: httpx2.Response) -> APIStatusError:
    """The typed exception for an error answer, with its problem document (or one made of a non-problem body)."""
    body: Any
    try:
        body = response.json()
    except ValueError:
        body = None
    fallback = {"status": response.status_code, "title": response.reason_phrase or f"HTTP {response.status_code}"}
    problem: Problem
    if isinstance(body, dict) and "title" in body:
        try:
            problem = Problem.model_validate({**fallback, **body})
        except ValidationError:
            problem = Problem.model_validate(fallback | {"detail": str(body)[:500]})
    elif isinstance(body, dict) and "message" in body:  # API Gateway's own answers
        problem = Problem.model_validate(fallback | {"detail": str(body["message"])})
    else:
        problem = Problem.model_validate(fallback | {"detail": response.text[:500]})
    headers = dict(response.headers.items())
    problem_class = _BY_STATUS.get(response.status_code)
    if problem_class is None:
        problem_class = InternalServerError if response.status_code >= 500 else APIStatusError
    return problem_class(problem, headers=headers)
