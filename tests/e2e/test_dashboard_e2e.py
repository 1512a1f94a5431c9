"""The dashboard in a real browser (Debian's Chromium driven by Playwright) against the local stack: sign in with
the key, create a task and watch it succeed without a reload (pushed over the WebSocket), read its details,
cancel a scheduled task, see a problem for an invalid form, use it at 375 px and by keyboard, and never see
another tenant's events.

Screenshots of the list and the details go to .local/screenshots/, or to docs/img/ with UPDATE_SCREENSHOTS=1
(the README shows those).
"""

from __future__ import annotations

import os
import re
import shutil
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import requests

from tests.e2e.conftest import LOCAL, ROOT, Stack, new_tenant

if TYPE_CHECKING:
    from collections.abc import Iterator

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

CHROMIUM = os.environ.get("AITASKS_CHROMIUM", "/usr/bin/chromium")
# Cold starts of a handful of functions on a small machine: the first page load and the first socket take a while.
SLOW_MS = 90_000
SHOTS = ROOT / "docs" / "img" if os.environ.get("UPDATE_SCREENSHOTS") else LOCAL / "screenshots"
RELEASE_NOTES = (
    "aitasks 1.4 adds a web dashboard: a task list with filters and paging, task details with attempts, "
    "artifacts and history, and live updates over a WebSocket, with polling when the socket is down."
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists() and not shutil.which(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing (apt-get install chromium)")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    with playwright_api.sync_playwright() as p:
        # --no-sandbox: Chromium refuses its sandbox as root, which CI runs as.
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


class Dashboard:
    """One browser tab on the dashboard, with the WebSocket frames it received."""

    def __init__(self, browser: Any, stack: Stack, *, width: int = 1280, height: int = 860) -> None:
        self.context = browser.new_context(viewport={"width": width, "height": height})
        self.page = self.context.new_page()
        self.page.set_default_timeout(30_000)
        self.frames: list[str] = []
        self.errors: list[str] = []
        self.page.on("websocket", lambda ws: ws.on("framereceived", self._frame))
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.url = stack.url.removesuffix("api/v1")

    def _frame(self, payload: Any) -> None:
        self.frames.append(payload if isinstance(payload, str) else payload.decode())

    def sign_in(self, key: str) -> Dashboard:
        self.page.goto(self.url)
        self.page.get_by_label("API key").fill(key)
        self.page.get_by_role("button", name="Open the dashboard").click()
        expect(self.page.locator("#live")).to_have_text("Live updates on", timeout=SLOW_MS)
        # A mark that a reload would wipe out: it must survive every test step.
        self.page.evaluate("window.__noReload = true")
        return self

    def wait_for_frame(self, *words: str, timeout_s: float = SLOW_MS / 1000) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            found = [f for f in self.frames if all(w in f for w in words)]
            if found:
                return found[0]
            assert time.monotonic() < deadline, f"no frame with {words}: {self.frames}"
            self.page.wait_for_timeout(250)

    def still_the_same_page(self) -> bool:
        return bool(self.page.evaluate("window.__noReload === true"))

    def row(self, text: str) -> Any:
        return self.page.locator("#tasks tbody tr", has_text=text)

    def create(self, prompt: str, *, type_: str = "chat", context: str = "", run_at: str = "", ok: bool = True) -> None:
        form = self.page.locator("#new-task")
        form.get_by_label("Type").select_option(type_)
        form.get_by_label("Prompt").fill(prompt)
        form.get_by_label("Context").fill(context)
        form.get_by_label("Run at").fill(run_at)
        form.get_by_role("button", name="Create task").click()
        if ok:  # the form empties itself once the API accepted the task
            expect(form.get_by_label("Prompt")).to_have_value("", timeout=SLOW_MS)

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def dashboard(browser: Any, stack: Stack) -> Iterator[Dashboard]:
    tab = Dashboard(browser, stack)
    yield tab
    assert not tab.errors, tab.errors
    tab.close()


def new_tenants_key(name: str) -> str:
    return new_tenant(name)[1]


@pytest.fixture
def other_tenants_key() -> str:
    return new_tenants_key("e2e-other")


def shoot(page: Any, name: str, *, full_page: bool = True) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / name), full_page=full_page)


