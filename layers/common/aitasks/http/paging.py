"""Paging links: RFC 8288 Link header values with next/prev, as references relative to the list's own URL."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlencode

if TYPE_CHECKING:
    from collections.abc import Mapping

    from aitasks.application.tasks import Page


def link_header(page: Page, query: Mapping[str, str]) -> str | None:
    """`<tasks?page=3&pageSize=20>; rel="next", ...`; relative, so it resolves against whatever URL was called."""

    def ref(number: int) -> str:
        params = {k: v for k, v in query.items() if k not in {"page", "pageSize"}}
        params.update(page=str(number), pageSize=str(page.page_size))
        return f"tasks?{urlencode(params)}"

    links = []
    if page.has_prev:
        last = max(1, -(-page.total // page.page_size))
        links.append(f'<{ref(min(page.page - 1, last))}>; rel="prev"')
    if page.has_next:
        links.append(f'<{ref(page.page + 1)}>; rel="next"')
    return ", ".join(links) or None
