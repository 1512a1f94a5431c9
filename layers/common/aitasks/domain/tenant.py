"""Tenants and their tiers: each tier is an API Gateway usage plan (throttle and quota) in the stack."""

from __future__ import annotations

import enum


class Tier(enum.StrEnum):
    FREE = "free"
    STANDARD = "standard"
    PRO = "pro"


DEFAULT_TIER = Tier.STANDARD
