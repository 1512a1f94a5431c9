"""Scenario 3, query: the query_tasks handler (in-process, real REST events) on a table of `tasks` tasks across
`tenants` tenants: one task, the first page, page 500, and pages filtered by status, each with X-Total-Count;
against the same SQL sent by plain psycopg on one connection. The EXPLAIN (ANALYZE) plan of every statement goes
in the report, and none may scan the tasks table sequentially."""

from __future__ import annotations

import os
import random
import time
from typing import TYPE_CHECKING, Any

from bench.harness import function_env, latency, migrate_database, quiet_stdout, scenario_main

if TYPE_CHECKING:
    from collections.abc import Callable

# A tenant's tasks, newest first, 2 s apart; 80 % succeeded, the rest spread over the other states.
_FILL = """
INSERT INTO tasks (id, tenant_id, type, priority, status, payload, available_at, locked_by, locked_until,
                   max_attempts, attempt_count, last_error, created_at, updated_at, tokens_in, tokens_out, cost)
SELECT gen_random_uuid(), 'tenant-' || lpad((i %% %(tenants)s)::text, 3, '0'),
       (ARRAY['chat', 'summarize', 'extract'])[1 + (i / 7) %% 3], 5, s.status,
       jsonb_build_object('prompt', 'Question number ' || i, 'params', jsonb_build_object('temperature', 0)),
       c.at, CASE WHEN s.status = 'running' THEN 'bench' END,
       CASE WHEN s.status = 'running' THEN now() + interval '150 seconds' END,
       3, CASE WHEN s.status = 'queued' THEN 0 ELSE 1 END,
       CASE WHEN s.status IN ('failed', 'dead_letter') THEN 'rate_limit: slow down' END,
       c.at, c.at + interval '3 seconds', 40, 60, 0.000045
FROM generate_series(%(start)s, %(stop)s - 1) AS i,
     LATERAL (SELECT now() - (%(tasks)s - i) * interval '2 seconds' AS at) AS c,
     LATERAL (SELECT CASE WHEN (i / 11) %% 100 < 80 THEN 'succeeded'
                          WHEN (i / 11) %% 100 < 85 THEN 'queued'
                          WHEN (i / 11) %% 100 < 87 THEN 'running'
                          WHEN (i / 11) %% 100 < 90 THEN 'failed'
                          WHEN (i / 11) %% 100 < 95 THEN 'dead_letter'
                          ELSE 'cancelled' END AS status) AS s
"""

# name -> the request's query string (None: GET one task)
READS: dict[str, dict[str, str] | None] = {
    "get one task": None,
    "list, first page": {},
    "list, page 500": {"page": "500"},
    "list, status=succeeded": {"status": "succeeded"},
    "list, status=failed,dead_letter": {"status": "failed,dead_letter"},
}


def fill(url: str, tasks: int, tenants: int) -> float:
    """Seconds to insert the tasks (in chunks) and VACUUM ANALYZE them."""
    import psycopg

    started = time.monotonic()
    with psycopg.connect(url, autocommit=True) as conn:
        chunk = 100_000
        for start in range(0, tasks, chunk):
            params = {"start": start, "stop": min(tasks, start + chunk), "tasks": tasks, "tenants": tenants}
            conn.execute(_FILL, params)  # type: ignore[arg-type]
        conn.execute("VACUUM (ANALYZE) tasks")
    return time.monotonic() - started


