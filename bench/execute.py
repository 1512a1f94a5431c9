"""Scenario 2, execute: N queued tasks drained through the executor handler (fake provider, no latency: claim,
attempt row, artifact, status, outbox) by `concurrency` warm Lambda environments, each its own process with its own
connection, fed SQS batches as the event source mapping would; against the peer Procrastinate running a no-op job
for the same N on the same database with the same concurrency (one worker, `concurrency` async jobs at once).

Also: database round trips per executed task (counted from libpq's protocol trace), with and without the inline
outbox relay, and each environment's peak RSS."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import time
import uuid
from typing import TYPE_CHECKING, Any

from bench.harness import (
    CpuMeter,
    backend_pids,
    function_env,
    migrate_database,
    moto_server,
    peak_rss_mb,
    percentile,
    rates,
    scenario_main,
)

if TYPE_CHECKING:
    from multiprocessing.connection import Connection as Pipe
    from multiprocessing.queues import Queue

# An event source mapping hands the function at most this many messages (template: ExecutorBatchSize).
BATCH_SIZE = 10


def _sqs_event(task_ids: list[str]) -> dict[str, Any]:
    return {
        "Records": [
            {
                "messageId": str(uuid.uuid4()),
                "receiptHandle": f"rh-{task_id}",
                "body": f'{{"tenantId": "bench", "taskId": "{task_id}"}}',
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:work",
                "awsRegion": "us-east-1",
            }
            for task_id in task_ids
        ]
    }


class _Context:
    function_name = "executor"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:000000000000:function:executor"
    log_stream_name = "bench"

    def __init__(self) -> None:
        self.aws_request_id = str(uuid.uuid4())

    def get_remaining_time_in_millis(self) -> int:
        return 300_000  # the template's executor timeout


def _environment(env: dict[str, str], batches: Queue[list[str] | None], control: Pipe) -> None:
    """One Lambda environment: load the handler, then on each command drain batches until a None."""
    os.environ.update(env)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # the handler's logs and metrics
    from bench.harness import load_function, round_trips

    handler = load_function("executor")
    from aitasks import bootstrap

    while True:
        command = control.recv()
        if command == "stop":
            control.send({"peak_rss_mb": peak_rss_mb()})
            return
        done, failed, busy = 0, 0, 0.0
        conn = bootstrap.connection()()
        cpu = time.process_time()
        with round_trips(conn) if command == "count" else contextlib.nullcontext() as counted:
            while (batch := batches.get()) is not None:
                started = time.perf_counter()
                response = handler.lambda_handler(_sqs_event(batch), _Context())
                busy += time.perf_counter() - started  # what Lambda would bill this environment
                failed += len(response.get("batchItemFailures") or [])
                done += len(batch)
        report = {"done": done, "failed": failed, "cpu_s": time.process_time() - cpu, "busy_s": busy}
        control.send({**report, "round_trips": counted[0] if counted else None})


class Executors:
    """`concurrency` executor environments fed from one queue of SQS batches."""

    def __init__(self, env: dict[str, str], concurrency: int) -> None:
        self.meter = CpuMeter([])  # the environments' backends, once they are connected
        self.cpu: dict[str, float | None] = {}
        ctx = multiprocessing.get_context("spawn")
        self.batches: Queue[list[str] | None] = ctx.Queue()
        self.pipes: list[Pipe] = []
        self.procs = []
        for _ in range(concurrency):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_environment, args=(env, self.batches, child), daemon=True)
            proc.start()
            self.pipes.append(parent)
            self.procs.append(proc)

    def drain(self, task_ids: list[str], command: str = "run") -> tuple[float, list[dict[str, Any]]]:
        """Seconds from the first batch handed out until every environment has finished; their reports."""
        for i in range(0, len(task_ids), BATCH_SIZE):
            self.batches.put(task_ids[i : i + BATCH_SIZE])
        for _ in self.pipes:
            self.batches.put(None)
        time.sleep(0.2)  # let the queue's feeder thread flush, so the clock measures the work only
        self.meter.start()
        started = time.perf_counter()
        for pipe in self.pipes:
            pipe.send(command)
        reports = [pipe.recv() for pipe in self.pipes]
        elapsed = time.perf_counter() - started
        self.cpu = {**self.meter.stop(), "python_cpu_s": sum(r["cpu_s"] for r in reports)}
        return elapsed, reports

    def stop(self) -> list[float]:
        for pipe in self.pipes:
            pipe.send("stop")
        peaks = [pipe.recv()["peak_rss_mb"] for pipe in self.pipes]
        for proc in self.procs:
            proc.join(10)
        return peaks


_QUEUED = """INSERT INTO tasks (id, tenant_id, type, priority, status, payload, available_at, max_attempts,
                   attempt_count, created_at, updated_at, dispatched_at)
