"""The sync `Client` and the async `AsyncClient`: the same methods, the same behaviour (see _base.py)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any, Self

import httpx2

from aitasks_client import _base
from aitasks_client._base import DEFAULT_MAX_RETRIES, DEFAULT_POLL_INTERVAL_S, DEFAULT_TIMEOUT_S, Call, TaskPage
from aitasks_client.errors import (
    AitasksError,
    APIConnectionError,
    InternalServerError,
    RateLimitError,
    WaitTimeoutError,
    status_error,
)
from aitasks_client.models import Artifact, Attempt, Event, Task, Ticket, Usage

if TYPE_CHECKING:
    import builtins
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
    from datetime import datetime
    from decimal import Decimal
    from types import TracebackType
    from uuid import UUID

    TaskId = str | UUID

__all__ = ["AsyncClient", "Client"]


class _Watch:
    """A task's state as last read, with its ETag, for conditional reads."""

    def __init__(self, task_id: TaskId, timeout: float | None) -> None:
        self.task_id = task_id
        self.key = _base.task_key(task_id)
        self.timeout = timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.task: Task | None = None
        self.etag: str | None = None

    def remaining(self) -> float | None:
        if self.deadline is None:
            return None
        left = self.deadline - time.monotonic()
        if left <= 0:
            assert self.task is not None
            raise WaitTimeoutError(self.task, self.timeout or 0)
        return left

    def call(self) -> Call:
        headers = {"If-None-Match": self.etag} if self.etag else {}
        return Call("GET", _base.task_path(self.task_id), headers=headers, idempotent=True)

    def read(self, response: httpx2.Response) -> Task | None:
        """The task if it changed since the last read, else None (304, or the same body)."""
        if response.status_code == 304 and self.task is not None:
            return None
        task = _base.parse(Task, response)
        self.etag = response.headers.get("ETag")
        if self.task is not None and task == self.task:
            return None
        self.task = task
        return task


