"""Alpha Vantage's own ways, for the Alpha Vantage side of ``bench.fake_upstream``.

Alpha Vantage is served by the fake upstream itself (``/alphavantage/query``);
this module holds what is Alpha Vantage's own and not the fake server's:

- **Its symbols.** Listings outside the US carry Alpha Vantage's suffixes
  (``SAP.DEX``, ``VOD.LON``): :data:`AV_SUFFIXES`, the verified ones only
  (``upstream-apis.md``). A Yahoo-style symbol (``SAP.DE``) is unknown to it,
  as it is to the real API. Prices are as listed: London in pence, and the
  currency is ``GBX`` where Alpha Vantage reports one (``SYMBOL_SEARCH``
  ``8. currency``, ``OVERVIEW`` ``Currency``); ``GLOBAL_QUOTE`` has none.
- **NEWS_SENTIMENT**: ``limit`` defaults to 50 and is capped at 1000; several
  ``tickers`` are AND-ed (an article must mention them all); a known ticker
  with no article in the window answers the "No articles found" ``Information``;
  ``time_published`` is ``YYYYMMDDTHHMMSS``, and (with ``quirks``) sometimes
  carries a trailing ``Z`` or lacks the seconds (``20240103T1658``), as seen
  in real answers.
- The daily-cap texts, in both wordings (:data:`DAILY_CAP_TEXTS`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from stockcache.upstream.providers.demo import ETF, DemoMarket, Instrument

AV_SUFFIXES: dict[str, str] = {".DE": ".DEX", ".F": ".FRK", ".L": ".LON", ".PA": ".PAR", ".AS": ".AMS",
                               ".TO": ".TRT", ".HK": ".HKG"}
_FROM_AV = {av: ours for ours, av in AV_SUFFIXES.items()}
REGIONS = {"XNYS": "United States", "XETR": "XETRA", "XFRA": "Frankfurt", "XLON": "United Kingdom",
           "XPAR": "Paris", "XAMS": "Amsterdam", "XTSE": "Toronto", "XHKG": "Hong Kong"}
COUNTRIES = {"US": "USA", "DE": "Germany", "GB": "United Kingdom", "FR": "France", "NL": "Netherlands",
             "CA": "Canada", "HK": "Hong Kong"}
EXCHANGES = {"XETR": "XETRA", "XFRA": "FRANKFURT", "XLON": "LSE", "XPAR": "PARIS", "XAMS": "AMSTERDAM",
             "XTSE": "TSX", "XHKG": "HKEX"}

NO_ARTICLES = ("No articles found. Please adjust the time range or refer to the API documentation "
               "https://www.alphavantage.co/documentation#newsapi and try again.")
DAILY_CAP_TEXTS = {
    "detected": ("We have detected your API key as {key} and our standard API rate limit is 25 requests per day. "
                 "Please subscribe to any of the premium plans at https://www.alphavantage.co/premium/ to instantly "
                 "remove all daily rate limits."),
    "thankyou": ("Thank you for using Alpha Vantage! Our standard API rate limit is 25 requests per day. Please "
                 "subscribe to any of the premium plans at https://www.alphavantage.co/premium/ to instantly remove "
                 "all daily rate limits."),
}
NEWS_DEFAULT_LIMIT, NEWS_MAX_LIMIT = 50, 1000
NEWS_PER_DAY = 3  # articles a day per ticker, about: a busy ticker has more than 50 in 30 days


def from_av(symbol: str) -> str | None:
    """Our symbol for an Alpha Vantage symbol; None for one it would not know (a Yahoo suffix)."""
    head, dot, tail = symbol.rpartition(".")
    if dot and head:
        suffix = "." + tail
        if suffix in _FROM_AV:
            return head + _FROM_AV[suffix]
        if suffix in AV_SUFFIXES or suffix in (".MI", ".SW", ".ST", ".T"):
            return None
    return symbol


def to_av(symbol: str) -> str:
    """Alpha Vantage's spelling of our symbol (unchanged where it has no suffix of its own)."""
    head, dot, tail = symbol.rpartition(".")
    if dot and head and "." + tail in AV_SUFFIXES:
        return head + AV_SUFFIXES["." + tail]
    return symbol


def currency(inst: Instrument) -> str:
    """The currency as Alpha Vantage writes it: pence are ``GBX``."""
    return "GBX" if inst.currency == "GBp" else inst.currency


