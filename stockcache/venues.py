"""Trading venues: the facts about each market a symbol can be listed on, and its trading calendar.

A symbol names its venue with a Yahoo-style suffix (``SAP.DE`` is Xetra); a
symbol without a known suffix is a US listing. Each :class:`Venue` knows its
ISO 10383 MIC, country, usual currency, time zone, regular session and the
holiday calendar it trades by (from the ``holidays`` package's financial
calendars, which are maintained with the exchanges' own announcements). The
providers map the MIC to their own spelling (``SAP.DEX``, ``mic_code=XETR``);
nothing here knows a provider.

The usual currency is only the fallback when no source says how a listing is
priced, and only on venues that trade in one currency: London lists
pence-priced shares and USD-priced ETFs side by side (``mixed_currency``), so
there a venue implies nothing, and never a minor unit (``currency`` below is a
major unit).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo


@dataclass(frozen=True)
class Venue:
    """One market. Immutable, so thread-safe."""

    mic: str  # ISO 10383 market identifier
    name: str
    suffix: str  # Yahoo-style symbol suffix, "" for the US
    country: str  # ISO 3166 alpha-2
    currency: str  # the usual quote currency (major unit); a listing's own currency wins
    timezone: str
    opens: time
    closes: time
    calendar: str  # a `holidays` financial market code, or "country:XX" for public holidays
    lunch: tuple[time, time] | None = None  # a midday break, when the venue has one
    # Lists shares and funds priced in other currencies too (London: pence, GBP, USD and EUR
    # lines side by side), so ``currency`` is no answer for one listing there.
    mixed_currency: bool = False

    @property
    def zone(self) -> ZoneInfo:
        return _zone(self.timezone)

    def is_trading_day(self, day: date) -> bool:
        """True on a weekday that is not one of the venue's holidays."""
        return day.weekday() < 5 and day not in _holidays(self.calendar, day.year)

    def is_open(self, ts: float) -> bool:
        """True when unix time ``ts`` falls in the regular session of a trading day (lunch breaks excluded)."""
        local = datetime.fromtimestamp(ts, self.zone)
        moment = local.time()
        if not self.is_trading_day(local.date()) or not self.opens <= moment < self.closes:
            return False
        return not (self.lunch is not None and self.lunch[0] <= moment < self.lunch[1])

    def next_open(self, ts: float) -> float:
        """Unix time of the next session open (or lunch-break end) strictly after ``ts``."""
        local = datetime.fromtimestamp(ts, self.zone)
        day = local.date()
        for _ in range(400):  # a year of closed days is a broken calendar, not a market
            if self.is_trading_day(day):
                starts = [self.opens] + ([self.lunch[1]] if self.lunch else [])
                for start in starts:
                    opening = datetime.combine(day, start, tzinfo=self.zone)
                    if opening > local:
                        return opening.timestamp()
            day += timedelta(days=1)
        raise ValueError(f"{self.mic} has no trading day within a year")

    def seconds_until_open(self, ts: float) -> float:
        """0 while the session is open, else the seconds until it opens again."""
        return 0.0 if self.is_open(ts) else self.next_open(ts) - ts

    def last_trading_day(self, day: date) -> date:
        """``day`` if the venue trades then, else the trading day before it."""
        while not self.is_trading_day(day):
            day -= timedelta(days=1)
        return day

    def previous_trading_day(self, day: date) -> date:
        """The trading day strictly before ``day``."""
        return self.last_trading_day(day - timedelta(days=1))


@functools.lru_cache(maxsize=32)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


@functools.lru_cache(maxsize=256)
def _holidays(calendar: str, year: int) -> frozenset[date]:
    # Imported on first use: the package takes about 0.3 s to import, which start-up need not pay.
    import holidays

    if calendar.startswith("country:"):
        found = holidays.country_holidays(calendar.removeprefix("country:"), years=year)
    else:
        found = holidays.financial_holidays(calendar, years=year)
    return frozenset(found)


def is_target_day(day: date) -> bool:
    """True on a TARGET business day: when the ECB publishes its reference rates (``XECB`` calendar)."""
    return day.weekday() < 5 and day not in _holidays("XECB", day.year)


def _t(text: str) -> time:
    return time.fromisoformat(text)


US = Venue("XNYS", "New York (NYSE, Nasdaq)", "", "US", "USD", "America/New_York", _t("09:30"), _t("16:00"), "XNYS")

