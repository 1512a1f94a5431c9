"""An OpenAI-compatible HTTP stub for driving the real `openai` SDK: POST /v1/chat/completions on 127.0.0.1.

Script replies with `stub.enqueue(Reply...)` (first in, first out; an empty queue answers `ok()`, after
`default_delay_ms`); every request is recorded (path, headers, JSON body) so tests assert on what the SDK actually
sent.

    def test_x(openai_stub): ...  # after `from tests.support.openai_stub import openai_stub  # noqa: F401`
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

MODEL_USED = "gpt-4o-mini-2024-07-18"


@dataclasses.dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    delay_ms: int = 0
    content_type: str = "application/json"


@dataclasses.dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    json: Any


def completion(
    text: str | None = "stub answer",
    *,
    model: str = MODEL_USED,
    finish_reason: str = "stop",
    prompt_tokens: int = 42,
    completion_tokens: int = 7,
    cached_tokens: int = 10,
    reasoning_tokens: int = 3,
    refusal: str | None = None,
) -> dict[str, Any]:
    return {
        "id": "chatcmpl-stub",
        "object": "chat.completion",
        "created": 1_750_000_000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": refusal},
                "finish_reason": finish_reason,
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": reasoning_tokens, "audio_tokens": 0},
        },
    }


def ok(text: str | None = "stub answer", **kwargs: Any) -> Reply:
    return Reply(body=json.dumps(completion(text, **kwargs)).encode())


def content_filtered() -> Reply:
    return ok(None, finish_reason="content_filter")


def slow(delay_ms: int, text: str = "slow answer") -> Reply:
    return dataclasses.replace(ok(text), delay_ms=delay_ms)


def malformed() -> Reply:
    return Reply(body=b'{"id": "chatcmpl-stub", "choices": [{"message": ')


def error(
    status: int,
    message: str = "stub error",
    *,
    code: str | None = None,
    type: str = "invalid_request_error",
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Reply:
    body = {"error": {"message": message, "type": type, "param": None, "code": code, **(extra or {})}}
    return Reply(status=status, body=json.dumps(body).encode(), headers=headers or {})


def rate_limited(retry_after: str | None = "7", *, retry_after_ms: str | None = None) -> Reply:
    headers = {"retry-after": retry_after} if retry_after is not None else {}
    if retry_after_ms is not None:
        headers["retry-after-ms"] = retry_after_ms
    return error(429, "Rate limit reached", code="rate_limit_exceeded", type="requests", headers=headers)


def insufficient_quota() -> Reply:
    return error(429, "You exceeded your current quota", code="insufficient_quota", type="insufficient_quota")


def context_length_exceeded() -> Reply:
    return error(400, "This model's maximum context length is 128000 tokens", code="context_length_exceeded")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # an executor opens a connection per concurrent call (socketserver's default: 5)


class OpenAiStub:
    """A threaded HTTP server on a free port; `base_url` is what an OpenAI client takes."""

    def __init__(self) -> None:
        self.replies: deque[Reply] = deque()
        self.requests: list[Recorded] = []
        self.successes = 0  # 200 replies sent
        self.default_delay_ms = 0  # how long an unscripted reply takes
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = _Server(("127.0.0.1", 0), _handler_for(self))
        # A short poll keeps shutdown (one per test) quick.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="openai-stub", daemon=True
        )

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def enqueue(self, *replies: Reply) -> None:
        with self._lock:
            self.replies.extend(replies)

    def start(self) -> OpenAiStub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes handlers still sleeping on a slow reply
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> OpenAiStub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _next(self, recorded: Recorded) -> Reply:
        with self._lock:
            self.requests.append(recorded)
            return self.replies.popleft() if self.replies else dataclasses.replace(ok(), delay_ms=self.default_delay_ms)

    def _answered(self, reply: Reply) -> None:
        if reply.status == 200:
            with self._lock:
                self.successes += 1


def _handler_for(stub: OpenAiStub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                body: Any = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode(errors="replace")
            recorded = Recorded("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            reply = stub._next(recorded) if self.path == "/v1/chat/completions" else error(404, "unknown path")
            if reply.delay_ms and stub._stopping.wait(reply.delay_ms / 1000):
                return
            # Counted before writing: the client may read the reply before this thread runs another line.
            stub._answered(reply)
            try:
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(reply.body)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(reply.body)
            except (BrokenPipeError, ConnectionResetError):
                return  # the client gave up (its timeout): that is what the test wanted

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def openai_stub() -> Iterator[OpenAiStub]:
    with OpenAiStub() as stub:
        yield stub
