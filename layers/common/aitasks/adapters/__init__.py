"""Adapters: the technologies behind the ports (Postgres, SQS, in-memory fakes)."""
