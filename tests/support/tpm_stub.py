"""An OpenAI-compatible server with a tokens-per-minute limit, enforced as OpenAI estimates it (POST
/v1/chat/completions on 127.0.0.1): the benchmark of flow control under scarcity (bench/scarcity.py) runs the real
executor against it.

A request counts ceil(characters of all its messages' contents / 4) + its max_tokens (or max_completion_tokens)
tokens, at its arrival, in a sliding 60 s window. One that would take the window past `tpm` is answered at once with
429 (`rate_limit_exceeded`, with Retry-After, retry-after-ms and x-ratelimit-* headers saying when enough of the
window frees); it counts nothing. One that fits is answered after `latency_ms` (a range: each call's latency is drawn
from it, like a real model's) with usage prompt_tokens = the input estimate and completion_tokens = max_tokens, so the
usage equals what the limit counted.

Every request is recorded (`records()`: arrival on the monotonic clock, tokens, status). No pytest here: the bench
imports it. By hand: `python -m tests.support.tpm_stub --tpm 30000` (then OPENAI_BASE_URL=the printed URL).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

WINDOW_S = 60.0


@dataclasses.dataclass(frozen=True, slots=True)
class Call:
    """One request as the limiter saw it: when it arrived (time.monotonic()), what it counted, how it was answered."""

    at: float
    tokens: int
    status: int
    model: str | None


def message_chars(messages: Any) -> int:
    """Characters of every message's content: a string, or the text of its parts."""
    total = 0
    for message in messages if isinstance(messages, list) else []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            total += len(content)
        elif isinstance(content, list):
            total += sum(len(p.get("text") or "") for p in content if isinstance(p, dict))
    return total


def estimate(body: Any) -> tuple[int, int]:
    """(input tokens, output cap) of a chat completion request, as OpenAI's limiter counts them."""
    body = body if isinstance(body, dict) else {}
    cap = body.get("max_completion_tokens") or body.get("max_tokens") or 0
    return math.ceil(message_chars(body.get("messages")) / 4), int(cap) if isinstance(cap, int) else 0


class TokenWindow:
    """The sliding window: what requests that fitted counted in the last WINDOW_S seconds."""

    def __init__(self, tpm: int, window_s: float = WINDOW_S) -> None:
        self.tpm = tpm
        self.window_s = window_s
        self._admitted: deque[tuple[float, int]] = deque()
        self._used = 0

    def admit(self, tokens: int, now: float) -> tuple[bool, float, int]:
        """Whether `tokens` fit now (then they are counted); else how long until they would; and the tokens in use."""
        while self._admitted and self._admitted[0][0] <= now - self.window_s:
            self._used -= self._admitted.popleft()[1]
        if self._used + tokens <= self.tpm:
            self._admitted.append((now, tokens))
            self._used += tokens
            return True, 0.0, self._used
        if tokens > self.tpm:
            return False, math.inf, self._used
        freed, wait = 0, 0.0
        for at, counted in self._admitted:
            freed += counted
            if self._used - freed + tokens <= self.tpm:
                wait = at + self.window_s - now
                break
        return False, max(wait, 0.001), self._used


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256


class TpmStub:
    """The server on a free port, in a thread of this process; `base_url` is what an OpenAI client takes."""

    def __init__(
        self,
        tpm: int,
        *,
        latency_ms: tuple[int, int] = (1000, 2000),
        window_s: float = WINDOW_S,
        seed: int = 0,
    ) -> None:
        self.window = TokenWindow(tpm, window_s)
        self.latency_ms = latency_ms
        self._random = random.Random(seed)
        self._calls: list[Call] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = _Server(("127.0.0.1", 0), _handler_for(self))
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="tpm-stub", daemon=True
        )

    @property
    def tpm(self) -> int:
        return self.window.tpm

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def records(self) -> list[Call]:
        with self._lock:
            return list(self._calls)

    def start(self) -> TpmStub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> TpmStub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def answer(self, body: Any) -> tuple[int, dict[str, str], dict[str, Any], float]:
        """Status, headers, JSON body and how long to wait before sending them."""
        prompt_tokens, cap = estimate(body)
        tokens = prompt_tokens + cap
        model = body.get("model") if isinstance(body, dict) else None
        with self._lock:
            now = time.monotonic()
            fits, wait_s, used = self.window.admit(tokens, now)
            self._calls.append(Call(now, tokens, 200 if fits else 429, model if isinstance(model, str) else None))
            delay_s = self._random.uniform(*self.latency_ms) / 1000 if fits else 0.0
        limit = self.window.tpm
        headers = {
            "x-ratelimit-limit-tokens": str(limit),
            "x-ratelimit-remaining-tokens": str(max(limit - used, 0)),
        }
        if not fits:
            if math.isinf(wait_s):
                message = f"Request too large for {model} on tokens per min (TPM): Limit {limit}, Requested {tokens}."
                return 429, headers, _error(message), 0.0
            headers["retry-after"] = str(max(1, math.ceil(wait_s)))
            headers["retry-after-ms"] = str(max(1, math.ceil(wait_s * 1000)))
            headers["x-ratelimit-reset-tokens"] = f"{wait_s:.3f}s"
            message = (
                f"Rate limit reached for {model} in organization org-bench on tokens per min (TPM): Limit {limit}, "
                f"Used {used}, Requested {tokens}. Please try again in {wait_s * 1000:.0f}ms."
            )
            return 429, headers, _error(message), 0.0
        return 200, headers, _completion(model or "stub", prompt_tokens, cap), delay_s


def _error(message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "tokens", "param": None, "code": "rate_limit_exceeded"}}


def _completion(model: str, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "id": "chatcmpl-tpm-stub",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "stub answer", "refusal": None},
                "finish_reason": "length",
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def _handler_for(stub: TpmStub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                body: Any = json.loads(raw) if raw else None
            except ValueError:
                body = None
            if self.path.rstrip("/") != "/v1/chat/completions":
                status, headers, doc, delay_s = 404, {}, _error("unknown path"), 0.0
            else:
                status, headers, doc, delay_s = stub.answer(body)
            if delay_s and stub._stopping.wait(delay_s):
                return
            data = json.dumps(doc).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                return

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.support.tpm_stub", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tpm", type=int, required=True)
    parser.add_argument("--latency-ms", default="1000-2000", help="a range, e.g. 1000-2000")
    args = parser.parse_args()
    low, _, high = args.latency_ms.partition("-")
    with TpmStub(args.tpm, latency_ms=(int(low), int(high or low))) as stub:
        print(f"OPENAI_BASE_URL={stub.base_url}", flush=True)
        try:
            while True:
                time.sleep(60)
                calls = [c for c in stub.records() if c.at > time.monotonic() - WINDOW_S]
                used = sum(c.tokens for c in calls if c.status == 200)
                print(f"last 60 s: {len(calls)} calls, {used} tokens, {sum(c.status == 429 for c in calls)} 429s")
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
