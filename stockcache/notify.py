"""Sending one alert notification to an operator's channel: ntfy (text) or a webhook (JSON).

Only channels the operator configured (``STOCKCACHE_NOTIFY_<NAME>``) are ever
called, so no user can make the server call an address of their choosing;
redirects are not followed either, since one could lead anywhere. A failure is
:class:`DeliveryFailed` whose reason is safe to store, show and log: a status
or an exception type, never the URL (which may hold a token). The standard
library's HTTP client is enough for one small POST and keeps this apart from
the upstream transport's pools and budgets.
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .settings import NotifyChannel

SEND_TIMEOUT = 5.0  # seconds per socket operation: a slow receiver holds only the alert worker
MAX_ANSWER = 65_536  # bytes of a receiver's answer read (and thrown away)
PHRASES = {"above": "above", "below": "below", "change_percent_above": "change above",
           "change_percent_below": "change below"}


@dataclass(frozen=True)
class Notification:
    """What one firing says: ntfy gets ``title`` and ``text`` (and tags), a webhook ``payload`` as JSON."""

    title: str
    text: str
    tags: tuple[str, ...]
    payload: Mapping[str, Any] = field(default_factory=dict)


class DeliveryFailed(Exception):
    """A channel did not take a notification; ``reason`` is safe to show (no URL, no body)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # urllib then raises HTTPError for the 3xx


_OPENER = urllib.request.build_opener(_NoRedirect)


def compose(*, symbol: str, condition: str, value: float, observed: float, note: str, quote: Mapping[str, Any],
            fired_at: str, alert_id: int | None, channel: str) -> Notification:
    """The notification for one firing: plain words for a phone, every figure for a webhook."""
    phrase = PHRASES.get(condition, condition)
    unit = "%" if condition.startswith("change_percent") else ""
    price, currency = quote.get("price"), quote.get("currency")
    change = quote.get("change_percent")
    moved = f" ({change:+.2f}% today)" if isinstance(change, int | float) else ""
    text = f"{symbol} is at {price}{' ' + currency if currency else ''}{moved}: {phrase} {value:g}{unit}."
    if note:
        text += "\n" + note
    up = condition in ("above", "change_percent_above")
    payload = {"event": "alert", "alert_id": alert_id, "symbol": symbol, "condition": condition, "value": value,
               "observed": observed, "price": price, "change_percent": change, "currency": currency,
               "note": note, "channel": channel, "fired_at": fired_at}
    return Notification(title=f"{symbol} {phrase} {value:g}{unit}", text=text,
                        tags=("chart_with_upwards_trend" if up else "chart_with_downwards_trend",), payload=payload)


def send(channel: NotifyChannel, notification: Notification, *, timeout: float = SEND_TIMEOUT) -> None:
    """POST one notification to ``channel``; DeliveryFailed unless it answers 2xx."""
    if channel.kind == "ntfy":
        body = notification.text.encode("utf-8")
        headers = {"Content-Type": "text/plain; charset=utf-8", "Title": _header(notification.title),
                   "Priority": "high", "Tags": ",".join(notification.tags)}
    else:
        body = json.dumps(dict(notification.payload), allow_nan=False).encode("utf-8")
        headers = {"Content-Type": "application/json"}
    headers["User-Agent"] = "stockcache-alerts"
    request = urllib.request.Request(channel.url, data=body, headers=headers, method="POST")
    try:
        with _OPENER.open(request, timeout=timeout) as answer:
            answer.read(MAX_ANSWER)
            status = int(answer.status)
    except urllib.error.HTTPError as exc:
        raise DeliveryFailed(f"HTTP {exc.code}") from None
    except urllib.error.URLError as exc:
        cause = exc.reason
        raise DeliveryFailed(type(cause).__name__ if isinstance(cause, BaseException) else "URLError") from None
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise DeliveryFailed(type(exc).__name__) from None
    if not 200 <= status < 300:
        raise DeliveryFailed(f"HTTP {status}")


def _header(value: str) -> str:
    """A header value HTTP can carry (ASCII, one line)."""
    return " ".join(value.encode("ascii", "replace").decode("ascii").split())