VENUES: tuple[Venue, ...] = (
    US,
    Venue("XETR", "Xetra", ".DE", "DE", "EUR", "Europe/Berlin", _t("09:00"), _t("17:30"), "XETR"),
    Venue("XFRA", "Frankfurt", ".F", "DE", "EUR", "Europe/Berlin", _t("08:00"), _t("22:00"), "XFRA"),
    Venue("XLON", "London", ".L", "GB", "GBP", "Europe/London", _t("08:00"), _t("16:30"), "XLON",
          mixed_currency=True),
    Venue("XPAR", "Euronext Paris", ".PA", "FR", "EUR", "Europe/Paris", _t("09:00"), _t("17:30"), "XPAR"),
    Venue("XAMS", "Euronext Amsterdam", ".AS", "NL", "EUR", "Europe/Amsterdam", _t("09:00"), _t("17:30"), "XAMS"),
    Venue("XMIL", "Euronext Milan", ".MI", "IT", "EUR", "Europe/Rome", _t("09:00"), _t("17:30"), "XMIL"),
    Venue("XSWX", "SIX Swiss Exchange", ".SW", "CH", "CHF", "Europe/Zurich", _t("09:00"), _t("17:30"), "XSWX",
          mixed_currency=True),
    # No financial calendar for Stockholm in `holidays`: Sweden's public holidays are its closures.
    Venue("XSTO", "Nasdaq Stockholm", ".ST", "SE", "SEK", "Europe/Stockholm", _t("09:00"), _t("17:30"),
          "country:SE"),
    Venue("XTSE", "Toronto", ".TO", "CA", "CAD", "America/Toronto", _t("09:30"), _t("16:00"), "XTSE",
          mixed_currency=True),
    Venue("XHKG", "Hong Kong", ".HK", "HK", "HKD", "Asia/Hong_Kong", _t("09:30"), _t("16:00"), "XHKG",
          lunch=(_t("12:00"), _t("13:00")), mixed_currency=True),
    Venue("XTKS", "Tokyo", ".T", "JP", "JPY", "Asia/Tokyo", _t("09:00"), _t("15:30"), "XJPX",
          lunch=(_t("11:30"), _t("12:30"))),
)

BY_SUFFIX: Mapping[str, Venue] = {venue.suffix: venue for venue in VENUES if venue.suffix}
BY_MIC: Mapping[str, Venue] = {venue.mic: venue for venue in VENUES}
# Other MICs of venues above (Nasdaq's segments are the US venue's calendar and hours).
ALIASES: Mapping[str, Venue] = {"XNAS": US, "XNGS": US, "XNMS": US, "XNCM": US, "ARCX": US, "XASE": US,
                                "BATS": US, "XJPX": BY_MIC["XTKS"], "MTAA": BY_MIC["XMIL"]}


def by_mic(mic: str) -> Venue | None:
    """The venue for an ISO MIC (segment MICs included), or None."""
    return BY_MIC.get(mic) or ALIASES.get(mic)

# Bloomberg's equity exchange codes (what OpenFIGI calls ``exchCode``) of the venues above, to the
# operating MIC a listing there carries (OpenFIGI's MIC table, docs upstream-apis-2.md). Composite
# codes (``US``, ``GR``, ``SW``, ``CN``, ``JP``) name no one venue and are left out, as are
# venues stockcache does not know (Stuttgart ``GS``, Munich ``GM``, Chicago ``UM``...). The
# Nasdaq segments (``UW`` Global Select, ``UQ`` Global Market, ``UR`` Capital Market) are all Nasdaq.
EXCHANGE_CODES: Mapping[str, str] = {
    "UN": "XNYS", "UW": "XNAS", "UQ": "XNAS", "UR": "XNAS", "UP": "ARCX", "UA": "XASE",
    "GY": "XETR", "GF": "XFRA", "LN": "XLON", "FP": "XPAR", "NA": "XAMS", "IM": "XMIL", "SE": "XSWX",
    "SS": "XSTO", "CT": "XTSE", "HK": "XHKG", "JT": "XTKS",
}
# Where one symbol trades on several US venues (a Nasdaq share also on NYSE Arca and American),
# the listing venue is the first of these it has.
US_LISTING_ORDER = ("XNYS", "XNAS", "ARCX", "XASE")


def by_exchange_code(code: str) -> tuple[str, Venue] | None:
    """(MIC, venue) of a Bloomberg exchange code (``GY`` -> ``XETR``, Xetra), or None for a composite or unknown one."""
    mic = EXCHANGE_CODES.get(code)
    if mic is None:
        return None
    venue = by_mic(mic)
    return (mic, venue) if venue is not None else None
