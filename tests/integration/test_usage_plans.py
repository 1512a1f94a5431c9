"""The usage plans adapter against moto's API Gateway: one key per tenant, in exactly its tier's plan. SetTier on
PostgreSQL is in test_tenants.py."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from moto import mock_aws

from aitasks.adapters.usage_plans import ApiGatewayUsagePlans, plan_ids_from_outputs, stack_outputs
from aitasks.application.ports import UsageKeyNotFoundError, UsagePlanConflictError
from aitasks.domain.task import TenantId
from aitasks.domain.tenant import Tier

if TYPE_CHECKING:
    from collections.abc import Iterator

ACME = TenantId("acme")


@pytest.fixture
def apigateway(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, dict[Tier, str]]]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        client = boto3.client("apigateway", region_name="us-east-1")
        plan_ids = {tier: client.create_usage_plan(name=f"aitasks-{tier}")["id"] for tier in Tier}
        yield client, plan_ids


def _plans_holding(client: Any, plan_ids: dict[Tier, str], key_id: str) -> set[Tier]:
    return {
        tier
        for tier, plan_id in plan_ids.items()
        if any(k["id"] == key_id for k in client.get_usage_plan_keys(usagePlanId=plan_id)["items"])
    }


def test_api_gateway_keys_sit_in_exactly_the_tiers_plan(apigateway: tuple[Any, dict[Tier, str]]) -> None:
    client, plan_ids = apigateway
    plans = ApiGatewayUsagePlans("aitasks", plan_ids, client)

    key_id, value = plans.create_key(ACME)
    plans.attach(key_id, Tier.FREE)
    plans.attach(key_id, Tier.FREE)  # again: no error, no second entry
    assert _plans_holding(client, plan_ids, key_id) == {Tier.FREE}
    plans.attach(key_id, Tier.PRO)
    assert _plans_holding(client, plan_ids, key_id) == {Tier.PRO}

    key = client.get_api_key(apiKey=key_id, includeValue=True)
    assert (key["name"], key["value"], key["enabled"]) == ("aitasks-tenant-acme", value, True)


def test_attaching_a_missing_api_gateway_key_says_so(apigateway: tuple[Any, dict[Tier, str]]) -> None:
    client, plan_ids = apigateway
    with pytest.raises(UsageKeyNotFoundError):
        ApiGatewayUsagePlans("aitasks", plan_ids, client).attach("nosuchkey", Tier.FREE)


def test_the_plans_come_from_the_stack_outputs(apigateway: tuple[Any, dict[Tier, str]]) -> None:
    _, plan_ids = apigateway
    cfn = boto3.client("cloudformation", region_name="us-east-1")
    template = {
        "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
        "Outputs": {f"{tier.value.capitalize()}UsagePlanId": {"Value": plan_ids[tier]} for tier in Tier},
    }
    cfn.create_stack(StackName="aitasks", TemplateBody=json.dumps(template))

    assert plan_ids_from_outputs(stack_outputs("aitasks", cfn)) == plan_ids


def test_a_conflicting_attach_is_fine_when_the_key_landed_in_the_plan_and_an_error_otherwise(
    apigateway: tuple[Any, dict[Tier, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, plan_ids = apigateway
    plans = ApiGatewayUsagePlans("aitasks", plan_ids, client)
    key_id, _ = plans.create_key(ACME)
    real_create = client.create_usage_plan_key
    conflict = client.exceptions.ConflictException({"Error": {"Code": "ConflictException"}}, "CreateUsagePlanKey")

    def concurrent_attach_won(**kwargs: Any) -> Any:
        real_create(**kwargs)  # the other attach got there first
        raise conflict

    monkeypatch.setattr(client, "create_usage_plan_key", concurrent_attach_won)
    plans.attach(key_id, Tier.FREE)
    assert _plans_holding(client, plan_ids, key_id) == {Tier.FREE}

    def held_elsewhere(**kwargs: Any) -> Any:
        raise conflict

    monkeypatch.setattr(client, "create_usage_plan_key", held_elsewhere)
    with pytest.raises(UsagePlanConflictError):
        plans.attach(key_id, Tier.PRO)
