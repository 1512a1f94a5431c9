"""The deploy's custom resource: apply the SQL migrations before the functions that need them change."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from aitasks import bootstrap

logger = Logger()
bootstrap.structured_logs(logger)


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> None:
    ok, reason, applied = True, "", []
    try:
        # Deleting the stack leaves the data alone: migrations only ever go forward.
        if event["RequestType"] in ("Create", "Update"):
            applied = bootstrap.migrate_database()
            logger.info("migrations applied", extra={"applied": applied})
    except Exception as exc:  # any failure must reach CloudFormation, or the deploy hangs until it times out
        logger.exception("migration failed")
        ok, reason = False, f"migration failed: {exc}"
    bootstrap.report_to_cloudformation(
        event,
        log_stream=context.log_stream_name,
        ok=ok,
        reason=reason,
        data={"Applied": ",".join(applied)},
        physical_id="aitasks-schema",
    )
