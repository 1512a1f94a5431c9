"""Tenant tiers on the local stack: `aitasks tenants set-tier` moves the tenant's API Gateway key between the
deployed usage plans (MiniStack), and the tenant keeps working."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import requests

from aitasks.adapters.postgres import ConnectionProvider, PostgresTenantRepository
from aitasks.adapters.usage_plans import plan_ids_from_outputs, stack_outputs
from aitasks.application.ports import TenantPlan
from aitasks.domain.tenant import Tier
from aitasks_cli.local_stack import REGION, STACK, TENANT, aws_client
from tests.e2e.conftest import ENDPOINT, LOCAL, ROOT, Stack

AWS = {"AWS_ENDPOINT_URL": ENDPOINT, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}


def tiers_holding(key_id: str) -> set[Tier]:
    apigw = aws_client("apigateway", ENDPOINT)
    plans = plan_ids_from_outputs(stack_outputs(STACK, aws_client("cloudformation", ENDPOINT)))
    return {
        tier
        for tier, plan_id in plans.items()
        if key_id in {k["id"] for k in apigw.get_usage_plan_keys(usagePlanId=plan_id)["items"]}
    }


def set_tier(tier: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **AWS, "AWS_DEFAULT_REGION": REGION}
    env.pop("DATABASE_URL", None)  # the CLI falls back to .local/database_url, the stack's database
    return subprocess.run(
        [str(Path(sys.executable).with_name("aitasks")), "tenants", "set-tier", TENANT, tier, "--stack", STACK],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_the_local_tenant_moves_between_the_deployed_usage_plans(stack: Stack) -> None:
    provider = ConnectionProvider(lambda: (LOCAL / "database_url").read_text().strip())
    tenants = PostgresTenantRepository(provider)
    start = tenants.get(TENANT)
    assert start is not None  # `local up` attached it
    try:
        assert tiers_holding(start.usage_key_id) == {start.tier}

        moved = set_tier("pro")
        assert moved.returncode == 0, moved.stderr
        assert tiers_holding(start.usage_key_id) == {Tier.PRO}
        assert tenants.get(TENANT) == TenantPlan(TENANT, Tier.PRO, start.usage_key_id, start.usage_key)
        assert requests.get(f"{stack.url}/tasks", headers=stack.headers(), timeout=10).status_code == 200
    finally:
        back = set_tier(start.tier.value)
        provider.close()
    assert back.returncode == 0, back.stderr
