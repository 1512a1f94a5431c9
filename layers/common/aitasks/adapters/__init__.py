"""Adapters: the technologies behind the ports (Postgres, SQS, EventBridge, the model providers, ...)."""
