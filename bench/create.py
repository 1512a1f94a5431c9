"""Scenario 1, create: the create_task handler with real REST events (validation, Idempotency-Key, the task and
its outbox rows, the SQS wake-up to a moto server), one request after another, against plain psycopg doing the same
writes in one transaction on one connection followed by the same boto3 send to the same moto server."""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.harness import (
    function_env,
    latency,
    migrate_database,
    moto_server,
    quiet_stdout,
    rates,
    round_trips,
    scenario_main,
    sqs_client,
)

TENANTS = 10


def body(i: int) -> dict[str, Any]:
    return {
        "type": "chat",
        "priority": 5,
        "payload": {"prompt": f"Summarise the meeting notes in three bullets ({i})", "params": {"temperature": 0}},
    }


class Ours:
    """The real handler, in-process, as one warm Lambda environment."""

    name = "create_task handler"

    def __init__(self) -> None:
        from tests.conftest import LambdaContext, load_handler, rest_event

        self._handler = load_handler("create_task")
        self._context = LambdaContext(function_name="create_task")
        self._event = rest_event
        self._i = 0

    def prepare(self, n: int) -> list[dict[str, Any]]:
        events = []
        for _ in range(n):
            self._i += 1
            headers = {"Idempotency-Key": str(uuid.uuid4())}
            tenant = f"t{self._i % TENANTS}"
            events.append(self._event("POST", "/api/v1/tasks", body=body(self._i), tenant=tenant, headers=headers))
        return events

    def __call__(self, event: dict[str, Any]) -> None:
        response = self._handler.lambda_handler(event, self._context)
        if response["statusCode"] != 202:
            raise RuntimeError(f"create_task answered {response['statusCode']}: {response['body']}")

    def connection(self) -> Any:
        from aitasks import bootstrap

        return bootstrap.connection()()


_IDEMPOTENCY = """INSERT INTO idempotency_records (id, status, expires_at, in_progress_expires_at, payload_hash)
VALUES (%(key)s, 'INPROGRESS', %(expires)s, %(in_progress)s, %(hash)s)"""
_TASK = """INSERT INTO tasks (id, tenant_id, type, priority, status, payload, idempotency_key, available_at,
                   max_attempts, attempt_count, created_at, updated_at, dispatched_at)
VALUES (%(id)s, %(tenant)s, %(type)s, %(priority)s, 'queued', %(payload)s, %(ikey)s, %(now)s, 3, 0, %(now)s, %(now)s,
        %(now)s)"""
_OUTBOX = """INSERT INTO outbox_messages (id, task_id, tenant_id, event_type, payload, occurred_at)
VALUES (%(e1)s, %(id)s, %(tenant)s, 'task.created', %(p1)s, %(now)s),
       (%(e2)s, %(id)s, %(tenant)s, 'task.queued', %(p2)s, %(now)s)"""
_COMPLETE = """UPDATE idempotency_records SET status = 'COMPLETED', response_data = %(response)s
WHERE id = %(key)s"""


class Baseline:
    """Plain psycopg: the same rows in one transaction on one connection, then the same boto3 send."""

    name = "plain psycopg + boto3"

    def __init__(self, database_url: str, queue_url: str, endpoint: str) -> None:
        import psycopg

        self._conn = psycopg.connect(database_url, autocommit=True)
        self._sqs = sqs_client(endpoint)
        self._queue_url = queue_url
        self._i = 0

    def prepare(self, n: int) -> list[dict[str, Any]]:
        items = []
        for _ in range(n):
            self._i += 1
            items.append({"body": body(self._i), "tenant": f"b{self._i % TENANTS}", "key": str(uuid.uuid4())})
        return items

    def __call__(self, item: dict[str, Any]) -> None:
        from psycopg.types.json import Jsonb

        now = datetime.now(UTC)
        task_id = uuid.uuid4()
        raw = json.dumps(item["body"])
        params = {
            "key": f"create_task#{hashlib.sha256((item['tenant'] + item['key']).encode()).hexdigest()}",
            "expires": int((now + timedelta(days=1)).timestamp()),
            "in_progress": int(now.timestamp() * 1000) + 30_000,
            "hash": hashlib.sha256(raw.encode()).hexdigest(),
            "id": task_id,
            "tenant": item["tenant"],
            "type": item["body"]["type"],
            "priority": item["body"]["priority"],
            "payload": Jsonb(item["body"]["payload"]),
            "ikey": item["key"],
            "now": now,
            "e1": uuid.uuid4(),
            "e2": uuid.uuid4(),
            "p1": Jsonb({"type": "chat", "status": "created", "attemptNo": 0}),
            "p2": Jsonb({"type": "chat", "status": "queued", "attemptNo": 0}),
            "response": json.dumps({"id": str(task_id), "status": "queued", **item["body"]}),
        }
        with self._conn.transaction():
            self._conn.execute(_IDEMPOTENCY, params)
            self._conn.execute(_TASK, params)
            self._conn.execute(_OUTBOX, params)
            self._conn.execute(_COMPLETE, params)
        self._sqs.send_message(
            QueueUrl=self._queue_url, MessageBody=json.dumps({"taskId": str(task_id), "attempt": 1}), DelaySeconds=0
        )

    def connection(self) -> Any:
        return self._conn


