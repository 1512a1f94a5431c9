"""Tenant tiers as API Gateway usage plans: one API key per tenant, in the usage plan of its tier.

The API's key source is AUTHORIZER: clients never send this key; the authorizer returns its value as
usageIdentifierKey, and API Gateway applies that plan's throttle and quota.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aitasks.application.ports import UsageKeyNotFoundError, UsagePlanConflictError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from aitasks.domain.task import TenantId
    from aitasks.domain.tenant import Tier


class ApiGatewayUsagePlans:
    def __init__(self, stack_name: str, plan_ids: Mapping[Tier, str], client: Any = None) -> None:
        self._stack_name = stack_name
        self._plan_ids = dict(plan_ids)
        if client is None:
            import boto3

            client = boto3.client("apigateway")
        self._client = client

    def create_key(self, tenant_id: TenantId) -> tuple[str, str]:
        key = self._client.create_api_key(
            name=f"{self._stack_name}-tenant-{tenant_id}",
            description=f"usage plan key of tenant {tenant_id} (returned by the authorizer; clients never see it)",
            enabled=True,
            tags={"aitasks:tenant": tenant_id},
        )
        return str(key["id"]), str(key["value"])

    def attach(self, key_id: str, tier: Tier) -> None:
        try:
            self._client.get_api_key(apiKey=key_id)
        except self._client.exceptions.NotFoundException as exc:
            raise UsageKeyNotFoundError(key_id) from exc
        for other, plan_id in self._plan_ids.items():
            if other != tier and self._holds(plan_id, key_id):
                self._client.delete_usage_plan_key(usagePlanId=plan_id, keyId=key_id)
        plan_id = self._plan_ids[tier]
        if self._holds(plan_id, key_id):
            return
        try:
            self._client.create_usage_plan_key(usagePlanId=plan_id, keyId=key_id, keyType="API_KEY")
        except self._client.exceptions.ConflictException:
            # A concurrent attach put it in this plan (fine), or another plan of the stage holds it.
            if not self._holds(plan_id, key_id):
                raise UsagePlanConflictError(
                    f"key {key_id} went into another tier's plan meanwhile; run it again"
                ) from None

    def _holds(self, plan_id: str, key_id: str) -> bool:
        try:
            self._client.get_usage_plan_key(usagePlanId=plan_id, keyId=key_id)
        except self._client.exceptions.NotFoundException:
            return False
        return True


def plan_ids_from_outputs(outputs: Mapping[str, str]) -> dict[Tier, str]:
    """The usage plan of each tier, from the stack's outputs (`<Tier>UsagePlanId`)."""
    from aitasks.domain.tenant import Tier

    return {tier: outputs[f"{tier.value.capitalize()}UsagePlanId"] for tier in Tier}


def stack_outputs(stack_name: str, client: Any = None) -> dict[str, str]:
    if client is None:
        import boto3

        client = boto3.client("cloudformation")
    stack = client.describe_stacks(StackName=stack_name)["Stacks"][0]
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
