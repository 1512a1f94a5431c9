"""Pushing messages down WebSocket connections through API Gateway's @connections management API."""

from __future__ import annotations

from typing import Any

from aitasks.application.ports import ConnectionGoneError


def management_endpoint(websocket_url: str) -> str:
    """The @connections endpoint of a WebSocket stage: its wss:// (ws:// locally) URL over https:// (http://)."""
    scheme, sep, rest = websocket_url.partition("://")
    if not sep or scheme not in {"ws", "wss"}:
        raise ValueError(f"not a WebSocket URL: {websocket_url!r}")
    return f"{'https' if scheme == 'wss' else 'http'}://{rest}"


class ApiGatewayPusher:
    """PostToConnection; a 410 GoneException (the connection closed) becomes ConnectionGoneError."""

    def __init__(self, websocket_url: str, client: Any = None, *, timeout_s: float = 3) -> None:
        if client is None:
            import boto3
            from botocore.config import Config

            config = Config(
                connect_timeout=timeout_s, read_timeout=timeout_s, retries={"max_attempts": 2, "mode": "standard"}
            )
            client = boto3.client(
                "apigatewaymanagementapi", endpoint_url=management_endpoint(websocket_url), config=config
            )
        self._client = client

    def push(self, connection_id: str, message: bytes) -> None:
        try:
            self._client.post_to_connection(ConnectionId=connection_id, Data=message)
        except self._client.exceptions.GoneException as exc:
            raise ConnectionGoneError(connection_id) from exc