class Client:
    """The aitasks API, synchronously.

    >>> with Client() as client:  # AITASKS_API_URL (…/api/v1) and AITASKS_API_KEY
    ...     task = client.create("chat", "Say hello")
    ...     done = client.wait(task.id, timeout=120)

    Requests answered 429 or 503, and requests that got no answer, are tried again (`max_retries` times, after the
    answer's Retry-After or a growing, jittered backoff) when that is safe: `create` always is, with the same
    Idempotency-Key each time, so however many tries reach the server there is one task.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float | httpx2.Timeout = DEFAULT_TIMEOUT_S,
        max_retries: int = DEFAULT_MAX_RETRIES,
        default_headers: Mapping[str, str] | None = None,
        transport: httpx2.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url, api_key = _base.settings(base_url, api_key)
        self.max_retries = max_retries
        self._sleep = sleep
        options = _base.client_options(self.base_url, api_key, timeout, default_headers)
        self._http = httpx2.Client(transport=transport, **options)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- tasks -------------------------------------------------------------------------------------------------------

    def create(
        self,
        type: str,
        prompt: str | None = None,
        *,
        context: str | Mapping[str, Any] | None = None,
        model: str | None = None,
        params: Mapping[str, Any] | None = None,
        payload: Mapping[str, Any] | None = None,
        priority: int | None = None,
        scheduled_at: datetime | None = None,
        max_attempts: int | None = None,
        max_cost_usd: Decimal | str | float | None = None,
        idempotency_key: str | None = None,
    ) -> Task:
        """Create a task (`type` chat, summarize or extract); its payload is `prompt`, `context`, `model` and
        `params`, or `payload` whole. An Idempotency-Key is made unless given, and reused on retries."""
        call = _base.create_call(
            type, prompt, payload=payload, context=context, model=model, params=params, priority=priority,
            scheduled_at=scheduled_at, max_attempts=max_attempts, max_cost_usd=max_cost_usd,
            idempotency_key=idempotency_key,
        )  # fmt: skip
        return _base.parse(Task, self._request(call))

    def get(self, task_id: TaskId) -> Task:
        return _base.parse(Task, self._request(Call("GET", _base.task_path(task_id), idempotent=True)))

    def list(
        self,
        *,
        status: str | Iterable[str] | None = None,
        type: str | Iterable[str] | None = None,
        page_size: int = _base.PAGE_SIZE,
    ) -> Iterator[Task]:
        """Every matching task, newest first, page after page as the iteration goes (each task once, even if
        tasks created meanwhile shift the pages)."""
        seen: set[UUID] = set()
        page = 1
        while True:
            result = self.list_page(status=status, type=type, page=page, page_size=page_size)
            for task in result.items:
                if task.id not in seen:
                    seen.add(task.id)
                    yield task
            if not result.has_next:
                return
            page += 1

    def list_page(
        self,
        *,
        status: str | Iterable[str] | None = None,
        type: str | Iterable[str] | None = None,
        page: int = 1,
        page_size: int = 20,
    ) -> TaskPage:
        return _base.page_of(self._request(_base.list_call(status, type, page, page_size)), page)

    def cancel(self, task_id: TaskId) -> Task:
        return _base.parse(Task, self._request(Call("POST", _base.task_path(task_id, "cancel"))))

    def retry(self, task_id: TaskId) -> Task:
        """Run a dead-lettered or cancelled task again (attempts start afresh)."""
        return _base.parse(Task, self._request(Call("POST", _base.task_path(task_id, "retry"))))

    def attempts(self, task_id: TaskId) -> builtins.list[Attempt]:
        call = Call("GET", _base.task_path(task_id, "attempts"), idempotent=True)
        return _base.parse_list(Attempt, self._request(call))

    def artifacts(self, task_id: TaskId) -> builtins.list[Artifact]:
        call = Call("GET", _base.task_path(task_id, "artifacts"), idempotent=True)
        return _base.parse_list(Artifact, self._request(call))

    def events(self, task_id: TaskId) -> builtins.list[Event]:
        call = Call("GET", _base.task_path(task_id, "events"), idempotent=True)
        return _base.parse_list(Event, self._request(call))

    def usage(self) -> Usage:
        return _base.parse(Usage, self._request(Call("GET", "usage", idempotent=True)))

    def websocket_ticket(self) -> Ticket:
        return _base.parse(Ticket, self._request(Call("POST", "websocket-tickets")))

    # -- following a task --------------------------------------------------------------------------------------------

    def wait(
        self,
        task_id: TaskId,
        timeout: float | None = None,
        *,
        poll_interval: float = DEFAULT_POLL_INTERVAL_S,
        live: bool = True,
    ) -> Task:
        """The task once it has ended (succeeded, cancelled or dead-lettered); WaitTimeoutError after `timeout` s."""
        task: Task | None = None
        for task in self.watch(task_id, timeout, poll_interval=poll_interval, live=live):  # noqa: B007
            pass
        assert task is not None
        return task

    def watch(
        self,
        task_id: TaskId,
        timeout: float | None = None,
        *,
        poll_interval: float = DEFAULT_POLL_INTERVAL_S,
        live: bool = True,
    ) -> Iterator[Task]:
        """The task now, then each time it changes, until it ends; WaitTimeoutError after `timeout` s.

        Changes come over the live-updates WebSocket (a ticket, then one read of the task per event of it; in case
        an event was missed, also a read after `poll_interval` s, then twice as long each time nothing changed, at
        most every 15 s); when it cannot be opened or drops, by polling every `poll_interval` s with
        If-None-Match, which costs an unchanged task a 304 and no body."""
        state = _Watch(task_id, timeout)
        with contextlib.ExitStack() as stack:
            state.read(self._request(state.call(), state.deadline))
            assert state.task is not None
            # A socket only for a task not over yet, opened before the caller sees the task (and acts on it); what
            # changed while it opened, the first re-read (after poll_interval) finds.
            socket = self._open_live(stack, state.deadline) if live and not state.task.done else None
            yield state.task
            quiet = 0  # re-reads in a row that found no change
            while not state.task.done:
                remaining = state.remaining()
                if socket is not None:
                    recheck = _base.live_recheck_s(poll_interval, quiet)
                    socket = self._await_event(socket, state.key, _bounded(recheck, remaining))
                else:
                    self._sleep(_bounded(poll_interval, remaining))
                try:
                    changed = state.read(self._request(state.call(), state.deadline))
                except _TRANSIENT:
                    if state.deadline is None:
                        raise
                    continue  # the API is briefly unavailable: the wait goes on until its deadline
                quiet = 0 if changed is not None else quiet + 1
                if changed is not None:
                    yield changed

    def _open_live(self, stack: contextlib.ExitStack, deadline: float | None) -> Any:
        """The live-updates WebSocket, opened with a ticket, or None: then the caller polls."""
        from websockets.sync.client import connect

        try:
            ticket = _base.parse(Ticket, self._request(Call("POST", "websocket-tickets"), deadline))
            url = _base.ticket_url(ticket.url, ticket.ticket)
            return stack.enter_context(connect(url, open_timeout=5, close_timeout=1))
        except (AitasksError, OSError, TimeoutError, ValueError) as exc:
            if getattr(exc, "status", None) == 401:
                raise
            return None  # polling instead
        except Exception as exc:  # websockets' handshake errors
            if type(exc).__module__.startswith("websockets"):
                return None
            raise

    @staticmethod
    def _await_event(socket: Any, task_id: str, timeout: float) -> Any:
        """Until an event of the task arrives or `timeout` passes; the socket, or None once it has closed."""
        from websockets.exceptions import ConnectionClosed

        deadline = time.monotonic() + timeout
        try:
            while (left := deadline - time.monotonic()) > 0:
                if _base.event_task_id(socket.recv(timeout=left)) == task_id:
                    return socket
        except TimeoutError:
            return socket
        except ConnectionClosed:
            socket.close()
            return None
        return socket

    # -- requests ----------------------------------------------------------------------------------------------------

    def _request(self, call: Call, deadline: float | None = None) -> httpx2.Response:
        """One call, tried again when that is safe (see _base.retry_delay), never past `deadline`."""
        attempt = 0
        while True:
            timeout = _base.per_try_timeout(deadline, self._http.timeout) or httpx2.USE_CLIENT_DEFAULT
            try:
                response = self._http.request(
                    call.method, call.path, params=call.params, json=call.json, headers=dict(call.headers),
                    timeout=timeout,
                )  # fmt: skip
            except httpx2.TransportError as exc:
                delay = _base.retry_delay(call, attempt, None) if _base.retryable_exception(call, exc) else None
                if not _in_time(delay, attempt, self.max_retries, deadline):
                    raise _base.connection_error(self.base_url, exc) from exc
            else:
                if response.is_success or response.status_code == 304:
                    return response
                delay = _base.retry_delay(call, attempt, response)
                if not _in_time(delay, attempt, self.max_retries, deadline):
                    raise status_error(response)
            assert delay is not None
            self._sleep(delay)
            attempt += 1


class AsyncClient:
    """The aitasks API, for asyncio: the methods of `Client`, awaited (`list` and `watch` are async iterators).

    >>> async with AsyncClient() as client:
    ...     task = await client.create("chat", "Say hello")
    ...     done = await client.wait(task.id, timeout=120)
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float | httpx2.Timeout = DEFAULT_TIMEOUT_S,
        max_retries: int = DEFAULT_MAX_RETRIES,
        default_headers: Mapping[str, str] | None = None,
        transport: httpx2.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.base_url, api_key = _base.settings(base_url, api_key)
        self.max_retries = max_retries
        self._sleep = sleep
        options = _base.client_options(self.base_url, api_key, timeout, default_headers)
        self._http = httpx2.AsyncClient(transport=transport, **options)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def create(
        self,
        type: str,
        prompt: str | None = None,
        *,
        context: str | Mapping[str, Any] | None = None,
        model: str | None = None,
        params: Mapping[str, Any] | None = None,
        payload: Mapping[str, Any] | None = None,
        priority: int | None = None,
        scheduled_at: datetime | None = None,
        max_attempts: int | None = None,
        max_cost_usd: Decimal | str | float | None = None,
        idempotency_key: str | None = None,
    ) -> Task:
        call = _base.create_call(
            type, prompt, payload=payload, context=context, model=model, params=params, priority=priority,
            scheduled_at=scheduled_at, max_attempts=max_attempts, max_cost_usd=max_cost_usd,
            idempotency_key=idempotency_key,
        )  # fmt: skip
        return _base.parse(Task, await self._request(call))

    async def get(self, task_id: TaskId) -> Task:
        return _base.parse(Task, await self._request(Call("GET", _base.task_path(task_id), idempotent=True)))

    async def list(
        self,
        *,
        status: str | Iterable[str] | None = None,
        type: str | Iterable[str] | None = None,
        page_size: int = _base.PAGE_SIZE,
    ) -> AsyncIterator[Task]:
        seen: set[UUID] = set()
        page = 1
        while True:
            result = await self.list_page(status=status, type=type, page=page, page_size=page_size)
            for task in result.items:
                if task.id not in seen:
                    seen.add(task.id)
                    yield task
            if not result.has_next:
                return
            page += 1

    async def list_page(
        self,
        *,
        status: str | Iterable[str] | None = None,
        type: str | Iterable[str] | None = None,
        page: int = 1,
        page_size: int = 20,
    ) -> TaskPage:
        return _base.page_of(await self._request(_base.list_call(status, type, page, page_size)), page)

    async def cancel(self, task_id: TaskId) -> Task:
        return _base.parse(Task, await self._request(Call("POST", _base.task_path(task_id, "cancel"))))

    async def retry(self, task_id: TaskId) -> Task:
        return _base.parse(Task, await self._request(Call("POST", _base.task_path(task_id, "retry"))))

    async def attempts(self, task_id: TaskId) -> builtins.list[Attempt]:
        call = Call("GET", _base.task_path(task_id, "attempts"), idempotent=True)
        return _base.parse_list(Attempt, await self._request(call))

    async def artifacts(self, task_id: TaskId) -> builtins.list[Artifact]:
        call = Call("GET", _base.task_path(task_id, "artifacts"), idempotent=True)
        return _base.parse_list(Artifact, await self._request(call))

    async def events(self, task_id: TaskId) -> builtins.list[Event]:
        call = Call("GET", _base.task_path(task_id, "events"), idempotent=True)
        return _base.parse_list(Event, await self._request(call))

    async def usage(self) -> Usage:
        return _base.parse(Usage, await self._request(Call("GET", "usage", idempotent=True)))

    async def websocket_ticket(self) -> Ticket:
        return _base.parse(Ticket, await self._request(Call("POST", "websocket-tickets")))

    async def wait(
        self,
        task_id: TaskId,
        timeout: float | None = None,
        *,
        poll_interval: float = DEFAULT_POLL_INTERVAL_S,
        live: bool = True,
    ) -> Task:
        task: Task | None = None
        async for task in self.watch(task_id, timeout, poll_interval=poll_interval, live=live):  # noqa: B007
            pass
        assert task is not None
        return task

    async def watch(
        self,
        task_id: TaskId,
        timeout: float | None = None,
        *,
        poll_interval: float = DEFAULT_POLL_INTERVAL_S,
        live: bool = True,
    ) -> AsyncIterator[Task]:
        state = _Watch(task_id, timeout)
        async with contextlib.AsyncExitStack() as stack:
            state.read(await self._request(state.call(), state.deadline))
            assert state.task is not None
            socket = await self._open_live(stack, state.deadline) if live and not state.task.done else None
            yield state.task
            quiet = 0
            while not state.task.done:
                remaining = state.remaining()
                if socket is not None:
                    recheck = _base.live_recheck_s(poll_interval, quiet)
                    socket = await self._await_event(socket, state.key, _bounded(recheck, remaining))
                else:
                    await self._sleep(_bounded(poll_interval, remaining))
                try:
                    changed = state.read(await self._request(state.call(), state.deadline))
                except _TRANSIENT:
                    if state.deadline is None:
                        raise
                    continue
                quiet = 0 if changed is not None else quiet + 1
                if changed is not None:
                    yield changed

    async def _open_live(self, stack: contextlib.AsyncExitStack, deadline: float | None) -> Any:
        from websockets.asyncio.client import connect

        try:
            ticket = _base.parse(Ticket, await self._request(Call("POST", "websocket-tickets"), deadline))
            url = _base.ticket_url(ticket.url, ticket.ticket)
            return await stack.enter_async_context(connect(url, open_timeout=5, close_timeout=1))
        except (AitasksError, OSError, TimeoutError, ValueError) as exc:
            if getattr(exc, "status", None) == 401:
                raise
            return None
        except Exception as exc:
            if type(exc).__module__.startswith("websockets"):
                return None
            raise

    @staticmethod
    async def _await_event(socket: Any, task_id: str, timeout: float) -> Any:
        from websockets.exceptions import ConnectionClosed

        try:
            async with asyncio.timeout(timeout):
                while _base.event_task_id(await socket.recv()) != task_id:
                    pass
        except TimeoutError:
            return socket
        except ConnectionClosed:
            with contextlib.suppress(Exception):
                await socket.close()
            return None
        return socket

    async def _request(self, call: Call, deadline: float | None = None) -> httpx2.Response:
        """One call, tried again when that is safe (see _base.retry_delay), never past `deadline`."""
        attempt = 0
        while True:
            timeout = _base.per_try_timeout(deadline, self._http.timeout) or httpx2.USE_CLIENT_DEFAULT
            try:
                response = await self._http.request(
                    call.method, call.path, params=call.params, json=call.json, headers=dict(call.headers),
                    timeout=timeout,
                )  # fmt: skip
            except httpx2.TransportError as exc:
                delay = _base.retry_delay(call, attempt, None) if _base.retryable_exception(call, exc) else None
                if not _in_time(delay, attempt, self.max_retries, deadline):
                    raise _base.connection_error(self.base_url, exc) from exc
            else:
                if response.is_success or response.status_code == 304:
                    return response
                delay = _base.retry_delay(call, attempt, response)
                if not _in_time(delay, attempt, self.max_retries, deadline):
                    raise status_error(response)
            assert delay is not None
            await self._sleep(delay)
            attempt += 1


_TRANSIENT = (APIConnectionError, RateLimitError, InternalServerError)


def _in_time(delay: float | None, attempt: int, max_retries: int, deadline: float | None) -> bool:
    """Whether to try again: a retryable failure, retries left, and the wait ends before the deadline."""
    if delay is None or attempt >= max_retries:
        return False
    return deadline is None or time.monotonic() + delay < deadline


def _bounded(seconds: float, remaining: float | None) -> float:
    return seconds if remaining is None else min(seconds, remaining)
