"""Scenario 4, cold start: each function module imported and initialised in a fresh interpreter (the module, then
what its first request builds: the database connection and its AWS clients), against a floor of `import boto3,
psycopg` plus one client and one connection. Fresh interpreters alternate between the functions and the floor."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from bench.harness import PYTHON, ROOT, function_env, migrate_database, percentile, scenario_main

# What each function's first request builds, beyond the module (bootstrap's cached builders).
INIT = {
    "create_task": "bootstrap.connection()(); bootstrap.work_queue(); bootstrap.model_catalog()",
    "query_tasks": "bootstrap.connection()()",
    "cancel_task": "bootstrap.connection()(); bootstrap.work_queue()",
    "authorizer": "bootstrap.connection()()",
    "executor": "bootstrap.connection()(); bootstrap.work_queue(); bootstrap.ai_provider(); bootstrap.prices(); "
    "bootstrap.event_publisher()",
    "dlq_handler": "bootstrap.connection()(); bootstrap.event_publisher()",
    "outbox_relay": "bootstrap.connection()(); bootstrap.event_publisher()",
    "sweeper": "bootstrap.connection()(); bootstrap.work_queue(); bootstrap.event_publisher()",
}
API = ("create_task", "query_tasks", "cancel_task", "authorizer")
TARGETS = {**dict.fromkeys(API, 1.5), "executor": 2.0}

_FUNCTION = """
import time
t0, c0 = time.perf_counter(), time.process_time()
import importlib.util, sys
spec = importlib.util.spec_from_file_location("app", "functions/{name}/app.py")
module = importlib.util.module_from_spec(spec)
sys.modules["app"] = module
spec.loader.exec_module(module)
t1 = time.perf_counter()
from aitasks import bootstrap
{init}
t2 = time.perf_counter()
"""
_FLOOR = """
import time
t0, c0 = time.perf_counter(), time.process_time()
import boto3, psycopg
t1 = time.perf_counter()
boto3.client("sqs")
psycopg.connect({url!r}).close()
t2 = time.perf_counter()
"""
_XRAY = """
import boto3, time
t0, c0 = time.perf_counter(), time.process_time()
import aws_xray_sdk.core
t1 = t2 = time.perf_counter()
"""
_REPORT = """
import json
heavy = [m for m in ("openai", "boto3", "jsonschema", "aws_xray_sdk.core", "httpx") if m in sys.modules]
print(json.dumps({"import_ms": (t1 - t0) * 1000, "total_ms": (t2 - t0) * 1000, "modules": len(sys.modules),
                  "cpu_ms": (time.process_time() - c0) * 1000, "heavy": heavy}))
"""


def _once(code: str, env: dict[str, str]) -> dict[str, Any]:
    out = subprocess.run(
        [PYTHON, "-c", code + ("import sys\n" if "import sys" not in code else "") + _REPORT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def run(config: dict[str, Any]) -> dict[str, Any]:
    url = config["database_url"]
    migrate_database(url)  # the model prices a create reads on its first request
    env = function_env(url, WORK_QUEUE_URL="http://127.0.0.1:9/unused", EVENT_BUS_NAME="aitasks")
    env["PATH"] = "/usr/bin:/bin"  # no more than the functions' own environment, as in Lambda
    codes = {"floor": _FLOOR.format(url=url), "X-Ray SDK": _XRAY}
    codes.update({name: _FUNCTION.format(name=name, init=INIT[name]) for name in config["functions"]})
    for code in codes.values() if config["warmup"] else ():  # .pyc files and a warm page cache for every counted run
        _once(code, env)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in codes}
    for _ in range(config["repeat"]):
        for name, code in codes.items():
            runs[name].append(_once(code, env))
    floor = percentile([r["total_ms"] for r in runs["floor"]], 50)
    floor_cpu = percentile([r["cpu_ms"] for r in runs["floor"]], 50)
    result: dict[str, Any] = {"repeat": config["repeat"], "floor_ms": round(floor, 1), "functions": {}}
    for name, samples in runs.items():
        total = percentile([r["total_ms"] for r in samples], 50)
        cpu = percentile([r["cpu_ms"] for r in samples], 50)
        entry = {
            "median_ms": round(total, 1),
            "cpu_median_ms": round(cpu, 1),
            "cpu_ratio": round(cpu / floor_cpu, 3),
            "import_median_ms": round(percentile([r["import_ms"] for r in samples], 50), 1),
            "ratio": round(total / floor, 3),
            "modules": samples[-1]["modules"],
            "heavy_modules": samples[-1]["heavy"],
        }
        if name in TARGETS:
            entry["target"] = TARGETS[name]
        if name == "floor":
            result["floor"] = entry
        elif name == "X-Ray SDK":
            result["xray_sdk_ms"] = entry["median_ms"]
        else:
            result["functions"][name] = entry
    return result


if __name__ == "__main__":
    scenario_main(run)
