"""The live-updates WebSocket's $connect authorizer: a single-use ticket (query `ticket`) -> its tenant."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from aitasks import bootstrap
from aitasks.domain.errors import UnauthorizedError
from aitasks.http.context import TENANT_KEY

logger = Logger()
bootstrap.structured_logs(logger)


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # The ticket is logged nowhere: Powertools does not log the event unless told to.
    ticket = (event.get("queryStringParameters") or {}).get("ticket")
    try:
        with bootstrap.connection().deadline(bootstrap.request_budget_s(context)):
            tenant_id = bootstrap.redeem_ticket()(ticket)
    except UnauthorizedError:
        logger.info("connection refused: no valid ticket")
        raise Exception("Unauthorized") from None  # API Gateway answers the handshake with 401
    statement = {"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": event["methodArn"]}
    return {
        "principalId": tenant_id,
        "policyDocument": {"Version": "2012-10-17", "Statement": [statement]},
        "context": {TENANT_KEY: tenant_id},
    }