def _utc_offset(inst: Instrument, now: float) -> str:
    zone = inst.venue.zone if inst.venue is not None else UTC
    offset = datetime.fromtimestamp(now, zone).utcoffset()
    hours = int(offset.total_seconds() // 3600) if offset is not None else 0
    return f"UTC{hours:+03d}"


def search_rows(market: DemoMarket, keywords: str, now: float, unknown: Callable[[str], bool]) -> list[dict[str, str]]:
    """``SYMBOL_SEARCH`` ``bestMatches`` in Alpha Vantage's symbols, regions and currencies."""
    needle = keywords.strip().upper()
    rows = []
    for hit in market.search(keywords):
        symbol = hit["symbol"]
        if unknown(symbol) or (from_av(to_av(symbol)) != symbol):
            continue
        inst = market.instrument(symbol)
        venue = inst.venue
        if venue is None:
            continue
        av = to_av(symbol)
        score = 1.0 if needle in (av, symbol) else 0.8 if needle == symbol.partition(".")[0] else 0.5
        rows.append({
            "1. symbol": av, "2. name": hit["name"], "3. type": "ETF" if inst.asset == ETF else "Equity",
            "4. region": REGIONS.get(venue.mic, venue.name), "5. marketOpen": venue.opens.strftime("%H:%M"),
            "6. marketClose": venue.closes.strftime("%H:%M"), "7. timezone": _utc_offset(inst, now),
            "8. currency": currency(inst), "9. matchScore": f"{score:.4f}",
        })
    rows.sort(key=lambda row: -float(row["9. matchScore"]))
    return rows


def overview_place(inst: Instrument) -> dict[str, str]:
    """``OVERVIEW``'s ``Exchange``, ``Currency`` and ``Country`` for a listing."""
    mic = inst.mic or "XNYS"
    if mic == "XNYS":
        exchange = "NASDAQ" if inst.exchange.startswith("NASDAQ") else "NYSE"
    else:
        exchange = EXCHANGES.get(mic, mic)
    return {"Exchange": exchange, "Currency": currency(inst), "Country": COUNTRIES.get(inst.country, inst.country)}


def time_published(iso: str, url: str, *, quirks: bool) -> str:
    """``20240103T165800`` from ``2024-01-03T16:58:00Z``; with quirks, some with ``Z``, some without seconds."""
    plain = iso.replace("-", "").replace(":", "").rstrip("Z")
    if not quirks:
        return plain
    pick = hashlib.blake2b(url.encode(), digest_size=1).digest()[0] % 8
    if pick == 0:
        return plain + "Z"
    if pick == 1:
        return plain[:-2]
    return plain


def _mentions(owner: str, ticker: str, day: str) -> bool:
    """Whether an article about ``owner`` on ``day`` also mentions ``ticker`` (fixed by the three)."""
    if ticker == owner:
        return True
    return hashlib.blake2b(f"{owner}|{ticker}|{day}".encode(), digest_size=1).digest()[0] < 80  # ~31 %


def news(market: DemoMarket, tickers: list[str], query: Mapping[str, str], now: float, *, quirks: bool,
         invalid: str) -> dict[str, Any]:
    """The ``NEWS_SENTIMENT`` body for ``tickers`` (our symbols, all known): AND-ed, limited, sorted."""
    try:
        start = (datetime.strptime(query["time_from"], "%Y%m%dT%H%M").replace(tzinfo=UTC).timestamp()
                 if query.get("time_from") else now - 30 * 86400)
        end = (datetime.strptime(query["time_to"], "%Y%m%dT%H%M").replace(tzinfo=UTC).timestamp()
               if query.get("time_to") else now)
        limit = int(query.get("limit", str(NEWS_DEFAULT_LIMIT)))
    except ValueError:
        return {"Information": invalid}
    limit = max(1, min(limit, NEWS_MAX_LIMIT))
    end = min(end, now)
    found: dict[str, tuple[Any, str]] = {}
    for owner in tickers:
        for article in market.news(owner, start, end, limit=NEWS_MAX_LIMIT, per_day=NEWS_PER_DAY).articles:
            day = article.published_at[:10]
            if all(_mentions(owner, t, day) for t in tickers):
                found.setdefault(article.url, (article, owner))
    if not found:
        return {"Information": NO_ARTICLES}
    order = query.get("sort", "LATEST").upper()
    items = sorted(found.values(), key=lambda pair: pair[0].published_at, reverse=order != "EARLIEST")[:limit]
    feed = []
    for article, owner in items:
        day = article.published_at[:10]
        mentioned = [owner] + [t for t in tickers if t != owner]
        feed.append({
            "title": article.headline, "url": article.url,
            "time_published": time_published(article.published_at, article.url, quirks=quirks),
            "authors": [], "summary": article.summary, "banner_image": article.image, "source": article.source,
            "category_within_source": "n/a", "source_domain": "example.com", "topics": [],
            "overall_sentiment_score": 0.1, "overall_sentiment_label": "Neutral",
            "ticker_sentiment": [{"ticker": to_av(t), "relevance_score": "0.9" if t == owner else "0.4",
                                  "ticker_sentiment_score": "0.1", "ticker_sentiment_label": "Neutral"}
                                 for t in mentioned if _mentions(owner, t, day)],
        })
    return {
        "items": str(len(feed)),
        "sentiment_score_definition": "x <= -0.35: Bearish; -0.35 < x <= -0.15: Somewhat-Bearish; "
                                      "-0.15 < x < 0.15: Neutral; 0.15 <= x < 0.35: Somewhat_Bullish; "
                                      "x >= 0.35: Bullish",
        "relevance_score_definition": "0 < x <= 1, with a higher score indicating higher relevance.",
        "feed": feed,
    }
