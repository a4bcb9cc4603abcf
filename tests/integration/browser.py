"""Headless Chromium for the dashboard tests: Debian's /usr/bin/chromium driven by Playwright.

Playwright's own browser download is never used (``playwright install`` needs
the internet); ``scripts/test`` installs Debian's ``chromium`` package. Each
:class:`Tab` records what its page asked for and what went wrong in it, so a
test can assert the page stayed on its own origin and broke no CSP rule.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

from playwright.sync_api import Browser, Page, expect, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "dashboard"
TIMEOUT_MS = 10_000
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


@contextmanager
def launch() -> Iterator[Browser]:
    """Start headless Chromium; fails (never skips) with a hint when it is not installed."""
    if not CHROMIUM.exists():
        raise RuntimeError(f"{CHROMIUM} is missing: run scripts/test, or apt-get install chromium")
    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


class Tab:
    """One isolated browser context (its own sessionStorage) with one page on the service."""

    def __init__(self, browser: Browser, base_url: str, *, viewport: dict[str, int] | None = None) -> None:
        self.base_url = base_url
        self.context = browser.new_context(viewport=viewport or DESKTOP, service_workers="block")
        self.context.set_default_timeout(TIMEOUT_MS)
        self.page: Page = self.context.new_page()
        self.requests: list[str] = []
        self.page_errors: list[str] = []
        self.csp_violations: list[str] = []
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.on("pageerror", lambda error: self.page_errors.append(str(error)))
        self.page.on("console", self._console)

    def _console(self, message) -> None:
        if "Content Security Policy" in message.text:
            self.csp_violations.append(message.text)

    def open(self) -> Tab:
        self.page.goto(self.base_url + "/")
        expect(self.page.locator("#login:visible, #dashboard:visible")).to_have_count(1)
        return self

    def login(self, username: str, password: str) -> Tab:
        """Log in through the form and wait until the first full refresh has drawn every panel."""
        if not self.page.url.startswith(self.base_url):
            self.open()
        self.page.fill("#login-username", username)
        self.page.fill("#login-password", password)
        self.page.click("#login-form button[type=submit]")
        self.wait_refreshes(1)
        return self

    def wait_refreshes(self, count: int) -> None:
        """Wait until the page has completed ``count`` refreshes (it counts them on <body>)."""
        self.page.wait_for_function(
            "n => Number(document.body.dataset.refreshes || 0) >= n", arg=count, timeout=TIMEOUT_MS)

    def row(self, table_id: str, symbol: str):
        return self.page.locator(f"#{table_id} tbody tr[data-symbol='{symbol}']")

    def cells(self, table_id: str, symbol: str) -> dict[str, str]:
        """The visible text of each cell in a symbol's row, by its data-field."""
        return self.row(table_id, symbol).evaluate(
            "tr => Object.fromEntries([...tr.querySelectorAll('td[data-field]')]"
            ".map(td => [td.dataset.field, td.textContent.trim()]))")

    def figure(self, field: str) -> str:
        return self.page.locator(f".figure[data-field='{field}'] .value").inner_text().strip()

    def shot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def assert_clean(self) -> None:
        """No uncaught script error, no CSP violation, nothing loaded from anywhere but the service."""
        assert self.page_errors == [], f"script errors: {self.page_errors}"
        assert self.csp_violations == [], f"CSP violations: {self.csp_violations}"
        foreign = [url for url in self.requests if not url.startswith(self.base_url + "/")]
        assert foreign == [], f"requests to other origins: {foreign}"

    def close(self, screenshot_as: str | None = None) -> None:
        try:
            if screenshot_as and not self.page.is_closed():
                self.shot(screenshot_as)
        finally:
            self.context.close()


# Numbers as the page prints them: Intl.NumberFormat("en-US") rounds the shortest decimal form of a
# double half away from zero (checked against Chromium), which Decimal(repr(x)) with ROUND_HALF_UP matches.
def money(value: float) -> str:
    return f"{Decimal(repr(float(value))).quantize(Decimal('0.01'), rounding=ROUND_HALF_UP):,.2f}"


def signed(value: float) -> str:
    text = money(abs(value))
    if text == "0.00":
        return text
    return ("+" if value > 0 else "-") + text


def signed_pct(value: float) -> str:
    return signed(value) + "%"


def safe_name(node_name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", node_name)[:120]
