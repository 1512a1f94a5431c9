"""Unit tests: no network (pytest-socket) and no database; the real handlers where they need neither."""

from __future__ import annotations

from typing import TYPE_CHECKING

import aws_xray_sdk.core  # noqa: F401 - its recorder opens a UDP socket (unused) at import: import it before the guard
import pytest
from pytest_socket import disable_socket, enable_socket

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture(autouse=True)
def _no_network() -> Iterator[None]:
    disable_socket(allow_unix_socket=False)
    yield
    enable_socket()
