"""The Python client of the aitasks API: asynchronous AI tasks, created, followed and managed in a few lines.

from aitasks_client import Client

with Client() as client:  # AITASKS_API_URL (…/api/v1) and AITASKS_API_KEY, or base_url= and api_key=
    task = client.create("chat", "Write a haiku about queues")
    done = client.wait(task.id, timeout=120)
    print(done.status, client.artifacts(done.id)[0].content)
"""

from aitasks_client._base import TaskPage
from aitasks_client._client import AsyncClient, Client
from aitasks_client._version import __version__
from aitasks_client.errors import (
    AitasksError,
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    BudgetExceededError,
    ConflictError,
    InternalServerError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitError,
    ServiceUnavailableError,
    UnexpectedResponseError,
    UnprocessableEntityError,
    WaitTimeoutError,
)
from aitasks_client.models import (
    Artifact,
    ArtifactKind,
    Attempt,
    Event,
    ModelUsage,
    Period,
    Problem,
    Task,
    TaskStatus,
    Ticket,
    Usage,
    WaitingFor,
)

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AitasksError",
    "Artifact",
    "ArtifactKind",
    "AsyncClient",
    "Attempt",
    "AuthenticationError",
    "BadRequestError",
    "BudgetExceededError",
    "Client",
    "ConflictError",
    "Event",
    "InternalServerError",
    "ModelUsage",
    "NotFoundError",
    "PayloadTooLargeError",
    "Period",
    "PermissionDeniedError",
    "Problem",
    "RateLimitError",
    "ServiceUnavailableError",
    "Task",
    "TaskPage",
    "TaskStatus",
    "Ticket",
    "UnexpectedResponseError",
    "UnprocessableEntityError",
    "Usage",
    "WaitTimeoutError",
    "WaitingFor",
    "__version__",
]
