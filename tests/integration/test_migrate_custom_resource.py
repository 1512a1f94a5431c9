"""The deploy's migration custom resource answers CloudFormation on its ResponseURL, in success and failure."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import TYPE_CHECKING, Any

import pytest

from aitasks.settings import get_settings
from tests.conftest import LambdaContext, load_handler

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def cloudformation() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A ResponseURL on 127.0.0.1 that records what is PUT to it."""
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/response", received
    server.shutdown()


def event(url: str, request_type: str = "Create") -> dict[str, Any]:
    return {
        "RequestType": request_type,
        "ResponseURL": url,
        "StackId": "arn:aws:cloudformation:us-east-1:1:stack/s/1",
        "RequestId": "r-1",
        "LogicalResourceId": "DatabaseMigration",
        "ResourceType": "Custom::DatabaseMigration",
        "ResourceProperties": {},
    }


def run(monkeypatch: pytest.MonkeyPatch, url: str, database: str, request_type: str = "Create") -> None:
    monkeypatch.setenv("DATABASE_URL", database)
    get_settings.cache_clear()
    try:
        load_handler("migrate").lambda_handler(event(url, request_type), LambdaContext())
    finally:
        get_settings.cache_clear()


def test_create_applies_the_migrations_and_reports_success(databases, cloudformation, monkeypatch) -> None:
    url, received = cloudformation
    fresh = databases.create()
    run(monkeypatch, url, fresh)
    [response] = received
    assert (response["Status"], response["PhysicalResourceId"]) == ("SUCCESS", "aitasks-schema")
    assert response["Data"]["Applied"].startswith("0001_initial,0002_api")
    run(monkeypatch, url, fresh, "Update")
    assert received[1]["Status"] == "SUCCESS" and received[1]["Data"]["Applied"] == ""  # nothing pending


def test_a_database_that_is_down_is_a_failed_response_not_a_hang(cloudformation, monkeypatch) -> None:
    url, received = cloudformation
    run(monkeypatch, url, "postgresql://postgres@127.0.0.1:1/x?connect_timeout=1")
    [response] = received
    assert response["Status"] == "FAILED"
    assert response["Reason"].startswith("migration failed")


def test_delete_leaves_the_data_alone(cloudformation, monkeypatch) -> None:
    url, received = cloudformation
    run(monkeypatch, url, "postgresql://postgres@127.0.0.1:1/x?connect_timeout=1", "Delete")
    assert received[0]["Status"] == "SUCCESS"
