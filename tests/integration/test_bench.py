"""`make bench` runs: every scenario but the local stack's, with tiny sizes, against the test server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_every_scenario_runs_and_the_report_has_its_section(server_url: str, tmp_path: Path) -> None:
    results, report = tmp_path / "results.json", tmp_path / "benchmarks.md"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--results", str(results), "--report", str(report)],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": server_url},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr + results.with_suffix(".log").read_text()
    scenarios = json.loads(results.read_text())["scenarios"]
    assert set(scenarios) == {"create", "execute", "latency", "query", "cold_start", "memory", "scarcity"}
    assert scenarios["execute"]["round_trips_per_task"] <= 1.2
    assert scenarios["latency"]["executor_s_per_task"] < scenarios["latency"]["serial_executor_s_per_task"]
    scarcity = scenarios["scarcity"]
    assert scarcity["errors"] == {}
    # every part measured something (the sizes are too small for the figures to mean anything)
    assert scarcity["tpm"]["whole_run"]["calls"] > 0
    assert scarcity["fairness_jain"] is not None
    assert scarcity["budget_max_fraction"] <= 1  # spend never exceeds the budget, whatever the size
    assert scarcity["claim"]["claims"] > 0
    text = report.read_text()
    for title in ("Targets", "1. Create", "2. Execute", "2b. Latency (slow model calls)", "3. Query", "4. Cold start",
                  "6. Memory", "7. Scarcity (flow control)"):  # fmt: skip
        assert f"\n## {title}\n" in text
