"""Scenario 6, memory: the peak RSS of one API invocation (create_task, query_tasks) in a fresh interpreter, as a
new Lambda environment serves its first request. The executor's peak over scenario 2 comes from that scenario."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from bench.harness import PYTHON, ROOT, function_env, migrate_database, moto_server, scenario_main, sqs_client

_INVOKE = """
import importlib.util, json, resource, sys
sys.stdout = open("/dev/null", "w")  # the handler's logs and metrics
spec = importlib.util.spec_from_file_location("app", f"functions/{sys.argv[1]}/app.py")
module = importlib.util.module_from_spec(spec)
sys.modules["app"] = module
spec.loader.exec_module(module)
event = json.load(open(sys.argv[2]))

class Context:
    function_name = sys.argv[1]
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:000000000000:function:" + sys.argv[1]
    aws_request_id = "bench"
    log_stream_name = "bench"

    def get_remaining_time_in_millis(self):
        return 10_000

status = module.lambda_handler(event, Context())["statusCode"]
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
sys.stderr.write(json.dumps({"status": status, "peak_rss_mb": peak_mb}))
"""

# Lambda's own runtime (its bootstrap and the runtime interface client) lives in the same process as the handler;
# what it adds beyond a bare interpreter is small, and the headroom below covers it.
HEADROOM = 1.5


def memory_size(peak_mb: float) -> int:
    """The smallest MemorySize (a multiple of 64 MB, at least 128) that leaves HEADROOM over the peak."""
    need = peak_mb * HEADROOM
    return max(128, -(-int(need) // 64) * 64)


def _events(task_id: str) -> dict[str, dict[str, Any]]:
    from tests.conftest import rest_event

    body = {"type": "chat", "payload": {"prompt": "How much memory does one request take?"}}
    get = rest_event("GET", f"/api/v1/tasks/{task_id}", tenant="bench")
    return {
        "create_task": rest_event(
            "POST", "/api/v1/tasks", body=body, tenant="bench", headers={"Idempotency-Key": "memory"}
        ),
        "query_tasks": get,
    }


def _one(function: str, event_file: Path, env: dict[str, str]) -> dict[str, Any]:
    out = subprocess.run(
        [PYTHON, "-c", _INVOKE, function, str(event_file)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(out.stderr.strip().splitlines()[-1]))


def run(config: dict[str, Any]) -> dict[str, Any]:
    import psycopg

    url = config["database_url"]
    migrate_database(url)
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO tasks (id, tenant_id, type, status, payload, available_at, created_at, updated_at)"
            " VALUES (gen_random_uuid(), 'bench', 'chat', 'succeeded', '{\"prompt\": \"p\"}', now(), now(), now())"
            " RETURNING id"
        ).fetchone()
        assert row is not None
        task_id = str(row[0])
    result: dict[str, Any] = {"runs": config["runs"], "headroom": HEADROOM, "functions": {}}
    with moto_server() as endpoint, tempfile.TemporaryDirectory(prefix="aitasks-bench-") as tmp:
        queue_url = sqs_client(endpoint).create_queue(QueueName="work")["QueueUrl"]
        env = {**os.environ, **function_env(url, AWS_ENDPOINT_URL=endpoint, WORK_QUEUE_URL=queue_url)}
        for function, event in _events(task_id).items():
            path = Path(tmp) / f"{function}.json"
            peaks = []
            for i in range(config["runs"]):
                if function == "create_task":
                    event["headers"]["Idempotency-Key"] = f"memory-{i}"
                path.write_text(json.dumps(event))
                one = _one(function, path, env)
                if one["status"] not in (200, 202):
                    raise RuntimeError(f"{function} answered {one['status']}")
                peaks.append(one["peak_rss_mb"])
            peak = max(peaks)
            result["functions"][function] = {
                "peak_rss_mb": round(peak, 1),
                "memory_size_mb": memory_size(peak),
            }
    return result


if __name__ == "__main__":
    scenario_main(run)
