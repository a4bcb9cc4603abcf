"""Headless Chromium for the dashboard tests: Debian's /usr/bin/chromium driven by Playwright.

Playwright's own browser download is never used (``playwright install`` needs
the internet); ``scripts/test`` installs Debian's ``chromium`` package. Each
:class:`Tab` records what its page asked for and what went wrong in it, so a
test can assert the page stayed on its own origin and broke no CSP rule, and
measures its layout: nothing wider than the viewport, nothing cut inside a
scroller or a chart, every button and link clickable, no card padded out.
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
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}

# Every rendered element must lie inside the viewport horizontally, and no element may hide part of its
# content behind a sideways scroll or a clip (a table in an overflow box, a cell cut mid-character).
# 1x1 boxes are the visually-hidden pattern for screen-reader text and are skipped. Chart labels must
# lie inside their chart.
_LAYOUT_FAULTS = """() => {
  const vw = document.documentElement.clientWidth;
  const faults = [];
  const doc = document.documentElement;
  if (doc.scrollWidth > vw) faults.push(`the page is ${doc.scrollWidth}px wide in a ${vw}px viewport`);
  const describe = (el) => {
    let name = el.tagName.toLowerCase() + (el.id ? "#" + el.id : "");
    const field = el.dataset && (el.dataset.field || el.dataset.symbol || el.dataset.tier || el.dataset.kind);
    if (field) name += `[${field}]`;
    const holder = el.parentElement && el.parentElement.closest("[id]");
    return holder ? `${name} in #${holder.id}` : name;
  };
  for (const el of document.body.querySelectorAll("*")) {
    if (!el.getClientRects().length) continue;
    const style = getComputedStyle(el);
    if (style.visibility === "hidden") continue;
    const r = el.getBoundingClientRect();
    if (r.width <= 1 && r.height <= 1) continue;
    if (r.left < -0.5 || r.right > vw + 0.5) {
      faults.push(`${describe(el)} spans x ${Math.round(r.left)}..${Math.round(r.right)} of ${vw}`);
    }
    if (el instanceof HTMLElement && /auto|scroll|hidden|clip/.test(style.overflowX)
        && el.scrollWidth > el.clientWidth + 1) {
      faults.push(`${describe(el)} hides ${el.scrollWidth - el.clientWidth}px of its content sideways`);
    }
  }
  for (const label of document.querySelectorAll("svg text")) {
    if (!label.getClientRects().length) continue;
    const box = label.ownerSVGElement.getBoundingClientRect();
    const r = label.getBoundingClientRect();
    if (r.left < box.left - 0.5 || r.right > box.right + 0.5 || r.top < box.top - 0.5 || r.bottom > box.bottom + 0.5) {
      faults.push(`chart label "${label.textContent}" is cut by its chart`);
    }
  }
  return faults;
}"""

# For each visible card: the empty space between its last visible child and its bottom padding.
_CARD_GAPS = """(selector) => Object.fromEntries([...document.querySelectorAll(selector)]
  .filter((card) => card.getClientRects().length)
  .map((card) => {
    const style = getComputedStyle(card);
    const inner = card.getBoundingClientRect().bottom - parseFloat(style.paddingBottom)
      - parseFloat(style.borderBottomWidth);
    const bottoms = [...card.children].filter((c) => c.getClientRects().length)
      .map((c) => c.getBoundingClientRect().bottom);
    return [card.id, Math.round(inner - Math.max(card.getBoundingClientRect().top, ...bottoms))];
  }))"""

# How much of its card's content width a chart's drawing uses (1.0 = all of it).
_CHART_FILL = """(selector) => {
  const drawing = document.querySelector(selector);
  const card = drawing.closest(".card");
  const style = getComputedStyle(card);
  const content = card.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
  return drawing.getBoundingClientRect().width / content;
}"""


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

    def figure_label(self, field: str) -> str:
        """A figure's label as the page shows it (CSS upper-cases it; this is the text itself)."""
        return self.page.locator(f".figure[data-field='{field}'] .label").text_content().strip()

    def layout_faults(self) -> list[str]:
        return self.page.evaluate(_LAYOUT_FAULTS)

    def assert_fits(self) -> None:
        """Nothing wider than the viewport, nothing cut off inside a scroller or a chart."""
        faults = self.layout_faults()
        assert faults == [], "layout faults:\n" + "\n".join(faults)

    def assert_reachable(self, selector: str = "button:visible, a:visible") -> int:
        """Every visible button and link can be scrolled to and clicked (a trial click: nothing happens).

        A trial click fails when the element is off-screen sideways, covered by another element
        or disabled. Returns how many were checked, so a test can see the selector matched.
        """
        width = self.page.viewport_size["width"]
        controls = self.page.locator(selector)
        count = controls.count()
        for i in range(count):
            control = controls.nth(i)
            control.scroll_into_view_if_needed()
            box = control.bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width, (
                f"{control.evaluate('e => e.outerHTML.slice(0, 120)')} lies outside the viewport: {box}")
            control.click(trial=True, timeout=2_000)
        return count

    def card_gaps(self, selector: str = ".card") -> dict[str, int]:
        return self.page.evaluate(_CARD_GAPS, selector)

    def chart_fill(self, selector: str) -> float:
        return self.page.evaluate(_CHART_FILL, selector)

    def polyline(self, selector: str) -> list[tuple[float, float]]:
        points = self.page.locator(selector).get_attribute("points") or ""
        return [(float(x), float(y)) for x, y in (p.split(",") for p in points.split())]

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
def amount(value: float, digits: int = 2) -> str:
    """``value`` with ``digits`` decimals (a currency's minor unit: 2 for EUR, 0 for JPY) and comma groups."""
    exact = Decimal(repr(float(value))).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP)
    return f"{exact:,.{digits}f}"


def money(value: float) -> str:
    return amount(value, 2)


def unit_price(value: float, digits: int = 2) -> str:
    """A per-share figure: the currency's decimals, and up to four below one unit (0.8252 GBP, not 0.83)."""
    if abs(value) >= 1:
        return amount(value, digits)
    whole, _, fraction = amount(value, max(digits, 4)).partition(".")
    fraction = fraction.rstrip("0").ljust(digits, "0")
    return whole + ("." + fraction if fraction else "")


def _signed(text: str, value: float) -> str:
    if float(text.replace(",", "")) == 0:
        return text
    return ("+" if value > 0 else "-") + text


def signed(value: float, digits: int = 2) -> str:
    return _signed(amount(abs(value), digits), value)


def signed_unit(value: float, digits: int = 2) -> str:
    return _signed(unit_price(abs(value), digits), value)


def signed_pct(value: float) -> str:
    return signed(value) + "%"


def safe_name(node_name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", node_name)[:120]
