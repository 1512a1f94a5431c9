"""Tenants' tiers on a real database (API Gateway's usage plans as a fake): a tenant keeps one usage plan key across
tiers, the tenant row changes only once the key is in its plan, the authorizer's lookup returns the tier's usage plan
key; the CLI's errors."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from aitasks.adapters.postgres import PostgresApiKeyRepository, PostgresTenantRepository
from aitasks.application.auth import Authenticate, CreateApiKey, SetTier
from aitasks.domain.task import TenantId
from aitasks.domain.tenant import Tier
from tests.integration.test_operator_cli import cli
from tests.support.fakes import InMemoryUsagePlans

ACME = TenantId("acme")


def test_a_tenant_gets_one_key_that_moves_between_tiers(db) -> None:
    tenants, plans = PostgresTenantRepository(db), InMemoryUsagePlans()
    set_tier = SetTier(tenants, plans)

    first = set_tier(ACME, Tier.FREE)
    moved = set_tier(ACME, Tier.PRO)

    assert (moved.usage_key_id, moved.usage_key) == (first.usage_key_id, first.usage_key)
    assert plans.keys == {first.usage_key_id: (first.usage_key, {Tier.PRO})}
    assert tenants.get(ACME) == moved


def test_a_key_api_gateway_no_longer_has_is_replaced(db) -> None:
    tenants, plans = PostgresTenantRepository(db), InMemoryUsagePlans()
    old = SetTier(tenants, plans)(ACME, Tier.STANDARD)
    plans.keys.clear()  # a new stack, or the key was deleted

    new = SetTier(tenants, plans)(ACME, Tier.STANDARD)

    assert new.usage_key_id != old.usage_key_id
    assert plans.keys == {new.usage_key_id: (new.usage_key, {Tier.STANDARD})}
    assert tenants.get(ACME) == new


class _FailingPlans(InMemoryUsagePlans):
    def attach(self, key_id: str, tier: Tier) -> None:
        raise RuntimeError("API Gateway is down")


def test_a_failed_attach_leaves_the_tenant_row_as_it_was(db) -> None:
    tenants = PostgresTenantRepository(db)
    before = SetTier(tenants, InMemoryUsagePlans())(ACME, Tier.FREE)

    with pytest.raises(RuntimeError):
        SetTier(tenants, _FailingPlans())(ACME, Tier.PRO)

    assert tenants.get(ACME) == before


def test_a_keys_principal_carries_its_tenants_usage_key_once_attached(db) -> None:
    keys, tenants = PostgresApiKeyRepository(db), PostgresTenantRepository(db)
    _, key = CreateApiKey(keys)(ACME, "k")
    authenticate = Authenticate(keys)
    assert authenticate(f"Bearer {key}").usage_key is None

    plans = InMemoryUsagePlans()
    free = SetTier(tenants, plans)(ACME, Tier.FREE)
    pro = SetTier(tenants, plans)(ACME, Tier.PRO)

    assert tenants.get(ACME) == pro and pro.usage_key == free.usage_key
    principal = authenticate(f"Bearer {key}")
    assert (principal.tenant_id, principal.usage_key) == (ACME, pro.usage_key)
    assert tenants.get(TenantId("other")) is None


def test_tiers_outside_the_three_are_refused_by_the_database(db) -> None:
    import psycopg

    with pytest.raises(psycopg.errors.CheckViolation):
        db().execute(
            "INSERT INTO tenants (tenant_id, tier, usage_key_id, usage_key, updated_at) VALUES (%s, %s, %s, %s, %s)",
            ("acme", "gold", "k1", "v1", datetime.now(UTC)),
        )


def test_a_new_key_for_a_tenant_without_a_tier_says_what_to_run(db, database_url: str) -> None:
    created = cli("keys", "create", "--tenant", "acme", "--database-url", database_url)
    assert created.returncode == 0, created.stderr
    assert created.stdout.startswith("ait_")
    assert "aitasks tenants set-tier acme standard" in created.stderr


def test_set_tier_without_the_stack_is_one_line_and_changes_nothing(db, database_url: str) -> None:
    done = cli("tenants", "set-tier", "acme", "pro", "--stack", "nosuchstack", "--database-url", database_url)
    assert done.returncode == 1
    assert done.stderr.startswith("error: stack nosuchstack:") and len(done.stderr.splitlines()) == 1
    assert PostgresTenantRepository(db).get(ACME) is None


def test_an_unknown_tier_is_a_usage_error(database_url: str) -> None:
    done = cli("tenants", "set-tier", "acme", "gold", "--database-url", database_url)
    assert done.returncode == 2 and "gold" in done.stderr
