"""API discovery through API Gateway (MiniStack): the document and Swagger UI without a key, ETags and 304."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urljoin

import requests

if TYPE_CHECKING:
    from tests.e2e.conftest import Stack

DOCUMENT = json.loads((Path(__file__).parents[2] / "docs" / "openapi.json").read_text())


def root(stack: Stack) -> str:
    return stack.url.removesuffix("api/v1")  # the stage's root, as the dashboard's


def test_the_document_and_swagger_ui_need_no_key(stack: Stack) -> None:
    document = requests.get(f"{root(stack)}openapi.json", timeout=30)
    assert document.status_code == 200
    assert document.json() == DOCUMENT

    page = requests.get(f"{root(stack)}docs", timeout=30)
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    spec = json.loads(re.search(r'<script id="openapi" type="application/json">(.*?)</script>', page.text, re.S)[1])
    assert spec == DOCUMENT
    # Try it out calls the server the page computes, as the browser resolves "." against the page's URL.
    assert 'new URL(".", location.href)' in page.text
    server = urljoin(page.url, ".").removesuffix("/")
    assert requests.get(f"{server}/api/v1/health", timeout=30).json() == {"status": "ok"}


def test_an_unchanged_task_is_304(stack: Stack) -> None:
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()  # it waits: nothing changes it meanwhile
    body = {"type": "chat", "payload": {"prompt": "e2e"}, "scheduledAt": later}
    created = requests.post(f"{stack.url}/tasks", json=body, headers=stack.headers(), timeout=30)
    task_url = f"{stack.url}/tasks/{created.json()['id']}"
    first = requests.get(task_url, headers=stack.headers(), timeout=30)
    tag = first.headers["ETag"]
    again = requests.get(task_url, headers={**stack.headers(), "If-None-Match": tag}, timeout=30)
    assert (again.status_code, again.content, again.headers["ETag"]) == (304, b"", tag)