def _timed(side: Ours | Baseline, n: int) -> tuple[list[float], float]:
    """n requests one after another: each one's latency, and the requests per second of the whole run."""
    items = side.prepare(n)
    samples = []
    started = time.perf_counter()
    for item in items:
        t0 = time.perf_counter()
        side(item)  # type: ignore[arg-type]
        samples.append(time.perf_counter() - t0)
    return samples, n / (time.perf_counter() - started)


def _round_trips(side: Ours | Baseline, n: int) -> float:
    items = side.prepare(n)
    with round_trips(side.connection()) as counted:
        for item in items:
            side(item)  # type: ignore[arg-type]
    return counted[0] / n


def _area(path: str) -> str:
    """Which part of the stack a frame's own time belongs to."""
    for marker, area in (
        ("/botocore/", "SQS send (boto3 to moto, HTTP)"),
        ("/urllib3/", "SQS send (boto3 to moto, HTTP)"),
        ("/psycopg/", "database (psycopg: statements and their round trips)"),
        ("/aws_lambda_powertools/", "Powertools (resolver, validation, idempotency, logger, metrics)"),
        ("/pydantic", "pydantic (request and response models)"),
        ("/aitasks/", "aitasks (use case, adapters, models)"),
        ("/functions/", "aitasks (use case, adapters, models)"),
    ):
        if marker in path:
            return area
    return "Python standard library and others"


def _profile(ours: Ours, n: int) -> dict[str, Any]:
    """A sampling profile (pyinstrument) of n requests: each frame's own time by area, and the call tree."""
    from pyinstrument import Profiler
    from pyinstrument.renderers import ConsoleRenderer

    events = ours.prepare(n)
    profiler = Profiler(interval=0.0002)
    profiler.start()
    for event in events:
        ours(event)
    session = profiler.stop()
    root = session.root_frame()
    parts: dict[str, float] = {}

    def walk(frame: Any, inherited: str | None) -> None:
        path = frame.file_path or ""
        # A frame inside an SQS call or a statement belongs to it, wherever its own code lives.
        area = inherited or (_area(path) if ("/botocore/" in path or "/psycopg/" in path) else None)
        own = area or _area(path)
        parts[own] = parts.get(own, 0.0) + frame.total_self_time
        for child in frame.children:
            if not child.is_synthetic:
                walk(child, area)

    if root is not None:
        walk(root, None)
    total = sum(parts.values())
    tree = profiler.output(
        ConsoleRenderer(unicode=False, color=False, show_all=False, processor_options={"filter_threshold": 0.02})
    )
    return {
        "requests": n,
        "per_request_ms": round(total / n * 1000, 3),
        "parts_ms": {k: round(v / n * 1000, 3) for k, v in sorted(parts.items(), key=lambda kv: -kv[1])},
        "tree": tree.split("\n", 4)[-1].rstrip(),  # without pyinstrument's banner
    }


def run(config: dict[str, Any]) -> dict[str, Any]:
    url = config["database_url"]
    rounds, per_round = config["rounds"], config["per_round"]
    migrate_database(url)
    with moto_server() as endpoint:
        sqs = sqs_client(endpoint)
        queue_url = sqs.create_queue(QueueName="work")["QueueUrl"]
        os.environ.update(function_env(url, AWS_ENDPOINT_URL=endpoint, WORK_QUEUE_URL=queue_url))
        with quiet_stdout():
            ours, base = Ours(), Baseline(url, queue_url, endpoint)
            for side in (ours, base):
                _timed(side, config["warmup"])
            samples: dict[str, list[float]] = {"ours": [], "baseline": []}
            throughput: dict[str, list[float]] = {"ours": [], "baseline": []}
            for r in range(rounds):
                # ABBA order: drift (a warming cache, a growing table) falls on both sides alike
                for key, side in (("ours", ours), ("baseline", base))[:: 1 if r % 2 == 0 else -1]:
                    sqs.purge_queue(QueueUrl=queue_url)  # moto's sends slow down as its queue grows
                    lat, tps = _timed(side, per_round)  # type: ignore[arg-type]
                    samples[key] += lat
                    throughput[key].append(tps)
            trips = {"ours": _round_trips(ours, 20), "baseline": _round_trips(base, 20)}
            profile = _profile(ours, config["profile_requests"])
    result: dict[str, Any] = {"rounds": rounds, "per_round": per_round}
    for key, side in (("ours", ours), ("baseline", base)):
        result[key] = {
            "name": side.name,
            "latency": latency(samples[key]),
            "throughput": rates(throughput[key]),
            "round_trips_per_request": trips[key],
        }
    ours_tps, base_tps = result["ours"]["throughput"]["median_per_s"], result["baseline"]["throughput"]["median_per_s"]
    result["ratio"] = round(ours_tps / base_tps, 3)
    result["profile"] = profile
    return result


if __name__ == "__main__":
    scenario_main(run)
