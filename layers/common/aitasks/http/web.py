"""Serving the dashboard: its files, and the security headers every page response carries."""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING
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
