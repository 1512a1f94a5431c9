"""Idempotency-Key on Postgres: a persistence layer for the Powertools idempotency utility, and the call wrapper.

Powertools ships DynamoDB and Redis layers; this one keeps the records next to the tasks. The flow is
Powertools': take the key (INPROGRESS), run, store the response (COMPLETED) or release the key on error.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, cast

from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig, idempotent_function
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyItemAlreadyExistsError,
    IdempotencyItemNotFoundError,
    IdempotencyPersistenceLayerError,
    IdempotencyValidationError,
)
from aws_lambda_powertools.utilities.idempotency.persistence.base import BasePersistenceLayer
from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import DataRecord

from aitasks.adapters.postgres import _Repository
from aitasks.domain.errors import (
    AitasksError,
    DependencyUnavailableError,
    IdempotencyKeyReusedError,
    RequestInProgressError,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from aws_lambda_powertools.utilities.idempotency.hook import IdempotentHookFunction
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from aitasks.adapters.postgres import Connection

# Keys are kept at least this long (documented in docs/api.md).
KEY_TTL_S = 24 * 3600


class _Records(_Repository):
    _module = "idempotency"


class PostgresIdempotencyStore(BasePersistenceLayer):
    def __init__(self, connection: Callable[[], Connection]) -> None:
        super().__init__()
        self._records = _Records(connection)

    def _row_to_record(self, row: dict[str, Any]) -> DataRecord:
        return DataRecord(
            idempotency_key=row["id"],
            status=row["status"],
            expiry_timestamp=row["expires_at"],
            in_progress_expiry_timestamp=row["in_progress_expires_at"],
            response_data=row["response_data"] or "",
            payload_hash=row["payload_hash"],
        )

    def _get_record(self, idempotency_key: str) -> DataRecord:
        row = self._records._fetchone("get_record", {"id": idempotency_key})
        if row is None:
            raise IdempotencyItemNotFoundError
        return self._row_to_record(row)

    def _put_record(self, data_record: DataRecord) -> None:
        now = time.time()
        taken = self._records._fetchone(
            "put_in_progress",
            {
                "id": data_record.idempotency_key,
                "expires_at": data_record.expiry_timestamp,
                "in_progress_expires_at": data_record.in_progress_expiry_timestamp,
                "payload_hash": data_record.payload_hash,
                "now_s": int(now),
                "now_ms": int(now * 1000),
            },
        )
        if taken is not None:
            return
        row = self._records._fetchone("get_record", {"id": data_record.idempotency_key})
        if row is None:  # released between the two statements: let Powertools try again
            raise IdempotencyItemAlreadyExistsError
        old = self._row_to_record(row)
        self._validate_payload(data_payload=data_record, stored_data_record=old)
        raise IdempotencyItemAlreadyExistsError(old_data_record=old)

    def _update_record(self, data_record: DataRecord) -> None:
        self._records._fetchone(
            "complete",
            {
                "id": data_record.idempotency_key,
                "status": data_record.status,
                "expires_at": data_record.expiry_timestamp,
                "response_data": data_record.response_data,
            },
        )

    def _delete_record(self, data_record: DataRecord) -> None:
        self._records._fetchone("delete_record", {"id": data_record.idempotency_key})


def idempotent_call(
    store: BasePersistenceLayer,
    fn: Callable[[], dict[str, Any]],
    *,
    scope: str,
    tenant: str,
    key: str,
    payload: Any,
    lambda_context: LambdaContext | None,
) -> tuple[dict[str, Any], bool]:
    """Run `fn` once per (scope, tenant, key): the same key with the same payload replays the first result (and says so
    with True); a different payload is IdempotencyKeyReusedError, a concurrent first call RequestInProgressError.
    """
    replayed = False

    def on_replay(response: Any, record: DataRecord) -> Any:
        nonlocal replayed
        replayed = True
        return response

    config = IdempotencyConfig(
        event_key_jmespath="[scope, tenant, key]",  # hashed as a JSON array: no separator a tenant id could contain
        payload_validation_jmespath="payload",
        expires_after_seconds=KEY_TTL_S,
        hash_function="sha256",
        response_hook=cast("IdempotentHookFunction", on_replay),
    )
    if lambda_context is not None:
        config.register_lambda_context(lambda_context)

    @idempotent_function(data_keyword_argument="request", persistence_store=store, config=config, key_prefix=scope)
    def run(request: dict[str, Any]) -> dict[str, Any]:
        return fn()

    try:
        result = run(request={"scope": scope, "tenant": tenant, "key": key, "payload": payload})
    except IdempotencyValidationError as exc:
        raise IdempotencyKeyReusedError("the Idempotency-Key was used for a different request") from exc
    except IdempotencyAlreadyInProgressError as exc:
        raise RequestInProgressError("a request with this Idempotency-Key is still in progress") from exc
    except IdempotencyPersistenceLayerError as exc:
        cause = exc.__cause__
        if isinstance(cause, AitasksError):
            raise cause from exc
        raise DependencyUnavailableError("database") from exc
    return result, replayed