SELECT gen_random_uuid(), 'bench', 'chat', 5, 'queued',
       jsonb_build_object('prompt', 'Say hello, ' || i) || %(extra)s::jsonb,
       now() - interval '1 second', 3, 0, now(), now(), now()
FROM generate_series(1, %(n)s) AS i
RETURNING id"""
_QUEUE = """INSERT INTO task_queues AS q (tenant_id, model_key, ready_at)
VALUES ('bench', '', now() - interval '1 second')
ON CONFLICT (tenant_id, model_key) DO UPDATE SET ready_at = LEAST(q.ready_at, EXCLUDED.ready_at), gen = q.gen + 1"""


def queued_tasks(url: str, n: int, *, latency_ms: int = 0) -> list[str]:
    """N due tasks of one tenant (the fake model answers each after `latency_ms`); their ids."""
    import psycopg
    from psycopg.types.json import Jsonb

    extra = Jsonb({"params": {"fake": {"latencyMs": latency_ms}}} if latency_ms else {})
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO tenant_limits (tenant_id, max_concurrency, updated_at) VALUES ('bench', 10000, now()) "
            "ON CONFLICT DO NOTHING"
        )
        ids = [str(row[0]) for row in conn.execute(_QUEUED, {"n": n, "extra": extra}).fetchall()]
        conn.execute(_QUEUE)  # what a create writes beside its task: the tenant's queue on the model, ready
        return ids


def empty(url: str) -> None:
    """Both sides start every round on empty tables: Procrastinate's worker slows down as finished jobs pile up
    (about a third slower per 2,000), which would hand the later rounds to us."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE tasks, task_attempts, task_artifacts, outbox_messages, procrastinate_jobs CASCADE")
        conn.execute("VACUUM ANALYZE")


def succeeded(url: str, ids: list[str]) -> int:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM tasks WHERE id = ANY(%s::uuid[]) AND status = 'succeeded'", [ids]
        ).fetchone()
        return int(row[0]) if row else 0


class Procrastinate:
    """The peer: one Procrastinate worker with `concurrency` async no-op jobs at once, a pool of as many
    connections as our side has (plus its listener), on the same database."""

    def __init__(self, url: str, concurrency: int) -> None:
        import procrastinate
        from psycopg.conninfo import make_conninfo

        self.version = _version("procrastinate")
        self.url, self.concurrency = url, concurrency
        self.cpu: dict[str, float | None] = {}
        self.succeeded = 0
        conninfo = make_conninfo(url, application_name="procrastinate-bench")
        self.app = procrastinate.App(
            connector=procrastinate.PsycopgConnector(
                conninfo=conninfo, min_size=concurrency + 1, max_size=concurrency + 1
            )
        )

        @self.app.task(name="noop", queue="bench")
        async def noop(i: int) -> None:
            return None

        self.task = noop
        asyncio.run(self._apply_schema())

    async def _apply_schema(self) -> None:
        async with self.app.open_async():
            await self.app.schema_manager.apply_schema_async()

    def drain(self, n: int) -> float:
        return asyncio.run(self._drain(n))

    async def _drain(self, n: int) -> float:
        async with self.app.open_async():
            await self.task.batch_defer_async(*({"i": i} for i in range(n)))
            meter = CpuMeter(backend_pids(self.url, "procrastinate-bench"))
            meter.start()
            cpu = time.process_time()
            started = time.perf_counter()
            await self.app.run_worker_async(
                queues=["bench"], concurrency=self.concurrency, wait=False, install_signal_handlers=False
            )
            elapsed = time.perf_counter() - started
            self.cpu = {**meter.stop(), "python_cpu_s": time.process_time() - cpu}
            async with self.app.connector.pool.connection() as conn, conn.cursor() as cur:  # type: ignore[attr-defined]
                await cur.execute("SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'")
                row = await cur.fetchone()
                self.succeeded = int(row[0]) if row else 0
        return elapsed


