"""What a function loads when Lambda imports it: nothing its requests may not need (docs/benchmarks.md, scenario 4,
measures what the rest costs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from aws_lambda_powertools import Tracer

from aitasks import bootstrap
from aitasks.adapters.tracing import NoTracing
from aitasks.settings import Settings, get_settings

ROOT = Path(__file__).parents[2]
FUNCTIONS = sorted(p.parent.name for p in (ROOT / "functions").glob("*/app.py"))
HEAVY = ("aws_xray_sdk.core", "boto3", "jsonschema", "openai", "psycopg", "pydantic_settings")

_PROBE = """
import importlib.util, json, sys
for name in sys.argv[2:]:
    spec = importlib.util.spec_from_file_location("app_" + name, "functions/" + name + "/app.py")
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
print(json.dumps([m for m in json.loads(sys.argv[1]) if m in sys.modules]))
"""


def loaded_by(*functions: str) -> list[str]:
    """The heavy modules a fresh interpreter holds after importing these function modules."""
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "LAMBDA_TASK_ROOT"}}
    env["POWERTOOLS_TRACE_DISABLED"] = "true"
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(HEAVY), *functions],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return list(json.loads(out.stdout.splitlines()[-1]))


def test_importing_a_function_loads_no_sdk_no_schema_validator_and_no_database_driver() -> None:
    # The X-Ray SDK (tracing off), boto3 and psycopg (built on first use), jsonschema (only extract tasks), the
    # OpenAI SDK (only its provider): none of them at import.
    assert loaded_by(*FUNCTIONS) == []


def test_settings_come_from_the_environment_by_lower_cased_name(monkeypatch) -> None:
    monkeypatch.setenv("LEASE_SECONDS", "200")
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "false")
    monkeypatch.setenv("LAMBDA_TASK_ROOT", "/var/task")
    get_settings.cache_clear()
    try:
        settings = get_settings()
        assert (settings.lease_seconds, settings.tracing) == (200, True)
    finally:
        get_settings.cache_clear()


def test_tracing_runs_only_in_lambda_and_when_not_turned_off() -> None:
    assert Settings(lambda_task_root="/var/task", powertools_trace_disabled=False).tracing
    assert not Settings(lambda_task_root="/var/task", powertools_trace_disabled=True).tracing
    assert not Settings(lambda_task_root=None, powertools_trace_disabled=False).tracing


def test_a_tracer_that_is_off_records_nothing_and_one_that_is_on_uses_x_ray(monkeypatch) -> None:
    Tracer._reset_config()  # Powertools shares one provider between all Tracers of a process
    try:
        off = bootstrap.tracer()
        assert (off.disabled, type(off.provider)) == (True, NoTracing)
        Tracer._reset_config()
        on = Settings(lambda_task_root="/var/task", powertools_trace_disabled=False)
        monkeypatch.setattr(bootstrap, "get_settings", lambda: on)
        assert type(bootstrap.tracer().provider).__module__.startswith("aws_xray_sdk")
    finally:
        Tracer._reset_config()
