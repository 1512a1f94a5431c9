"""The live-updates WebSocket's routes: $connect records the connection with its tenant (from the authorizer),
$disconnect forgets it, $default (the page's keep-alive pings) does nothing."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from aitasks import bootstrap
from aitasks.domain.task import TenantId
from aitasks.http.context import TENANT_KEY

logger = Logger()
bootstrap.structured_logs(logger)


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = event["requestContext"]
    route, connection_id = request["routeKey"], request["connectionId"]
    logger.append_keys(connection_id=connection_id, route=route)
    with bootstrap.connection().deadline(bootstrap.request_budget_s(context)):
        if route == "$connect":
            tenant_id = (request.get("authorizer") or {}).get(TENANT_KEY)
            if not tenant_id:
                logger.warning("no tenant from the authorizer: refused")
                return {"statusCode": 401}
            bootstrap.open_connection()(connection_id, TenantId(tenant_id))
            logger.info("connected", extra={"tenant_id": tenant_id})
        elif route == "$disconnect":
            bootstrap.close_connection()(connection_id)
            logger.info("disconnected")
    return {"statusCode": 200}