def _cpu(rounds: list[dict[str, float | None]], n: int) -> dict[str, float | None]:
    """Per executed task, the median over the rounds: CPU milliseconds in Python and in the database backends, and
    how busy the whole machine was (other work on a shared machine included)."""

    def median(key: str, scale: float) -> float | None:
        values = [r[key] for r in rounds]
        return None if any(v is None for v in values) else round(percentile([v or 0 for v in values], 50) * scale, 3)

    return {
        "python_ms_per_task": median("python_cpu_s", 1000 / n),
        "db_ms_per_task": median("db_cpu_s", 1000 / n),
        "machine_busy_pct": median("machine_busy", 100),
    }


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def _round_trips_with_relay(url: str, n: int) -> float | None:
    """The executor with EVENT_BUS_NAME set, as deployed: after each batch the inline relay publishes the events
    it wrote (to moto's EventBridge here)."""
    with moto_server() as endpoint:
        env = function_env(url, WORK_QUEUE_URL="http://127.0.0.1:9/unused", AWS_ENDPOINT_URL=endpoint)
        env["EVENT_BUS_NAME"] = "default"
        one = Executors(env, 1)
        try:
            ids = queued_tasks(url, n)
            _, reports = one.drain(ids, "count")
        finally:
            one.stop()
    trips = reports[0]["round_trips"]
    return round(trips / n, 2) if trips is not None else None


def run(config: dict[str, Any]) -> dict[str, Any]:
    url, n, concurrency, rounds = config["database_url"], config["n"], config["concurrency"], config["rounds"]
    migrate_database(url)
    peer = Procrastinate(url, concurrency)
    # No AWS call happens on this path (every task succeeds); the queue URL is only required by the settings.
    ours = Executors(function_env(url, WORK_QUEUE_URL="http://127.0.0.1:9/unused"), concurrency)
    throughput: dict[str, list[float]] = {"ours": [], "baseline": []}
    cpu: dict[str, list[dict[str, float | None]]] = {"ours": [], "baseline": []}
    try:
        ours.drain(queued_tasks(url, config["warmup"] * concurrency))  # every environment warm, as Lambda's are
        ours.meter = CpuMeter(backend_pids(url, "aitasks"))
        for r in range(rounds):
            for side in ("ours", "baseline")[:: 1 if r % 2 == 0 else -1]:
                empty(url)
                if side == "ours":
                    ids = queued_tasks(url, n)
                    elapsed, reports = ours.drain(ids)
                    ok = succeeded(url, ids)
                    if ok != n or any(r["failed"] for r in reports):
                        raise RuntimeError(f"executor: {ok} of {n} succeeded; reports {reports}")
                else:
                    elapsed = peer.drain(n)
                    if peer.succeeded != n:
                        raise RuntimeError(f"procrastinate: {peer.succeeded} of {n} succeeded")
                throughput[side].append(n / elapsed)
                cpu[side].append((ours if side == "ours" else peer).cpu)
        count_n = max(concurrency * BATCH_SIZE, min(n, 500))
        ids = queued_tasks(url, count_n)
        _, reports = ours.drain(ids, "count")
        trips = sum(r["round_trips"] for r in reports) / count_n
    finally:
        peaks = ours.stop()
    with_relay = _round_trips_with_relay(url, config["relay_n"]) if config["relay_n"] else None
    result: dict[str, Any] = {
        "n": n,
        "concurrency": concurrency,
        "rounds": rounds,
        "batch_size": BATCH_SIZE,
        "ours": {"name": "executor handler", "throughput": rates(throughput["ours"]), "cpu": _cpu(cpu["ours"], n)},
        "baseline": {
            "name": f"Procrastinate {peer.version} (no-op job)",
            "throughput": rates(throughput["baseline"]),
            "cpu": _cpu(cpu["baseline"], n),
        },
        "round_trips_per_task": round(trips, 2),
        "round_trips_per_task_with_relay": with_relay,
        "peak_rss_mb": max(peaks),
        "peak_rss_mb_each": peaks,
    }
    result["ratio"] = round(
        result["ours"]["throughput"]["median_per_s"] / result["baseline"]["throughput"]["median_per_s"], 3
    )
    return result


if __name__ == "__main__":
    scenario_main(run)
