-- Usage plans: a tenant's tier, and the API Gateway API key that attaches it to that tier's usage plan. The
-- authorizer returns the key's value as usageIdentifierKey; clients never see or send it.

CREATE TABLE tenants (
    tenant_id    text        PRIMARY KEY,
    tier         text        NOT NULL CHECK (tier IN ('free', 'standard', 'pro')),
    usage_key_id text        NOT NULL,
    usage_key    text        NOT NULL,
    updated_at   timestamptz NOT NULL,
    CONSTRAINT tenants_usage_key_key UNIQUE (usage_key)
);
