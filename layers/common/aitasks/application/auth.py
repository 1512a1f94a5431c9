"""Authentication: an API key maps to its tenant; keys are created and revoked by operators."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from aitasks.application.tasks import utc_now
from aitasks.domain.apikey import bearer_token, hash_api_key, new_api_key
from aitasks.domain.errors import UnauthorizedError

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime
    from uuid import UUID

    from aitasks.application.ports import ApiKeyRepository
    from aitasks.domain.task import TenantId


@dataclasses.dataclass(frozen=True, slots=True)
class Authenticate:
    keys: ApiKeyRepository

    def __call__(self, authorization: str | None) -> TenantId:
        token = bearer_token(authorization)
        tenant = self.keys.tenant_for(hash_api_key(token)) if token else None
        if tenant is None:
            raise UnauthorizedError("a valid API key is required")
        return tenant


@dataclasses.dataclass(frozen=True, slots=True)
class CreateApiKey:
    keys: ApiKeyRepository
    clock: Callable[[], datetime] = utc_now

    def __call__(self, tenant_id: TenantId, name: str) -> tuple[UUID, str]:
        """A new key for the tenant: its id, and the key itself (shown once, never stored)."""
        key = new_api_key()
        return self.keys.add(tenant_id=tenant_id, name=name, key_hash=hash_api_key(key), now=self.clock()), key
