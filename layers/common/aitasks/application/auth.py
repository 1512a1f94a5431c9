"""Authentication and tenants: an API key maps to its tenant; operators create and revoke keys and set tiers."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from aitasks.application.ports import TenantPlan, UsageKeyNotFoundError
from aitasks.application.tasks import utc_now
from aitasks.domain.apikey import bearer_token, hash_api_key, new_api_key
from aitasks.domain.errors import UnauthorizedError

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime
    from uuid import UUID

    from aitasks.application.ports import ApiKeyRepository, Principal, TenantRepository, UsagePlans
    from aitasks.domain.task import TenantId
    from aitasks.domain.tenant import Tier


@dataclasses.dataclass(frozen=True, slots=True)
class Authenticate:
    keys: ApiKeyRepository

    def __call__(self, authorization: str | None) -> Principal:
        token = bearer_token(authorization)
        principal = self.keys.principal_for(hash_api_key(token)) if token else None
        if principal is None:
            raise UnauthorizedError("a valid API key is required")
        return principal


@dataclasses.dataclass(frozen=True, slots=True)
class CreateApiKey:
    keys: ApiKeyRepository
    clock: Callable[[], datetime] = utc_now

    def __call__(self, tenant_id: TenantId, name: str) -> tuple[UUID, str]:
        """A new key for the tenant: its id, and the key itself (shown once, never stored)."""
        key = new_api_key()
        return self.keys.add(tenant_id=tenant_id, name=name, key_hash=hash_api_key(key), now=self.clock()), key


@dataclasses.dataclass(frozen=True, slots=True)
class SetTier:
    """Attach a tenant to a tier's usage plan: one API Gateway API key per tenant, moved between the plans.

    The usage plan changes before the tenant's row; a failure in between is mended by running it again. The key
    is created once and reused, unless API Gateway no longer has it.
    """

    tenants: TenantRepository
    plans: UsagePlans
    clock: Callable[[], datetime] = utc_now

    def __call__(self, tenant_id: TenantId, tier: Tier) -> TenantPlan:
        current = self.tenants.get(tenant_id)
        key_id, key = (current.usage_key_id, current.usage_key) if current else self.plans.create_key(tenant_id)
        try:
            self.plans.attach(key_id, tier)
        except UsageKeyNotFoundError:
            # The key is gone from API Gateway (deleted, or a new stack): the tenant gets a new one.
            key_id, key = self.plans.create_key(tenant_id)
            self.plans.attach(key_id, tier)
        plan = TenantPlan(tenant_id=tenant_id, tier=tier, usage_key_id=key_id, usage_key=key)
        self.tenants.save(plan, now=self.clock())
        return plan
