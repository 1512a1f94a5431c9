"""End-to-end: the whole local stack (`aitasks local up`, as `make run` starts it), driven over HTTP.

If a stack is already up (its port answers and .local/api_url is there) the tests use it and leave it running. The
port is AITASKS_LOCAL_PORT's (default 4566); `aitasks local up` reads the same variable.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import requests

from aitasks.adapters.postgres import ConnectionProvider, PostgresApiKeyRepository
from aitasks.application.auth import CreateApiKey
from aitasks.domain.task import TenantId
from aitasks_cli.local_stack import port_taken

if TYPE_CHECKING:
    from collections.abc import Iterator

ROOT = Path(__file__).parents[2]
LOCAL = ROOT / ".local"
PORT = int(os.environ.get("AITASKS_LOCAL_PORT", "4566"))
ENDPOINT = f"http://127.0.0.1:{PORT}"


@dataclass(frozen=True)
class Stack:
    url: str
    key: str

    def headers(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.key}"}


def new_tenant(name: str) -> tuple[str, str]:
    """A tenant of its own (no tasks yet) and a key for it: the stack's database, as `aitasks keys create` does."""
    provider = ConnectionProvider(lambda: (LOCAL / "database_url").read_text().strip())
    tenant = f"{name}-{uuid.uuid4().hex[:6]}"
    try:
        _, key = CreateApiKey(PostgresApiKeyRepository(provider))(TenantId(tenant), "e2e")
        return tenant, key
    finally:
        provider.close()


def _read() -> Stack:
    return Stack((LOCAL / "api_url").read_text().strip(), (LOCAL / "api_key").read_text().strip())


def _wait_healthy(stack: Stack, timeout_s: float = 60) -> None:
    """A running stack answers /health (a loaded machine may take a while to answer the first time)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if requests.get(f"{stack.url}/health", timeout=10).ok:
                return
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"the local stack on port {PORT} does not answer {stack.url}/health")
        time.sleep(1)


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    if port_taken(PORT):
        if not (LOCAL / "api_url").is_file():
            pytest.fail(f"port {PORT} is taken by something that is not this checkout's local stack")
        running = _read()
        _wait_healthy(running)
        yield running
        return
    (LOCAL / "api_url").unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    log = (LOCAL.mkdir(exist_ok=True) or LOCAL / "e2e-stack.out").open("wb")
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("aitasks")), "local", "up"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 300
        while not (LOCAL / "api_url").is_file():
            if proc.poll() is not None:
                pytest.fail(f"the local stack exited with {proc.returncode}: {(LOCAL / 'e2e-stack.out').read_text()}")
            if time.monotonic() > deadline:
                pytest.fail("the local stack did not come up within 300 s")
            time.sleep(1)
        yield _read()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