def _sample(url: str, tasks: int, tenants: int, n: int) -> list[tuple[str, str]]:
    """(tenant, task id) pairs of random tasks."""
    import psycopg

    rng = random.Random(7)
    with psycopg.connect(url) as conn:
        pairs = []
        for _ in range(n):
            tenant = f"tenant-{rng.randrange(tenants):03d}"
            row = conn.execute(
                "SELECT id FROM tasks WHERE tenant_id = %s ORDER BY created_at DESC OFFSET %s LIMIT 1",
                [tenant, rng.randrange(min(1000, tasks // tenants))],
            ).fetchone()
            assert row is not None
            pairs.append((tenant, str(row[0])))
        return pairs


def _filters(query: dict[str, str]) -> tuple[list[str], list[str]]:
    from aitasks.domain.task import TaskStatus
    from aitasks.domain.task_types import REGISTRY

    statuses = sorted(query["status"].split(",")) if "status" in query else sorted(s.value for s in TaskStatus)
    return statuses, sorted(REGISTRY)


class Ours:
    name = "query_tasks handler"

    def __init__(self) -> None:
        from tests.conftest import LambdaContext, load_handler, rest_event

        self._handler = load_handler("query_tasks")
        self._context = LambdaContext(function_name="query_tasks")
        self._event = rest_event

    def request(self, read: str, tenant: str, task_id: str) -> Callable[[], None]:
        query = READS[read]
        if query is None:
            event = self._event("GET", f"/api/v1/tasks/{task_id}", tenant=tenant)
        else:
            event = self._event("GET", "/api/v1/tasks", tenant=tenant, query=query or None)
        event["headers"].pop("Content-Type")

        def call() -> None:
            response = self._handler.lambda_handler(event, self._context)
            if response["statusCode"] != 200:
                raise RuntimeError(f"{read}: {response['statusCode']} {response['body']}")
            if (
                query is not None
                and "X-Total-Count" not in (response.get("multiValueHeaders") or {})
                and ("X-Total-Count" not in (response.get("headers") or {}))
            ):
                raise RuntimeError(f"{read}: no X-Total-Count")

        return call


class Baseline:
    name = "the same SQL, plain psycopg"

    def __init__(self, url: str) -> None:
        import psycopg

        from aitasks.adapters.postgres import queries

        self._conn = psycopg.connect(url, autocommit=True)
        self._sql = queries("tasks")

    def request(self, read: str, tenant: str, task_id: str) -> Callable[[], None]:
        return self._statements(read, tenant, task_id, "")

    def explain(self, read: str, tenant: str, task_id: str) -> str:
        plans: list[str] = []
        self._statements(read, tenant, task_id, "EXPLAIN (ANALYZE, BUFFERS) ", plans)()
        return "\n\n".join(plans)

    def _statements(
        self, read: str, tenant: str, task_id: str, prefix: str, out: list[str] | None = None
    ) -> Callable[[], None]:
        query = READS[read]
        if query is None:
            statements = [(self._sql["get_task"], {"tenant_id": tenant, "id": task_id})]
        else:
            statuses, types = _filters(query)
            page = int(query.get("page", "1"))
            params = {"tenant_id": tenant, "statuses": statuses, "types": types, "offset": (page - 1) * 20, "limit": 20}
            statements = [(self._sql["list_tasks"], params), (self._sql["count_tasks"], params)]

        def call() -> None:
            for sql, params in statements:
                rows = self._conn.execute(prefix + sql, params).fetchall()  # type: ignore[operator]
                if out is not None:
                    out.append("\n".join(str(r[0]) for r in rows))

        return call


def run(config: dict[str, Any]) -> dict[str, Any]:
    url, tasks, tenants = config["database_url"], config["tasks"], config["tenants"]
    rounds, per_round = config["rounds"], config["per_round"]
    migrate_database(url)
    fill_s = fill(url, tasks, tenants)
    pairs = _sample(url, tasks, tenants, rounds * per_round + 20)
    os.environ.update(function_env(url))
    result: dict[str, Any] = {"tasks": tasks, "tenants": tenants, "fill_seconds": round(fill_s, 1), "reads": {}}
    with quiet_stdout():
        ours, base = Ours(), Baseline(url)
        for read in READS:
            for side in (ours, base):  # warm: connections, prepared statements
                for tenant, task_id in pairs[:10]:
                    side.request(read, tenant, task_id)()
        samples: dict[str, dict[str, list[float]]] = {read: {"ours": [], "baseline": []} for read in READS}
        for r in range(rounds):
            batch = pairs[10 + r * per_round : 10 + (r + 1) * per_round]
            for read in READS:
                for tenant, task_id in batch:
                    # request by request, in ABBA order: a busy moment of a shared machine falls on both sides
                    for key, side in (("ours", ours), ("baseline", base))[:: 1 if r % 2 == 0 else -1]:
                        call = side.request(read, tenant, task_id)  # type: ignore[attr-defined]
                        t0 = time.perf_counter()
                        call()
                        samples[read][key].append(time.perf_counter() - t0)
        tenant, task_id = pairs[-1]
        for read in READS:
            plan = base.explain(read, tenant, task_id)
            ours_lat, base_lat = latency(samples[read]["ours"]), latency(samples[read]["baseline"])
            result["reads"][read] = {
                "ours": ours_lat,
                "baseline": base_lat,
                "ratio_p95": round(ours_lat["p95_ms"] / base_lat["p95_ms"], 3),
                "plan": plan,
                "seq_scan_on_tasks": "Seq Scan on tasks" in plan,
            }
    result["ours_name"], result["baseline_name"] = Ours.name, Baseline.name
    return result


if __name__ == "__main__":
    scenario_main(run)
