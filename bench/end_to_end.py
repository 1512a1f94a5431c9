"""Scenario 5, end to end: the local stack (`aitasks local up` on its own port: MiniStack, the real template, the
fake provider) on the bench's PostgreSQL; `n` tasks created over HTTP by `concurrency` clients; the time from the
first request until every task has succeeded, the create latency and each task's queued -> succeeded time."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from bench.harness import ROOT, latency, scenario_main

LOCAL = ROOT / ".local"
TOOLS = (LOCAL / "tools" / "ministack" / "bin" / "ministack", LOCAL / "tools" / "sam" / "bin" / "sam")


def _start(port: int, url: str, log_path: Any) -> subprocess.Popen[bytes]:
    (LOCAL / "api_url").unlink(missing_ok=True)
    env = {**os.environ, "DATABASE_URL": url}
    env.pop("OPENAI_API_KEY", None)  # the fake provider
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [str(ROOT / ".venv" / "bin" / "aitasks"), "local", "up", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def _wait_up(proc: subprocess.Popen[bytes], timeout_s: float) -> tuple[str, str]:
    deadline = time.monotonic() + timeout_s
    while not (LOCAL / "api_url").is_file():
        if proc.poll() is not None:
            raise RuntimeError(f"the local stack exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the local stack was not up within {timeout_s:.0f} s")
        time.sleep(0.5)
    return (LOCAL / "api_url").read_text().strip(), (LOCAL / "api_key").read_text().strip()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)  # it stops MiniStack and what it started
        try:
            proc.wait(90)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _create_all(api: str, key: str, n: int, concurrency: int, url: str) -> tuple[datetime, list[float], list[str]]:
    import requests

    local = threading.local()
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    def create(i: int) -> tuple[float, str]:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        body = {"type": "chat", "payload": {"prompt": f"End to end, task {i}"}}
        t0 = time.perf_counter()
        response = local.session.post(f"{api}/tasks", json=body, headers=headers, timeout=180)
        elapsed = time.perf_counter() - t0
        if response.status_code != 202:
            raise RuntimeError(f"POST /tasks answered {response.status_code}: {response.text[:300]}")
        return elapsed, str(response.json()["id"])

    # Warm-up: one burst of `concurrency` requests makes MiniStack start that many create_task workers (their cold
    # starts, several seconds each on a loaded machine, are not what this scenario measures), and waiting for those
    # tasks warms the executor too.
    with ThreadPoolExecutor(concurrency) as pool:
        warm = [task_id for _, task_id in pool.map(create, range(-concurrency, 0))]
    _wait_succeeded(url, warm, 300)
    started = datetime.now(UTC)
    with ThreadPoolExecutor(concurrency) as pool:
        done = list(pool.map(create, range(n)))
    return started, [d[0] for d in done], [d[1] for d in done]


def _wait_succeeded(url: str, ids: list[str], timeout_s: float) -> list[tuple[datetime, datetime]]:
    """(created_at, succeeded at) of every task, once all have succeeded."""
    import psycopg

    deadline = time.monotonic() + timeout_s
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            rows = conn.execute(
                "SELECT status, created_at, updated_at FROM tasks WHERE id = ANY(%s::uuid[])", [ids]
            ).fetchall()
            if len(rows) == len(ids) and all(r[0] == "succeeded" for r in rows):
                return [(r[1], r[2]) for r in rows]
            if any(r[0] in ("dead_letter", "cancelled") for r in rows):
                raise RuntimeError("a task ended without succeeding")
            if time.monotonic() > deadline:
                done = sum(1 for r in rows if r[0] == "succeeded")
                raise RuntimeError(f"{done} of {len(ids)} tasks succeeded within {timeout_s:.0f} s")
            time.sleep(0.1)


def run(config: dict[str, Any]) -> dict[str, Any]:
    missing = [str(t.relative_to(ROOT)) for t in TOOLS if not t.exists()]
    if missing:
        return {"skipped": f"the local tools are not installed ({', '.join(missing)}): run `make bench`"}
    url, n, concurrency = config["database_url"], config["n"], config["concurrency"]
    log = LOCAL / "bench-stack.out"
    started_up = time.monotonic()
    proc = _start(config["port"], url, log)
    try:
        api, key = _wait_up(proc, 300)
        up_s = time.monotonic() - started_up
        first, create_s, ids = _create_all(api, key, n, concurrency, url)
        times = _wait_succeeded(url, ids, config.get("timeout_s", 300))
    finally:
        _stop(proc)
    last = max(done for _, done in times)
    return {
        "n": n,
        "concurrency": concurrency,
        "port": config["port"],
        "stack_up_seconds": round(up_s, 1),
        "all_succeeded_seconds": round((last - first).total_seconds(), 2),
        "tasks_per_s": round(n / (last - first).total_seconds(), 1),
        "create": latency(create_s),
        "queued_to_succeeded": latency([(done - created).total_seconds() for created, done in times]),
    }


if __name__ == "__main__":
    scenario_main(run)
