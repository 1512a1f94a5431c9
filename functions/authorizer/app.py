"""REQUEST Lambda authorizer: `Authorization: Bearer <key>` -> the key's tenant, in the authorizer context, and
its tier's usage plan key as usageIdentifierKey (the API's key source is AUTHORIZER)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.data_classes import event_source
from aws_lambda_powertools.utilities.data_classes.api_gateway_authorizer_event import (
    APIGatewayAuthorizerRequestEvent,
    APIGatewayAuthorizerResponse,
)
from aws_lambda_powertools.utilities.typing import LambdaContext

from aitasks import bootstrap
from aitasks.domain.errors import UnauthorizedError
from aitasks.http.context import TENANT_KEY

logger = Logger()
bootstrap.structured_logs(logger)


@logger.inject_lambda_context(clear_state=True)
@event_source(data_class=APIGatewayAuthorizerRequestEvent)
def lambda_handler(event: APIGatewayAuthorizerRequestEvent, context: LambdaContext) -> dict[str, Any]:
    try:
        with bootstrap.connection().deadline(bootstrap.request_budget_s(context)):
            principal = bootstrap.authenticate()(event.headers.get("Authorization"))
    except UnauthorizedError:
        logger.info("request denied: no valid API key")
        # The exact message "Unauthorized" is what makes API Gateway answer 401 (cached like any result).
        raise Exception("Unauthorized") from None
    if principal.usage_key is None:
        # API Gateway will answer 403: every authorized route needs a usage plan key.
        logger.warning("tenant has no tier: run `aitasks tenants set-tier`", tenant=principal.tenant_id)
    arn = event.parsed_arn
    policy = APIGatewayAuthorizerResponse(
        principal_id=principal.tenant_id,
        region=arn.region,
        aws_account_id=arn.aws_account_id,
        api_id=arn.api_id,
        stage=arn.stage,
        context={TENANT_KEY: principal.tenant_id},
        usage_identifier_key=principal.usage_key,
    )
    # One allow for every route: API Gateway caches the result per key for all routes of the API.
    policy.allow_all_routes()
    return policy.asdict()
