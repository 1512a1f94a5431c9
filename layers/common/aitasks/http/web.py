"""Serving the dashboard (its files, and the security headers every page response carries) and Swagger UI."""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import re
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from pathlib import Path

CONTENT_TYPES = {
    "html": "text/html; charset=utf-8",
    "js": "text/javascript; charset=utf-8",
    "css": "text/css; charset=utf-8",
    "svg": "image/svg+xml",
}
# Flat names only: nothing with a slash or a dot-dot can name a file outside the folder.
ASSET_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*\.(js|css|svg)$")


def security_headers(websocket_url: str) -> dict[str, str]:
    """No inline script or style, nothing from elsewhere but the live-updates socket; no framing, no sniffing,
    no referrer (the page's URL names a task)."""
    parts = urlsplit(websocket_url)
    socket_origin = f"{parts.scheme}://{parts.netloc}"
    policy = "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            f"connect-src 'self' {socket_origin}",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )
    return {
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
        "Strict-Transport-Security": "max-age=31536000",
        # Small files, served by a function: always revalidate, so a deploy shows at once.
        "Cache-Control": "no-cache",
    }


def slash_redirect(path_seen: str | None) -> str | None:
    """A relative Location that adds the missing trailing slash to the page's URL (`/v1` -> `v1/`), or None.

    `path_seen` is requestContext.path, the path as the client called it (stage or base path included on AWS)."""
    if not path_seen or path_seen.endswith("/"):
        return None
    return path_seen.rsplit("/", 1)[-1] + "/"


def page(folder: Path) -> tuple[str, str] | None:
    """(content type, text) of the page, index.html in `folder`."""
    return _read(folder, "index.html")


def asset(folder: Path, name: str) -> tuple[str, str] | None:
    """(content type, text) of a script, style sheet or image in `folder`; None for any other name."""
    return _read(folder, name) if ASSET_NAME.match(name) else None


@functools.cache
def _read(folder: Path, name: str) -> tuple[str, str] | None:
    path = folder / name
    if not path.is_file():
        return None
    return CONTENT_TYPES[name.rsplit(".", 1)[1]], path.read_text(encoding="utf-8")


# Swagger UI as Powertools ships it (no CDN): the page inlines it, so it needs nothing but this one response.
SWAGGER_UI = "aws_lambda_powertools.event_handler.openapi.swagger_ui"
# "Try it out" calls the deployment the page came from: its URL less `/docs` (the stage, a custom domain's base
# path, or a local emulator's prefix), found by the browser, which alone knows the whole URL.
_START = """const spec = JSON.parse(document.getElementById("openapi").textContent);
spec.servers = [{url: new URL(".", location.href).href.replace(/\\/$/, ""), description: "this deployment"}];
SwaggerUIBundle({
  dom_id: "#swagger-ui",
  spec: spec,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
  deepLinking: true,
  filter: true,
});"""


def api_docs(document: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """(HTML, headers) of Swagger UI over `document`, served at `.../docs`."""
    # In a JSON data block: the browser runs nothing in it, and `<\/` keeps `</script>` in a string from ending it.
    spec = json.dumps(document).replace("</", "<\\/")
    bundle, css = _swagger_ui()
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>aitasks API</title>\n'
        f'<style>{css}</style>\n</head>\n<body>\n<div id="swagger-ui"></div>\n'
        f'<script id="openapi" type="application/json">{spec}</script>\n'
        f"<script>{bundle}</script>\n<script>{_START}</script>\n</body>\n</html>\n"
    )
    policy = "; ".join(
        [
            "default-src 'none'",
            f"script-src {_sha256(bundle)} {_sha256(_START)}",  # these two scripts, nothing else
            "style-src 'unsafe-inline'",  # Swagger UI sets styles from its script
            "img-src 'self' data:",
            "connect-src 'self'",  # Try it out: this API only
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )
    headers = {
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
    }
    return page, headers


@functools.cache
def _swagger_ui() -> tuple[str, str]:
    folder = resources.files(SWAGGER_UI)
    return (
        folder.joinpath("swagger-ui-bundle.min.js").read_text(encoding="utf-8"),
        folder.joinpath("swagger-ui.min.css").read_text(encoding="utf-8"),
    )


@functools.cache
def _sha256(script: str) -> str:
    return f"'sha256-{base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()}'"
