"""Scenario latency: N tasks whose model takes `latency_ms` each (the fake provider's scripted latency), due at
once, drained through the executor handler by `concurrency` warm Lambda environments fed SQS batches of 10 - as a
backlog reaches the executors. Real AI work is slow; this measures whether the executor keeps its environments'
calls going at once.

Against the physical bound of the same setup: `concurrency` environments x 10 calls at a time / latency
(40 tasks/s for 8 environments and 2 s). Also executor-seconds per task: the environments' time inside the handler
(what Lambda bills) over N; run serially a task costs its whole latency."""

from __future__ import annotations

from typing import Any

from bench.execute import BATCH_SIZE, Executors, queued_tasks, succeeded
from bench.harness import function_env, migrate_database, scenario_main


def _empty(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE tasks, task_attempts, task_artifacts, outbox_messages CASCADE")


def run(config: dict[str, Any]) -> dict[str, Any]:
    url, n, concurrency, latency_ms = config["database_url"], config["n"], config["concurrency"], config["latency_ms"]
    migrate_database(url)
    executors = Executors(function_env(url, WORK_QUEUE_URL="http://127.0.0.1:9/unused"), concurrency)
    rounds: list[dict[str, float]] = []
    try:
        executors.drain(queued_tasks(url, concurrency * BATCH_SIZE))  # every environment warm, as Lambda's are
        for _ in range(config["rounds"]):
            _empty(url)
            ids = queued_tasks(url, n, latency_ms=latency_ms)
            elapsed, reports = executors.drain(ids)
            ok = succeeded(url, ids)
            if ok != n or any(r["failed"] for r in reports):
                raise RuntimeError(f"executor: {ok} of {n} succeeded; reports {reports}")
            rounds.append({"seconds": elapsed, "busy_s": sum(r["busy_s"] for r in reports)})
    finally:
        executors.stop()
    bound = concurrency * BATCH_SIZE / (latency_ms / 1000)
    throughputs = sorted(n / r["seconds"] for r in rounds)
    median = throughputs[len(throughputs) // 2]
    per_task = sorted(r["busy_s"] / n for r in rounds)[len(rounds) // 2]
    return {
        "n": n,
        "concurrency": concurrency,
        "batch_size": BATCH_SIZE,
        "latency_ms": latency_ms,
        "rounds": [{k: round(v, 2) for k, v in r.items()} for r in rounds],
        "throughput_per_s": round(median, 1),
        "bound_per_s": round(bound, 1),
        "ratio": round(median / bound, 3),
        "executor_s_per_task": round(per_task, 3),
        "serial_executor_s_per_task": latency_ms / 1000,
    }


if __name__ == "__main__":
    scenario_main(run)