def test_a_task_is_followed_live_to_succeeded_and_its_details_show_the_attempt_and_artifact(
    dashboard: Dashboard, stack: Stack
) -> None:
    key = new_tenants_key("e2e-dashboard")  # a tenant of its own: the screenshots show only this test's tasks
    page = dashboard.sign_in(key).page
    # The key is kept in the tab's sessionStorage, and nowhere in the URL.
    assert page.evaluate("sessionStorage.getItem('aitasks.apiKey')") == key
    assert key not in page.url
    tomorrow = (datetime.now() + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    dashboard.create("Summarise the release notes in one line", type_="summarize", context=RELEASE_NOTES)
    dashboard.create("Draft the weekly report", run_at=tomorrow)
    expect(dashboard.row("Summarise the release notes").locator(".status")).to_have_text("succeeded", timeout=SLOW_MS)
    expect(dashboard.row("Draft the weekly report").locator(".status")).to_have_text("queued")
    expect(dashboard.row("Draft the weekly report")).to_contain_text("waiting until its scheduled time")
    # this month's spend (GET /usage), brought up to date as tasks end: the fake model is priced, no budget here
    expect(page.locator("#usage")).to_have_text(re.compile(r"^This month: \$0\.0\d*[1-9]\d* spent$"), timeout=SLOW_MS)

    prompt = f"Say hello to the dashboard {uuid.uuid4().hex[:6]}"
    dashboard.create(prompt)
    row = dashboard.row(prompt)
    expect(row.locator(".status")).to_have_text("succeeded", timeout=SLOW_MS)
    task_id = row.get_by_role("link").get_attribute("data-task")
    assert task_id
    # It came over the WebSocket (the page does not poll while the socket is open), without a reload.
    dashboard.wait_for_frame(task_id, "task.succeeded")
    assert dashboard.still_the_same_page()
    expect(row).to_contain_text("1 of 3")
    shoot(page, "dashboard-list.png", full_page=False)

    row.get_by_role("link").click()
    expect(page.locator("#detail-title")).to_be_focused(timeout=SLOW_MS)
    expect(page.locator("#summary")).to_contain_text("succeeded")
    attempt = page.locator("#attempts tbody tr").first
    expect(attempt).to_contain_text("fake-echo-1")
    expect(attempt).to_contain_text("succeeded")
    expect(page.locator("#artifacts .artifact")).to_contain_text("text")
    expect(page.locator("#history li")).to_have_count(4)
    expect(page.locator("#history")).to_contain_text("task.succeeded")
    expect(page.locator("#payload")).to_contain_text(prompt)
    shoot(page, "dashboard-details.png")
    assert dashboard.still_the_same_page()

    page.get_by_role("link", name="← All tasks").click()
    expect(dashboard.row(prompt).get_by_role("link")).to_be_focused()


def test_a_scheduled_task_is_cancelled_from_its_row(dashboard: Dashboard, stack: Stack) -> None:
    page = dashboard.sign_in(stack.key).page
    prompt = f"Tomorrow's work {uuid.uuid4().hex[:6]}"
    tomorrow = (datetime.now() + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    dashboard.create(prompt, run_at=tomorrow)
    row = dashboard.row(prompt)
    expect(row.locator(".status")).to_have_text("queued")
    row.get_by_role("button", name="Cancel").click()
    expect(row.locator(".status")).to_have_text("cancelled", timeout=SLOW_MS)
    expect(row.get_by_role("button", name="Cancel")).to_have_count(0)
    expect(page.locator("#list-problem")).to_be_hidden()


def test_an_invalid_task_shows_the_problems_title_detail_and_fields(dashboard: Dashboard, stack: Stack) -> None:
    page = dashboard.sign_in(stack.key).page
    dashboard.create("Summarise this", type_="summarize", ok=False)  # summarize needs a context
    problem = page.locator("#new-problem")
    expect(problem).to_be_visible()
    expect(problem).to_contain_text("Unprocessable Entity")
    expect(problem).to_contain_text("the task is not valid")
    expect(problem).to_contain_text("payload.context")
    expect(page.get_by_label("Context")).to_have_attribute("aria-invalid", "true")
    expect(dashboard.row("Summarise this")).to_have_count(0)


def test_filters_and_pages_follow_the_total_count(dashboard: Dashboard, stack: Stack) -> None:
    key = new_tenants_key("e2e-paging")
    later = (datetime.now().astimezone() + timedelta(days=2)).isoformat(timespec="seconds")
    for n in range(21):  # one more than a page; scheduled, so they stay queued
        body = {"type": "summarize" if n < 3 else "chat", "payload": {"prompt": f"p{n}", "context": "c"}}
        created = requests.post(
            f"{stack.url}/tasks", json={**body, "scheduledAt": later}, headers=stack.headers(key), timeout=30
        )
        assert created.status_code == 202, created.text
    page = dashboard.sign_in(key).page
    info = page.locator("#page-info")
    expect(info).to_have_text("Page 1 of 2 · 21 tasks")
    expect(page.locator("#tasks tbody tr")).to_have_count(20)
    expect(page.get_by_role("button", name="Previous page")).to_be_disabled()
    page.get_by_role("button", name="Next page").click()
    expect(info).to_have_text("Page 2 of 2 · 21 tasks")
    expect(page.locator("#tasks tbody tr")).to_have_count(1)
    filters = page.locator("#filters")
    filters.get_by_label("Type").select_option("summarize")
    expect(info).to_have_text("Page 1 of 1 · 3 tasks")
    filters.get_by_label("Status").select_option("succeeded")
    expect(info).to_have_text("Page 1 of 1 · 0 tasks")
    expect(page.locator("#empty")).to_be_visible()


def test_a_wrong_key_is_refused_with_its_problem(dashboard: Dashboard) -> None:
    page = dashboard.page
    page.goto(dashboard.url)
    page.get_by_label("API key").fill("ait_not-a-key")
    page.get_by_role("button", name="Open the dashboard").click()
    # MiniStack restarts a function that raised, as the authorizer does to refuse: this 401 takes seconds.
    expect(page.locator("#login-problem")).to_contain_text("Unauthorized", timeout=SLOW_MS)
    assert page.evaluate("sessionStorage.getItem('aitasks.apiKey')") is None


def test_it_works_at_375_px_and_by_keyboard(browser: Any, stack: Stack) -> None:
    phone = Dashboard(browser, stack, width=375, height=740)
    try:
        page = phone.sign_in(stack.key).page
        prompt = f"From a phone {uuid.uuid4().hex[:6]}"
        phone.create(prompt)
        expect(phone.row(prompt).locator(".status")).to_have_text("succeeded", timeout=SLOW_MS)
        assert page.evaluate("document.documentElement.scrollWidth") <= 375  # nothing runs off the side
        # Keyboard only: focus the task's link, open it with Enter, come back with the back link.
        link = phone.row(prompt).get_by_role("link")
        link.focus()
        page.keyboard.press("Shift+Tab")  # back and forth by keyboard, so the focus is a keyboard focus
        page.keyboard.press("Tab")
        expect(link).to_be_focused()
        outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
        assert outline != "none"  # the focus is visible
        page.keyboard.press("Enter")
        expect(page.locator("#detail-title")).to_be_focused(timeout=SLOW_MS)
        page.keyboard.press("Shift+Tab")
        expect(page.get_by_role("link", name="← All tasks")).to_be_focused()
        page.keyboard.press("Enter")
        expect(link).to_be_focused()
        assert page.evaluate("document.documentElement.scrollWidth") <= 375
        assert not phone.errors, phone.errors
    finally:
        phone.close()


def test_a_tenant_never_receives_another_tenants_events(browser: Any, stack: Stack, other_tenants_key: str) -> None:
    mine, theirs = Dashboard(browser, stack), Dashboard(browser, stack)
    try:
        mine.sign_in(stack.key)
        theirs.sign_in(other_tenants_key)
        created = requests.post(
            f"{stack.url}/tasks",
            json={"type": "chat", "payload": {"prompt": "only mine"}},
            headers=stack.headers(),
            timeout=30,
        )
        assert created.status_code == 202, created.text
        task_id = created.json()["id"]
        mine.wait_for_frame(task_id, "task.succeeded")
        theirs.page.wait_for_timeout(2000)  # anything misrouted would have arrived by now
        assert not any(task_id in f for f in theirs.frames), theirs.frames
        assert all(stack.key not in f for f in mine.frames + theirs.frames)
        expect(theirs.page.locator(f'a[data-task="{task_id}"]')).to_have_count(0)
        expect(mine.page.locator(f'a[data-task="{task_id}"]')).to_have_count(1)
    finally:
        mine.close()
        theirs.close()
