"""The offline demo source: deterministic, plausible market data with no network.

It serves when no key is configured, so a new user sees the service work at
once. Every number is a pure function of (symbol, date, clock), hashed with
BLAKE2b rather than a seeded global RNG, so two processes (the service and
``bench.fake_upstream``, which reuses :class:`DemoMarket`) agree to the cent.

The demo knows the world, not only US shares: every symbol is classified
(:meth:`DemoMarket.instrument`) as a listing on a venue of ``stockcache.venues``
(``SAP.DE``, ``VOD.L``; a table of real names, else a generated company), an
ETF, an index (``^GSPC``), a crypto pair (``BTC-USD``, Finnhub's
``BINANCE:BTCUSDT``), a currency pair (``EURUSD=X``, ``OANDA:EUR_USD``) or a
future (``GC=F``). Each class has a plausible price level, in the listing's
currency *as a provider reports it*: London shares in pence (``GBp``), some
London ETFs in USD or GBP (:meth:`DemoMarket.currency` gives the factor to the
major unit). **Only symbols matching ``ZZZZ*``, and ``XXXX`` (the contract's
example of an unknown symbol), are unknown** (by default); any other
well-formed symbol gets data.

A day's close is a slow sum of sine waves (trend) plus daily noise, so history
needs no random walk from an epoch. Bars exist on the trading days of the
listing's venue (``Venue.is_trading_day``: no bar on Thanksgiving in New York,
none on Christmas Eve on Xetra), on weekdays for currency pairs and on every
day for crypto. The current session is today (in the venue's time zone) once
the venue has opened, else the last trading day; the price moves from that
session's open to its close over the venue's hours (lunch breaks held flat;
crypto and currency pairs trade the whole UTC day). History ends the trading
day before the session, so its last close is the quote's previous close.

Currency conversion uses a deterministic table of ECB reference rates
(:meth:`DemoMarket.ecb_rates`), published on TARGET business days at 16:00
Frankfurt time; weekends and holidays carry the last publication. Crypto
prices in EUR, GBP, ... are the USD price at those rates, so every quote
currency agrees.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from fnmatch import fnmatchcase
from typing import Any
from zoneinfo import ZoneInfo

from ...analysis import based_on, demo_text
from ...clock import iso_utc
from ...currency import in_major, is_code
from ...errors import CurrencyNotFound, SymbolNotFound
from ...models import Candle, FxRates, History, ListingInfo, News, NewsItem, Profile, Quote
from ...settings import Section, Settings
from ...symbols import CRYPTO, EQUITY, INDEX, listing
from ...venues import BY_MIC, US, VENUES, Venue
from ...venues import is_target_day as _target_day
from .base import Clock, Provider, days_param, query_param

UNKNOWN_PATTERNS = ("ZZZZ*", "XXXX")

ETF, FX, FUTURE = "etf", "fx", "future"

_NASDAQ = "NASDAQ NMS - GLOBAL MARKET"
_NYSE = "NEW YORK STOCK EXCHANGE, INC."
_ARCA = "NYSE ARCA"
# The exchange names a provider's profile writes for each venue (Finnhub's spelling).
EXCHANGE_NAMES: Mapping[str, str] = {
    "XETR": "XETRA", "XFRA": "DEUTSCHE BOERSE AG", "XLON": "LONDON STOCK EXCHANGE",
    "XPAR": "NYSE EURONEXT - EURONEXT PARIS", "XAMS": "NYSE EURONEXT - EURONEXT AMSTERDAM",
    "XMIL": "BORSA ITALIANA", "XSWX": "SIX SWISS EXCHANGE", "XSTO": "NASDAQ OMX NORDIC",
    "XTSE": "TORONTO STOCK EXCHANGE", "XHKG": "HONG KONG EXCHANGES AND CLEARING LTD",
    "XTKS": "TOKYO STOCK EXCHANGE-TOKYO PRO MARKET",
}
# How a provider reports a venue's usual currency: London in pence; elsewhere the major unit.
_REPORTED = {"XLON": ("GBp", "GBP", 100)}

_EQUITY_VOL, _ETF_VOL, _INDEX_VOL, _CRYPTO_VOL, _FUTURE_VOL = 0.012, 0.009, 0.009, 0.03, 0.015


@dataclass(frozen=True)
class Instrument:
    """What the demo market knows of one symbol. Immutable, so thread-safe.

    ``price`` is the level the series oscillates around, in ``currency`` as
    reported (pence for ``VOD.L``); ``factor`` reported units make one
    ``major`` unit. ``series`` seeds the price series: listings of one
    company on two venues (``SAP.DE``, ``SAP.F``) and one coin in every quote
    currency share it. ``venue`` is None for crypto and currency pairs.
    """

    symbol: str
    name: str
    asset: str  # symbols.EQUITY / INDEX / CRYPTO, or ETF / FX / FUTURE
    venue: Venue | None
    currency: str
    major: str
    factor: int
    price: float
    shares: float  # units outstanding (coins in circulation for crypto); 0 where it means nothing
    exchange: str
    country: str
    industry: str
    ipo: str
    isin: str | None = None
    series: str = ""
    vol: float = _EQUITY_VOL
    swing: float = 1.0  # scales the slow trend
    base: str = ""  # crypto: the coin; fx: the base currency
    quote: str = ""  # crypto and fx: the quote currency

    @property
    def mic(self) -> str | None:
        return self.venue.mic if self.venue is not None else None


@dataclass(frozen=True)
class Coin:
    """A crypto asset as CoinGecko lists it (``id``, upper-case ``symbol``, ``rank``)."""

    id: str
    symbol: str
    name: str
    rank: int | None  # market-cap rank; None for the long tail
    usd: float  # price level in USD
    supply: float
    series: str = ""  # another coin whose price this one tracks (wrapped tokens)


@dataclass(frozen=True)
class FxRate:
    """A rate from ``base`` to ``quote`` and the ECB publication (``date``) it comes from."""

    base: str
    quote: str
    rate: float
    date: date


def _co(name: str, exchange: str, industry: str, ipo: str, price: float, shares: float, isin: str | None = None,
        ) -> tuple[str, str, str, str, float, float, str | None]:
    return (name, exchange, industry, ipo, price, shares, isin)


_KNOWN: dict[str, tuple[str, str, str, str, float, float, str | None]] = {
    "AAPL": _co("Apple Inc", _NASDAQ, "Technology", "1980-12-12", 230.0, 15.04e9, "US0378331005"),
    "MSFT": _co("Microsoft Corp", _NASDAQ, "Technology", "1986-03-13", 420.0, 7.43e9, "US5949181045"),
    "GOOGL": _co("Alphabet Inc", _NASDAQ, "Media", "2004-08-19", 170.0, 12.2e9, "US02079K3059"),
    "AMZN": _co("Amazon.com Inc", _NASDAQ, "Retail", "1997-05-15", 190.0, 10.5e9, "US0231351067"),
    "NVDA": _co("NVIDIA Corp", _NASDAQ, "Semiconductors", "1999-01-22", 130.0, 24.5e9, "US67066G1040"),
    "TSLA": _co("Tesla Inc", _NASDAQ, "Automobiles", "2010-06-09", 250.0, 3.2e9, "US88160R1014"),
    "META": _co("Meta Platforms Inc", _NASDAQ, "Media", "2012-05-18", 560.0, 2.53e9, "US30303M1027"),
    "BRK.B": _co("Berkshire Hathaway Inc", _NYSE, "Financial Services", "1996-05-09", 450.0, 1.3e9,
                 "US0846707026"),
    "JPM": _co("JPMorgan Chase & Co", _NYSE, "Banking", "1980-03-17", 210.0, 2.85e9, "US46625H1005"),
    "V": _co("Visa Inc", _NYSE, "Financial Services", "2008-03-19", 280.0, 1.95e9, "US92826C8394"),
    "MA": _co("Mastercard Inc", _NYSE, "Financial Services", "2006-05-25", 470.0, 0.92e9, "US57636Q1040"),
    "WMT": _co("Walmart Inc", _NYSE, "Retail", "1972-08-25", 70.0, 8.04e9, "US9311421039"),
    "JNJ": _co("Johnson & Johnson", _NYSE, "Pharmaceuticals", "1944-09-25", 155.0, 2.41e9, "US4781601046"),
    "XOM": _co("Exxon Mobil Corp", _NYSE, "Energy", "1970-01-02", 115.0, 4.4e9, "US30231G1022"),
    "KO": _co("Coca-Cola Co", _NYSE, "Beverages", "1919-09-05", 63.0, 4.31e9, "US1912161007"),
    "DIS": _co("Walt Disney Co", _NYSE, "Media", "1957-11-12", 95.0, 1.81e9, "US2546871060"),
    "NFLX": _co("Netflix Inc", _NASDAQ, "Media", "2002-05-23", 650.0, 0.43e9, "US64110L1061"),
    "AMD": _co("Advanced Micro Devices Inc", _NASDAQ, "Semiconductors", "1972-09-27", 150.0, 1.62e9,
               "US0079031078"),
    "INTC": _co("Intel Corp", _NASDAQ, "Semiconductors", "1971-10-13", 30.0, 4.28e9, "US4581401001"),
    "IBM": _co("International Business Machines Corp", _NYSE, "Technology", "1915-11-11", 190.0, 0.92e9,
               "US4592001014"),
    # US listings of European and Canadian companies: a bare "SAP" is the ADR in USD, not Xetra.
    "SAP": _co("SAP SE ADR", _NYSE, "Technology", "1998-08-03", 260.0, 1.17e9, "US8030542042"),
    "ASML": _co("ASML Holding NV NY Registry Shares", _NASDAQ, "Semiconductors", "1995-03-15", 760.0, 0.39e9,
                "USN070592100"),
    "AZN": _co("AstraZeneca PLC ADR", _NASDAQ, "Pharmaceuticals", "1993-05-17", 70.0, 3.1e9, "US0463531089"),
    "SHOP": _co("Shopify Inc", _NYSE, "Technology", "2015-05-21", 110.0, 1.29e9, "CA82509L1076"),
    "RY": _co("Royal Bank of Canada", _NYSE, "Banking", "1995-10-23", 125.0, 1.41e9, "CA7800871021"),
}
_US_ETFS: dict[str, tuple[str, str, str, str, float, float, str | None]] = {
    "SPY": _co("SPDR S&P 500 ETF Trust", _ARCA, "ETF", "1993-01-22", 600.0, 0.92e9, "US78462F1030"),
    "QQQ": _co("Invesco QQQ Trust Series 1", _NASDAQ, "ETF", "1999-03-10", 520.0, 0.6e9, "US46090E1038"),
    "VOO": _co("Vanguard S&P 500 ETF", _ARCA, "ETF", "2010-09-09", 550.0, 1.2e9, "US9229083632"),
}

# Listings outside the US: (name, industry, ipo, price as reported, shares, ISIN, asset, currency, series).
# Currency None is the venue's usual one as reported (pence in London).
_INTL: dict[str, tuple[str, str, str, float, float, str, str, str | None, str]] = {
    "SAP.DE": ("SAP SE", "Technology", "1988-11-04", 240.0, 1.17e9, "DE0007164600", EQUITY, None, ""),
    "SIE.DE": ("Siemens AG", "Industrials", "1899-01-01", 200.0, 0.79e9, "DE0007236101", EQUITY, None, ""),
    "ALV.DE": ("Allianz SE", "Insurance", "1985-01-01", 300.0, 0.39e9, "DE0008404005", EQUITY, None, ""),
    "DTE.DE": ("Deutsche Telekom AG", "Telecommunications", "1996-11-18", 30.0, 4.98e9, "DE0005557508", EQUITY,
               None, ""),
    "BMW.DE": ("Bayerische Motoren Werke AG", "Automobiles", "1926-01-01", 80.0, 0.6e9, "DE0005190003", EQUITY,
               None, ""),
    "BAS.DE": ("BASF SE", "Chemicals", "1952-01-01", 45.0, 0.89e9, "DE000BASF111", EQUITY, None, ""),
    "EUNL.DE": ("iShares Core MSCI World UCITS ETF USD (Acc)", "ETF", "2009-09-25", 100.0, 0.9e9,
                "IE00B4L5Y983", ETF, None, ""),
    "SAP.F": ("SAP SE", "Technology", "1988-11-04", 240.0, 1.17e9, "DE0007164600", EQUITY, None, "SAP.DE"),
    "VOD.L": ("Vodafone Group PLC", "Telecommunications", "1988-10-26", 70.0, 25.8e9, "GB00BH4HKS39", EQUITY,
              None, ""),
    "HSBA.L": ("HSBC Holdings PLC", "Banking", "1991-07-01", 900.0, 17.8e9, "GB0005405286", EQUITY, None, ""),
    "BP.L": ("BP PLC", "Energy", "1954-01-01", 400.0, 15.9e9, "GB0007980591", EQUITY, None, ""),
    "AZN.L": ("AstraZeneca PLC", "Pharmaceuticals", "1993-05-17", 11000.0, 1.55e9, "GB0009895292", EQUITY, None,
              ""),
    "SHEL.L": ("Shell PLC", "Energy", "2005-07-20", 2600.0, 6.2e9, "GB00BP6MXD84", EQUITY, None, ""),
    "VWRA.L": ("Vanguard FTSE All-World UCITS ETF (USD) Accumulating", "ETF", "2019-07-23", 130.0, 0.12e9,
               "IE00BK5BQT80", ETF, "USD", ""),
    "VUSA.L": ("Vanguard S&P 500 UCITS ETF (GBP) Distributing", "ETF", "2012-05-22", 95.0, 0.38e9,
               "IE00B3XXRP09", ETF, "GBP", ""),
    "ISF.L": ("iShares Core FTSE 100 UCITS ETF GBP (Dist)", "ETF", "2000-04-27", 850.0, 1.4e9, "IE0005042456",
              ETF, None, ""),
    "MC.PA": ("LVMH Moet Hennessy Louis Vuitton SE", "Luxury Goods", "1987-06-03", 650.0, 0.5e9,
              "FR0000121014", EQUITY, None, ""),
    "AIR.PA": ("Airbus SE", "Aerospace", "2000-07-10", 160.0, 0.79e9, "NL0000235190", EQUITY, None, ""),
    "OR.PA": ("L'Oreal SA", "Consumer Products", "1963-01-01", 380.0, 0.535e9, "FR0000120321", EQUITY, None, ""),
    "TTE.PA": ("TotalEnergies SE", "Energy", "1991-01-01", 58.0, 2.3e9, "FR0000120271", EQUITY, None, ""),
    "ASML.AS": ("ASML Holding NV", "Semiconductors", "1995-03-15", 700.0, 0.39e9, "NL0010273215", EQUITY, None,
                ""),
    "INGA.AS": ("ING Groep NV", "Banking", "1991-03-04", 16.0, 3.2e9, "NL0011821202", EQUITY, None, ""),
    "ENEL.MI": ("Enel SpA", "Utilities", "1999-11-02", 7.0, 10.2e9, "IT0003128367", EQUITY, None, ""),
    "ISP.MI": ("Intesa Sanpaolo SpA", "Banking", "1998-01-01", 4.0, 17.8e9, "IT0000072618", EQUITY, None, ""),
    "NESN.SW": ("Nestle SA", "Food Products", "1905-01-01", 80.0, 2.6e9, "CH0038863350", EQUITY, None, ""),
    "NOVN.SW": ("Novartis AG", "Pharmaceuticals", "1996-12-20", 90.0, 2.0e9, "CH0012005267", EQUITY, None, ""),
    "ERIC-B.ST": ("Telefonaktiebolaget LM Ericsson", "Communications", "1918-01-01", 80.0, 3.3e9,
                  "SE0000108656", EQUITY, None, ""),
    "VOLV-B.ST": ("AB Volvo", "Machinery", "1935-01-01", 260.0, 2.0e9, "SE0000115446", EQUITY, None, ""),
    "RY.TO": ("Royal Bank of Canada", "Banking", "1995-10-23", 170.0, 1.41e9, "CA7800871021", EQUITY, None, ""),
    "SHOP.TO": ("Shopify Inc", "Technology", "2015-05-21", 150.0, 1.29e9, "CA82509L1076", EQUITY, None, ""),
    "0700.HK": ("Tencent Holdings Ltd", "Media", "2004-06-16", 450.0, 9.2e9, "KYG875721634", EQUITY, None, ""),
    "9988.HK": ("Alibaba Group Holding Ltd", "Retail", "2019-11-26", 100.0, 19.0e9, "KYG017191142", EQUITY, None,
                ""),
    "7203.T": ("Toyota Motor Corp", "Automobiles", "1949-05-16", 2800.0, 13.0e9, "JP3633400001", EQUITY, None,
               ""),
    "6758.T": ("Sony Group Corp", "Technology", "1958-12-01", 3300.0, 6.1e9, "JP3435000009", EQUITY, None, ""),
}

# Indices: (name, MIC of the venue whose calendar and hours it follows, currency, level).
_INDICES: dict[str, tuple[str, str, str, float]] = {
    "^GSPC": ("S&P 500", "XNYS", "USD", 6000.0),
    "^DJI": ("Dow Jones Industrial Average", "XNYS", "USD", 43000.0),
    "^IXIC": ("NASDAQ Composite", "XNYS", "USD", 19000.0),
    "^NDX": ("NASDAQ 100", "XNYS", "USD", 21000.0),
    "^RUT": ("Russell 2000", "XNYS", "USD", 2200.0),
    "^VIX": ("CBOE Volatility Index", "XNYS", "USD", 17.0),
    "^GDAXI": ("DAX Performance Index", "XETR", "EUR", 20000.0),
    "^STOXX50E": ("EURO STOXX 50", "XETR", "EUR", 5000.0),
    "^FTSE": ("FTSE 100", "XLON", "GBP", 8300.0),
    "^FCHI": ("CAC 40", "XPAR", "EUR", 7500.0),
    "^AEX": ("AEX Index", "XAMS", "EUR", 900.0),
    "^SSMI": ("Swiss Market Index", "XSWX", "CHF", 12000.0),
    "^OMX": ("OMX Stockholm 30", "XSTO", "SEK", 2500.0),
    "^GSPTSE": ("S&P/TSX Composite", "XTSE", "CAD", 25000.0),
    "^HSI": ("Hang Seng Index", "XHKG", "HKD", 20000.0),
    "^N225": ("Nikkei 225", "XTKS", "JPY", 39000.0),
}

# Futures (Yahoo's ``=F``): (name, level in USD).
_FUTURES: dict[str, tuple[str, float]] = {
    "ES=F": ("E-Mini S&P 500", 6000.0), "NQ=F": ("Nasdaq 100 E-Mini", 21000.0), "YM=F": ("Mini Dow Jones", 43000.0),
    "GC=F": ("Gold", 2600.0), "SI=F": ("Silver", 30.0), "CL=F": ("Crude Oil", 72.0),
    "NG=F": ("Natural Gas", 3.0), "HG=F": ("Copper", 4.3),
}

# The largest coins, plus namesakes that make a ticker ambiguous (CoinGecko lists several "SOL").
COINS: tuple[Coin, ...] = (
    Coin("bitcoin", "BTC", "Bitcoin", 1, 65000.0, 19.8e6),
    Coin("ethereum", "ETH", "Ethereum", 2, 3200.0, 120.4e6),
    Coin("tether", "USDT", "Tether", 3, 1.0, 140e9),
    Coin("ripple", "XRP", "XRP", 4, 0.6, 57e9),
    Coin("binancecoin", "BNB", "BNB", 5, 580.0, 145e6),
    Coin("solana", "SOL", "Solana", 6, 150.0, 470e6),
    Coin("usd-coin", "USDC", "USDC", 7, 1.0, 44e9),
    Coin("dogecoin", "DOGE", "Dogecoin", 8, 0.15, 147e9),
    Coin("cardano", "ADA", "Cardano", 9, 0.45, 35e9),
    Coin("tron", "TRX", "TRON", 10, 0.2, 86e9),
    Coin("avalanche-2", "AVAX", "Avalanche", 12, 30.0, 410e6),
    Coin("chainlink", "LINK", "Chainlink", 13, 15.0, 630e6),
    Coin("shiba-inu", "SHIB", "Shiba Inu", 15, 0.00002, 589e12),
    Coin("polkadot", "DOT", "Polkadot", 16, 6.5, 1.5e9),
    Coin("litecoin", "LTC", "Litecoin", 18, 80.0, 75e6),
    Coin("wrapped-solana", "SOL", "Wrapped SOL", 1450, 150.0, 9e6, series="solana"),
    Coin("ethereum-wormhole", "ETH", "Ethereum (Wormhole)", None, 3200.0, 0.05e6, series="ethereum"),
    Coin("batcat", "BTC", "batcat", 3210, 0.0004, 1e9),
)
COINS_BY_ID: Mapping[str, Coin] = {coin.id: coin for coin in COINS}
_STABLE = frozenset({"USDT", "USDC", "BUSD", "FDUSD"})
_CRYPTO_EXCHANGES = frozenset({"BINANCE", "COINBASE", "KRAKEN", "BITSTAMP", "GEMINI", "BITFINEX", "HUOBI",
                               "OKX", "BYBIT", "KUCOIN", "POLONIEX"})
_PAIR_QUOTES = ("USDT", "USDC", "BUSD", "USD", "EUR", "GBP", "JPY", "CHF", "CAD", "AUD", "BTC", "ETH")

# -- ECB reference rates ---------------------------------------------------------------------------

# The currencies the ECB publishes against EUR: (centre, trend amplitude, decimals as the ECB writes them).
_ECB: dict[str, tuple[float, float, int]] = {
    "USD": (1.12, 0.055, 4), "JPY": (162.0, 0.05, 2), "BGN": (1.95583, 0.0, 4), "CZK": (25.1, 0.02, 3),
    "DKK": (7.46, 0.0004, 4), "GBP": (0.855, 0.02, 5), "HUF": (400.0, 0.03, 2), "PLN": (4.28, 0.02, 4),
    "RON": (4.97, 0.005, 4), "SEK": (11.3, 0.03, 4), "CHF": (0.945, 0.025, 4), "ISK": (150.0, 0.02, 2),
    "NOK": (11.6, 0.03, 4), "TRY": (38.0, 0.08, 4), "AUD": (1.66, 0.035, 4), "BRL": (6.2, 0.06, 4),
    "CAD": (1.52, 0.03, 4), "CNY": (8.05, 0.0, 4), "HKD": (8.75, 0.0, 4), "IDR": (18000.0, 0.04, 2),
    "ILS": (4.05, 0.04, 4), "INR": (95.0, 0.04, 4), "KRW": (1550.0, 0.04, 2), "MXN": (21.0, 0.05, 4),
    "MYR": (4.85, 0.03, 4), "NZD": (1.85, 0.035, 4), "PHP": (63.5, 0.03, 3), "SGD": (1.47, 0.015, 4),
    "THB": (38.0, 0.03, 3), "ZAR": (20.5, 0.05, 4),
}
_BGN_LAST = date(2025, 12, 31)  # Bulgaria adopted the euro on 2026-01-01: the ECB stopped publishing BGN
_ECB_PUBLISHES = dtime(16, 0)  # Frankfurt time, on TARGET business days
_FRANKFURT = ZoneInfo("Europe/Berlin")
_ECB_FIRST = date(1999, 1, 4)

_SYLLABLES = ("Ar", "Bel", "Cor", "Dyn", "Ev", "Fal", "Gal", "Hel", "Ion", "Jun", "Kel", "Lum", "Mer",
              "Nov", "Or", "Pax", "Quan", "Ros", "Syn", "Tor", "Ul", "Ver", "Wyn", "Xen", "Yor", "Zen")
_ENDINGS = ("a", "ex", "ia", "on", "ix", "is", "o", "um", "ara", "eon")
_SUFFIXES = ("Holdings", "Corp", "Inc", "Group", "Technologies", "Industries", "Systems",
             "Therapeutics", "Energy", "Financial")
_VENUE_SUFFIXES = {"DE": ("AG", "SE", "GmbH & Co KGaA"), "GB": ("PLC", "Group PLC"), "FR": ("SA", "SE"),
                   "NL": ("NV",), "IT": ("SpA",), "CH": ("AG", "SA"), "SE": ("AB",), "CA": ("Inc", "Corp"),
                   "HK": ("Holdings Ltd", "Group Ltd"), "JP": ("Corp", "Co Ltd")}
_INDUSTRIES = ("Technology", "Industrials", "Biotechnology", "Energy", "Financial Services",
               "Retail", "Utilities", "Semiconductors", "Media", "Real Estate")
_HEADLINES = (
    "{name} shares move as traders weigh the sector outlook",
    "Analysts revisit their price targets for {name}",
    "{name} sets a date for its quarterly results",
    "What {name}'s latest filing tells investors",
    "{name} in focus after a volume spike",
    "{name} expands its partnership programme",
    "Options traders position for {name} earnings",
)
# Price level ranges (reported units) of generated listings per currency: yen and pence run larger.
_LEVELS = {"JPY": (300.0, 30000.0), "GBp": (20.0, 5000.0), "HKD": (2.0, 500.0), "SEK": (20.0, 2000.0)}
_FX_YAHOO = re.compile(r"([A-Z]{3})([A-Z]{3})?=X")
_FX_FINNHUB = re.compile(r"(?:OANDA|FX|FXCM|FOREX|IC MARKETS):([A-Z]{3})[_/]?([A-Z]{3})")


def _unit(*parts: object) -> float:
    """A uniform number in [0, 1) fixed by ``parts``."""
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _gauss(*parts: object) -> float:
    """A standard normal number fixed by ``parts`` (Box-Muller)."""
    u1 = max(_unit(*parts, "g1"), 1e-12)
    return math.sqrt(-2 * math.log(u1)) * math.cos(2 * math.pi * _unit(*parts, "g2"))


def _pick(options: tuple[str, ...], *parts: object) -> str:
    return options[int(_unit(*parts) * len(options))]


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _midnight(day: date) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()


def _decimals(magnitude: float, asset: str) -> int:
    if asset not in (CRYPTO, FX) or magnitude >= 100:
        return 2
    if magnitude >= 1:
        return 4
    return 4 - math.floor(math.log10(max(magnitude, 1e-12)))


def round_price(value: float, asset: str) -> float:
    """A price as a provider writes it: cents, or enough decimals for coins and currency rates under 100."""
    return round(value, _decimals(abs(value), asset))


@functools.lru_cache(maxsize=65536)
def _trend(series: str, x: int) -> float:
    return sum(
        amp * math.sin(2 * math.pi * x / period + 2 * math.pi * _unit(series, "phase", period))
        for period, amp in ((251, 0.12), (67, 0.05), (23, 0.025))
    )


@functools.lru_cache(maxsize=65536)
def _series_close(series: str, x: int, level: float, swing: float, vol: float) -> float:
    """The unrounded close of ``series`` on day ordinal ``x``."""
    return level * math.exp(swing * _trend(series, x) + vol * _gauss(series, "close", x))


@functools.lru_cache(maxsize=4096)
def is_target_day(day: date) -> bool:
    """True on a TARGET business day, when the ECB publishes its reference rates."""
    return _target_day(day) and day >= _ECB_FIRST


@functools.lru_cache(maxsize=65536)
def _ecb_rate(currency: str, x: int) -> float:
    """EUR -> ``currency`` as published on day ordinal ``x``, rounded as the ECB writes it."""
    centre, amplitude, decimals = _ECB[currency]
    if currency == "HKD":  # pegged to USD in its band
        value = _ecb_rate("USD", x) * 7.80 * math.exp(0.004 * math.sin(2 * math.pi * x / 173))
    elif currency == "CNY":  # managed against USD
        value = _ecb_rate("USD", x) * 7.2 * math.exp(0.02 * math.sin(2 * math.pi * x / 211 + 1.3))
    elif amplitude == 0:
        value = centre
    else:
        trend = sum(
            weight * math.sin(2 * math.pi * x / period + 2 * math.pi * _unit(currency, "fxphase", period))
            for period, weight in ((311, 0.6), (97, 0.3), (29, 0.1))
        )
        value = centre * math.exp(amplitude * trend + amplitude * 0.04 * _gauss(currency, "fx", x))
    return round(value, decimals)


def _ecb_currencies(day: date) -> tuple[str, ...]:
    return tuple(sorted(c for c in _ECB if c != "BGN" or day <= _BGN_LAST))


def _coin_for(symbol: str) -> Coin | None:
    """The coin a ticker names: of several namesakes, the one with the best market-cap rank."""
    ranked = [coin for coin in COINS if coin.symbol == symbol]
    ranked.sort(key=lambda coin: coin.rank if coin.rank is not None else 10**9)
    return ranked[0] if ranked else None


def _crypto_parts(symbol: str) -> tuple[str, str] | None:
    """(coin, quote) of ``BTC-USD`` or Finnhub's ``BINANCE:BTCUSDT`` / ``COINBASE:BTC-USD``."""
    info = listing(symbol)
    if info.asset == CRYPTO and info.quote is not None:
        return info.base, info.quote
    exchange, colon, pair = symbol.partition(":")
    if not colon or exchange not in _CRYPTO_EXCHANGES:
        return None
    pair = pair.replace("-", "").replace("_", "").replace("/", "")
    for quote in _PAIR_QUOTES:
        if pair.endswith(quote) and len(pair) > len(quote) + 1:
            return pair[: -len(quote)], quote
    return None


def _fx_parts(symbol: str) -> tuple[str, str] | None:
    """(base, quote) of Yahoo's ``EURUSD=X`` (``JPY=X`` is USD/JPY) or Finnhub's ``OANDA:EUR_USD``."""
    yahoo = _FX_YAHOO.fullmatch(symbol)
    if yahoo is not None:
        base, quote = (yahoo.group(1), yahoo.group(2)) if yahoo.group(2) else ("USD", yahoo.group(1))
    else:
        finnhub = _FX_FINNHUB.fullmatch(symbol)
        if finnhub is None:
            return None
        base, quote = finnhub.group(1), finnhub.group(2)
    known = set(_ECB) | {"EUR"}
    return (base, quote) if base in known and quote in known and base != quote else None


@functools.lru_cache(maxsize=1024)
def _coin_instrument(coin: Coin, quote: str, symbol: str = "") -> Instrument:
    symbol = symbol or f"{coin.symbol}-{quote}"
    return Instrument(symbol, f"{coin.name} {quote}", CRYPTO, None, quote, quote, 1, coin.usd, coin.supply,
                      symbol.partition(":")[0] if ":" in symbol else "CRYPTO", "", "Crypto", "2009-01-03",
                      None, coin.series or coin.id, _CRYPTO_VOL, 1.8, coin.symbol, quote)


def _generated_name(symbol: str, country: str) -> str:
    suffixes = _VENUE_SUFFIXES.get(country, _SUFFIXES)
    return (_pick(_SYLLABLES, symbol, "n1") + _pick(_SYLLABLES, symbol, "n2").lower()
            + _pick(_ENDINGS, symbol, "n3") + " " + _pick(suffixes, symbol, "n4"))


def _generated_ipo(symbol: str) -> str:
    year = 1975 + int(_unit(symbol, "ipo") * 47)
    return f"{year}-{1 + int(_unit(symbol, 'ipom') * 12):02d}-{1 + int(_unit(symbol, 'ipod') * 28):02d}"


def _level(symbol: str, low: float, high: float) -> float:
    return round(low * math.exp(_unit(symbol, "price") * math.log(high / low)), 2)


def _shares(symbol: str) -> float:
    return float(int(20e6 * math.exp(_unit(symbol, "shares") * math.log(200))))


@functools.lru_cache(maxsize=8192)
def _instrument(symbol: str) -> Instrument:
    """What ``symbol`` names (see the module docstring); never fails."""
    us = _KNOWN.get(symbol) or _US_ETFS.get(symbol)
    if us is not None:
        name, exchange, industry, ipo, price, shares, isin = us
        asset = ETF if symbol in _US_ETFS else EQUITY
        return Instrument(symbol, name, asset, US, "USD", "USD", 1, price, shares, exchange, "US", industry, ipo,
                          isin, symbol, _ETF_VOL if asset == ETF else _EQUITY_VOL)
    if symbol.startswith("^"):
        name, mic, currency, level = _INDICES.get(symbol) or (
            f"{symbol[1:]} Index", "XNYS", "USD", _level(symbol, 1000.0, 20000.0))
        venue = BY_MIC[mic]
        vol, swing = (0.05, 1.5) if symbol == "^VIX" else (_INDEX_VOL, 0.5)
        return Instrument(symbol, name, INDEX, venue, currency, currency, 1, level, 0.0,
                          EXCHANGE_NAMES.get(mic, "INDEX"), venue.country, "Index", "1957-03-04", None, symbol, vol,
                          swing)
    crypto = _crypto_parts(symbol)
    if crypto is not None:
        base, quote = crypto
        coin = _coin_for(base)
        if coin is None:
            coin = Coin(base.lower(), base, f"{base.title()}coin", None, _level(base, 0.01, 10.0), 1e9)
        return _coin_instrument(coin, quote, symbol)
    fx = _fx_parts(symbol)
    if fx is not None:
        base, quote = fx
        return Instrument(symbol, f"{base}/{quote}", FX, None, quote, quote, 1, 1.0, 0.0, "FOREX", "", "Currency",
                          "1999-01-04", None, f"{base}/{quote}", 0.0, 0.0, base, quote)
    if symbol.endswith("=F"):
        name, level = _FUTURES.get(symbol) or (f"{symbol[:-2]} Futures", _level(symbol, 10.0, 1000.0))
        return Instrument(symbol, name, FUTURE, US, "USD", "USD", 1, level, 0.0, "CME", "US", "Futures",
                          "2000-01-01", None, symbol, _FUTURE_VOL, 0.8)
    info = listing(symbol)
    venue = info.venue or US
    intl = _INTL.get(symbol)
    if intl is not None:
        name, industry, ipo, price, shares, isin, asset, priced_in, series = intl
        reported = ((priced_in, priced_in, 1) if priced_in
                    else _REPORTED.get(venue.mic, (venue.currency, venue.currency, 1)))
        return Instrument(symbol, name, asset, venue, reported[0], reported[1], reported[2], price, shares,
                          EXCHANGE_NAMES[venue.mic], venue.country, industry, ipo, isin, series or symbol,
                          _ETF_VOL if asset == ETF else _EQUITY_VOL)
    if venue is US:
        exchange = _NASDAQ if _unit(symbol, "exch") < 0.5 else _NYSE
        return Instrument(symbol, _generated_name(symbol, ""), EQUITY, US, "USD", "USD", 1,
                          _level(symbol, 5.0, 500.0), _shares(symbol), exchange, "US",
                          _pick(_INDUSTRIES, symbol, "ind"), _generated_ipo(symbol), None, symbol)
    currency, major, factor = _REPORTED.get(venue.mic, (venue.currency, venue.currency, 1))
    low, high = _LEVELS.get(currency, (5.0, 500.0))
    return Instrument(symbol, _generated_name(symbol, venue.country), EQUITY, venue, currency, major, factor,
                      _level(symbol, low, high), _shares(symbol), EXCHANGE_NAMES[venue.mic], venue.country,
                      _pick(_INDUSTRIES, symbol, "ind"), _generated_ipo(symbol), None, symbol)


class DemoMarket:
    """The deterministic generator behind :class:`DemoProvider` and the fake upstreams.

    Pure functions of their arguments, so thread-safe. ``marked=True`` labels
    names and headlines as demo; the fake upstream passes False to look real.
    Prices are in the listing's currency as a provider reports it (pence for
    London shares): :meth:`currency` says how to get the major unit.
    Symbols matching one of ``unknown`` (default ``ZZZZ*`` and ``XXXX``) are not found.
    """

    def __init__(self, *, marked: bool = True, unknown: tuple[str, ...] = UNKNOWN_PATTERNS) -> None:
        self.marked = marked
        self.unknown_patterns = unknown

    def is_unknown(self, symbol: str) -> bool:
        """True for symbols the demo (and by default the fake upstream) treat as not found."""
        return any(fnmatchcase(symbol, pattern) for pattern in self.unknown_patterns)

    def check(self, symbol: str) -> None:
        if self.is_unknown(symbol):
            raise SymbolNotFound(f"demo knows no symbol {symbol}", symbol=symbol)

    # What a symbol is

    def instrument(self, symbol: str) -> Instrument:
        """What ``symbol`` names: asset class, venue, currency, price level, ISIN."""
        return _instrument(symbol)

    def company(self, symbol: str) -> Instrument:
        """The instrument (``name``, ``exchange``, ``industry``, ``ipo``, ``price`` level, ``shares``)."""
        return _instrument(symbol)

    def currency(self, symbol: str) -> tuple[str, str, int]:
        """(currency as reported, major currency, factor): ``VOD.L`` -> ("GBp", "GBP", 100)."""
        inst = _instrument(symbol)
        return inst.currency, inst.major, inst.factor

    def display_name(self, symbol: str) -> str:
        name = _instrument(symbol).name
        return f"{name} (demo)" if self.marked else name

    def isin(self, symbol: str) -> str | None:
        return _instrument(symbol).isin

    def listings(self) -> tuple[str, ...]:
        """Every named listing of the tables (US and elsewhere; not generated ones)."""
        return (*_KNOWN, *_US_ETFS, *_INTL)

    def listings_by_isin(self, isin: str) -> tuple[str, ...]:
        """The named listings of one ISIN (``DE0007164600`` -> SAP.DE, SAP.F)."""
        return tuple(symbol for symbol in self.listings() if _instrument(symbol).isin == isin)

    def lookup(self, isin: str) -> dict[str, Any]:
        """The named listings of ``isin`` as the ``lookup`` kind serves them (venues in ``VENUES`` order).

        The demo has no FIGIs (``figi`` is null); an ISIN none of its listings has is not found.
        """
        symbols = [s for s in self.listings_by_isin(isin) if not self.is_unknown(s)]
        if not symbols:
            raise SymbolNotFound(f"demo knows no listing of {isin}", isin=isin)
        order = {venue.mic: index for index, venue in enumerate(VENUES)}
        items = []
        for symbol in symbols:
            inst = _instrument(symbol)
            mic = _US_MICS.get(inst.exchange) if inst.venue is US else inst.mic
            item: dict[str, Any] = {"symbol": symbol, "name": self.display_name(symbol), "exchange": mic,
                                    "figi": None}
            if is_code(inst.major):
                item["currency"] = inst.major
            items.append((order.get(inst.venue.mic if inst.venue else "", len(order)), symbol, item))
        return {"isin": isin, "listings": [item for _, _, item in sorted(items, key=lambda t: t[:2])]}

    def indices(self) -> tuple[str, ...]:
        return tuple(_INDICES)

    def coins(self) -> tuple[Coin, ...]:
        return COINS

    # Calendar and sessions

    def is_trading_day(self, symbol: str, day: date) -> bool:
        """Whether ``symbol`` has a bar on ``day``: its venue's calendar; weekdays for FX; always for crypto."""
        inst = _instrument(symbol)
        return self._trades(inst, day)

    @staticmethod
    def _trades(inst: Instrument, day: date) -> bool:
        if inst.asset == CRYPTO:
            return True
        if inst.venue is None:
            return day.weekday() < 5
        return inst.venue.is_trading_day(day)

    def _previous(self, inst: Instrument, day: date) -> date:
        day -= timedelta(days=1)
        while not self._trades(inst, day):
            day -= timedelta(days=1)
        return day

    @staticmethod
    def _session(inst: Instrument, day: date) -> tuple[float, float, tuple[float, float] | None]:
        """(open, close, lunch break) of ``day``'s session as unix times."""
        venue = inst.venue
        if venue is None:
            start = _midnight(day)
            return start, start + 86400.0, None
        zone = venue.zone
        start = datetime.combine(day, venue.opens, tzinfo=zone).timestamp()
        end = datetime.combine(day, venue.closes, tzinfo=zone).timestamp()
        lunch = None
        if venue.lunch is not None:
            lunch = (datetime.combine(day, venue.lunch[0], tzinfo=zone).timestamp(),
                     datetime.combine(day, venue.lunch[1], tzinfo=zone).timestamp())
        return start, end, lunch

    def session_day(self, now: float, symbol: str = "AAPL") -> date:
        """The trading day the quote of ``symbol`` at ``now`` belongs to."""
        return self._session_day(_instrument(symbol), now)

    def _session_day(self, inst: Instrument, now: float) -> date:
        zone = inst.venue.zone if inst.venue is not None else UTC
        today = datetime.fromtimestamp(now, zone).date()
        if self._trades(inst, today) and now >= self._session(inst, today)[0]:
            return today
        return self._previous(inst, today)

    def session(self, symbol: str, day: date) -> tuple[float, float]:
        """(open, close) of ``symbol``'s session on ``day`` as unix times."""
        start, end, _ = self._session(_instrument(symbol), day)
        return start, end

    # Prices

    def _raw_close(self, inst: Instrument, day: date) -> float:
        x = day.toordinal()
        if inst.asset == FX:
            at = _midnight(day) + 86400.0
            return self.fx_rate(inst.base, inst.quote, at).rate
        if inst.asset == CRYPTO:
            usd = _series_close(inst.series, x, inst.price, inst.swing, inst.vol)
            return usd * self._crypto_per_usd(inst.quote, day, None)
        return _series_close(inst.series, x, inst.price, inst.swing, inst.vol)

    def _raw_open(self, inst: Instrument, day: date) -> float:
        previous = self._raw_close(inst, self._previous(inst, day))
        if inst.asset in (CRYPTO, FX):
            return previous  # round the clock: no overnight gap
        return previous * math.exp(inst.vol / 3 * _gauss(inst.series, "gap", day.toordinal()))

    def _crypto_per_usd(self, quote: str, day: date, at: float | None) -> float:
        """Units of ``quote`` per USD at the end of ``day`` (or at ``at``): ECB rates, coins at their own price."""
        if quote == "USD" or quote in _STABLE:
            return 1.0
        if quote in ("BTC", "ETH"):
            coin = _instrument(f"{quote}-USD")
            if at is None:
                usd = _series_close(coin.series, day.toordinal(), coin.price, coin.swing, coin.vol)
            else:
                usd = self._usd_at(coin, day, at)
            return 1.0 / usd
        when = at if at is not None else _midnight(day) + 86400.0
        return self.fx_rate("USD", quote, when).rate

    def _usd_at(self, inst: Instrument, day: date, at: float) -> float:
        """A coin's unrounded USD price at ``at`` during the UTC ``day``."""
        x = day.toordinal()
        close = _series_close(inst.series, x, inst.price, inst.swing, inst.vol)
        open_ = _series_close(inst.series, x - 1, inst.price, inst.swing, inst.vol)
        f = min(1.0, max(0.0, (at - _midnight(day)) / 86400.0))
        return max(1e-12, open_ + (close - open_) * f + self._wiggle(inst.series, open_, at, f))

    @staticmethod
    def _wiggle(series: str, level: float, at: float, f: float) -> float:
        return 0.004 * level * math.sin(at / 60 / 47 + 6.3 * _unit(series, "w")) * 2 * math.sqrt(f * (1 - f))

    def candle(self, symbol: str, day: date) -> Candle:
        """The daily bar of ``day`` (a trading day of ``symbol``)."""
        return self._candle(_instrument(symbol), day)

    def _candle(self, inst: Instrument, day: date) -> Candle:
        return _cached_candle(inst, day)

    def _build_candle(self, inst: Instrument, day: date) -> Candle:
        x = day.toordinal()
        o, c = round_price(self._raw_open(inst, day), inst.asset), round_price(self._raw_close(inst, day), inst.asset)
        spread = inst.vol if inst.asset != FX else 0.003
        high = round_price(max(o, c) * (1 + spread * _unit(inst.series, "hi", x)), inst.asset)
        low = round_price(min(o, c) * (1 - spread * _unit(inst.series, "lo", x)), inst.asset)
        if inst.asset == FX:
            volume = 0
        else:
            base_volume = inst.shares * 0.006 if inst.shares and inst.asset != CRYPTO else 2e6
            volume = int(base_volume * (0.6 + _unit(inst.symbol, "vol", x)))
        return Candle(date=day.isoformat(), open=o, high=max(high, o, c), low=min(low, o, c), close=c,
                      volume=volume)

    def quote(self, symbol: str, now: float) -> Quote:
        """The quote at ``now``: moves from the session open to its close over the session."""
        self.check(symbol)
        return self._quote(_instrument(symbol), now)

    def _quote(self, inst: Instrument, now: float) -> Quote:
        now = math.floor(now / 60) * 60  # a new price once a minute
        day = self._session_day(inst, now)
        start, end, lunch = self._session(inst, day)
        stamp = min(max(now, start), end)
        if lunch is not None and lunch[0] <= stamp < lunch[1]:
            stamp = lunch[0]
        trading = (end - start) - (lunch[1] - lunch[0] if lunch else 0.0)
        elapsed = stamp - start
        if lunch is not None and stamp >= lunch[1]:
            elapsed -= lunch[1] - lunch[0]
        f = min(1.0, max(0.0, elapsed / trading))
        bar = self._candle(inst, day)
        previous = self._candle(inst, self._previous(inst, day)).close
        asset = inst.asset
        if asset == CRYPTO and f < 1.0:
            price = round_price(self._usd_at(inst, day, stamp) * self._crypto_per_usd(inst.quote, day, stamp), asset)
        else:
            wiggle = self._wiggle(inst.series, bar.open, stamp, f) / (8 if asset == FX else 1)
            price = round_price(max(1e-8, bar.open + (bar.close - bar.open) * f + wiggle), asset)
        high = round_price(max(bar.open, price) + (bar.high - max(bar.open, bar.close)) * f, asset)
        low = round_price(min(bar.open, price) - (min(bar.open, bar.close) - bar.low) * f, asset)
        floor = 0.01 if asset not in (CRYPTO, FX) else 1e-8
        change = round(price - previous, _decimals(previous, asset))
        return Quote(
            symbol=inst.symbol,
            price=price,
            change=change,
            change_percent=round(change / previous * 100, 4),
            high=max(high, price, bar.open),
            low=max(min(floor, price), min(low, price, bar.open)),
            open=bar.open,
            previous_close=previous,
            timestamp=int(stamp),
        )

    def history(self, symbol: str, now: float, days: int = 100) -> History:
        """``days`` bars, oldest first, ending the trading day before the current session."""
        self.check(symbol)
        inst = _instrument(symbol)
        day = self._session_day(inst, now)
        candles = []
        for _ in range(days):
            day = self._previous(inst, day)
            candles.append(self._candle(inst, day))
        return History(symbol=symbol, candles=tuple(reversed(candles)))

    def candles_between(self, symbol: str, start: float, end: float) -> list[Candle]:
        """Completed bars dated within [start, end] (Finnhub's candle window)."""
        self.check(symbol)
        inst = _instrument(symbol)
        day, first = self._previous(inst, self._session_day(inst, end)), _utc(start).date()
        out = []
        while day >= first:
            out.append(self._candle(inst, day))
            day = self._previous(inst, day)
        return out[::-1]

    def coin_quote(self, coin_id: str, quote: str, now: float) -> Quote:
        """A coin's quote in ``quote`` by its CoinGecko id (namesakes of one ticker differ)."""
        return self._quote(_coin_instrument(COINS_BY_ID[coin_id], quote.upper()), now)

    def coin_candle(self, coin_id: str, quote: str, day: date) -> Candle:
        """A coin's UTC-day bar in ``quote`` by its CoinGecko id."""
        return self._candle(_coin_instrument(COINS_BY_ID[coin_id], quote.upper()), day)

    # Company data

    def profile(self, symbol: str, now: float) -> Profile:
        """The listing's profile; currency as reported, market cap in the major unit."""
        self.check(symbol)
        inst = _instrument(symbol)
        price = (self.quote(symbol, now).previous_close or inst.price) / inst.factor
        return Profile(
            symbol=symbol,
            name=self.display_name(symbol),
            exchange=inst.exchange,
            currency=inst.currency,
            country=inst.country or None,
            industry=inst.industry,
            ipo=inst.ipo,
            market_cap=float(round(price * inst.shares, -6)),
            shares_outstanding=inst.shares,
            logo=None,
            weburl=f"https://example.com/demo/{symbol.lower()}",
            phone=None,
            description=(f"Demo data for {symbol}, generated by stockcache; not a real company record."
                         if self.marked else None),
        )

    def metrics(self, symbol: str, now: float) -> dict[str, Any]:
        """``{"symbol", "metrics"}`` in the normalised names of ``providers.base.METRIC_NAMES``."""
        self.check(symbol)
        inst = _instrument(symbol)
        closes = [c.close for c in self.history(symbol, now, 100).candles]
        price = closes[-1]
        pe = round(10 + 35 * _unit(symbol, "pe"), 2)
        return {
            "symbol": symbol,
            "metrics": {
                "52_week_high": round(max(closes) * (1 + 0.08 * _unit(symbol, "52h")), 2),
                "52_week_low": round(min(closes) * (1 - 0.12 * _unit(symbol, "52l")), 2),
                "beta": round(0.6 + 1.2 * _unit(symbol, "beta"), 4),
                "market_cap": float(round(price / inst.factor * inst.shares, -6)),
                "pe_ratio": pe,
                "eps": round(price / pe, 2),
                "dividend_yield": round(3 * _unit(symbol, "div") ** 2, 4),
            },
        }

    def news(self, symbol: str, start: float, end: float, *, limit: int = 6, per_day: int = 1) -> News:
        """At most ``limit`` articles published within [start, end], newest first.

        About 0.8 articles a day per ``per_day`` (a wire with more sources writes more).
        """
        self.check(symbol)
        name = _instrument(symbol).name
        articles: list[NewsItem] = []
        day = _utc(end).date()
        while len(articles) < limit:
            midnight = _midnight(day)
            if midnight + 86400 <= start:
                break
            x = day.toordinal()
            found = []
            for k in range(per_day):
                seed = (symbol,) if k == 0 else (symbol, k)
                if _unit(*seed, "news?", x) >= 0.8:
                    continue
                hour, minute = 7 + int(_unit(*seed, "newsh", x) * 15), int(_unit(*seed, "newsm", x) * 60)
                ts = midnight + 3600 * hour + 60 * minute
                if start <= ts <= end:
                    headline = _pick(_HEADLINES, *seed, "headline", x).format(name=name)
                    found.append(NewsItem(
                        headline=f"[demo] {headline}" if self.marked else headline,
                        summary=("Demo article generated by stockcache; not real news."
                                 if self.marked else f"{headline}. More inside."),
                        url=f"https://example.com/demo/news/{symbol.lower()}/{day:%Y%m%d}" + (f"-{k}" if k else ""),
                        source="Demo Wire" if self.marked else "Example Wire",
                        published_at=iso_utc(ts),
                        image=None,
                    ))
            found.sort(key=lambda item: item.published_at, reverse=True)
            articles.extend(found[: limit - len(articles)])
            day -= timedelta(days=1)
        return News(symbol=symbol, articles=tuple(articles))

    def search(self, q: str) -> list[dict[str, str]]:
        """Named listings and indices whose symbol or name contains ``q``; else ``q`` itself if it is a symbol."""
        needle = q.strip().upper()
        hits = []
        for symbol in (*self.listings(), *_INDICES):
            inst = _instrument(symbol)
            if needle in symbol or needle in inst.name.upper():
                kind = {ETF: "ETF", INDEX: "Index"}.get(inst.asset, "Common Stock")
                hits.append({"symbol": symbol, "name": self.display_name(symbol), "type": kind})
        hits.sort(key=lambda hit: (hit["symbol"] != needle, hit["symbol"].partition(".")[0] != needle,
                                   hit["symbol"]))
        if not hits and _looks_like_symbol(needle) and not self.is_unknown(needle):
            hits = [{"symbol": needle, "name": self.display_name(needle), "type": "Common Stock"}]
        return hits[:10]

    # ECB reference rates

    def ecb_currencies(self, day: date) -> tuple[str, ...]:
        """The currencies the ECB published against EUR on ``day`` (EUR itself not included)."""
        return _ecb_currencies(day)

    def ecb_publication(self, day: date, *, now: float | None = None) -> date:
        """The publication in force for ``day``: the last TARGET business day on or before it.

        With ``now``, only publications already made by then (16:00 Frankfurt time) count.
        """
        for _ in range(15):
            if is_target_day(day) and (now is None or self._published_at(day) <= now):
                return day
            day -= timedelta(days=1)
        raise ValueError(f"no reference rates were published within 14 days before {day}")

    @staticmethod
    def _published_at(day: date) -> float:
        return datetime.combine(day, _ECB_PUBLISHES, tzinfo=_FRANKFURT).timestamp()

    def ecb_rates(self, day: date) -> dict[str, float]:
        """EUR -> currency as published on TARGET business day ``day`` (ValueError on other days)."""
        if not is_target_day(day):
            raise ValueError(f"no reference rates were published on {day}")
        return {currency: _ecb_rate(currency, day.toordinal()) for currency in _ecb_currencies(day)}

    def ecb_latest(self, now: float) -> tuple[date, dict[str, float]]:
        """The newest publication at ``now`` and its rates."""
        day = self.ecb_publication(_utc(now).date(), now=now)
        return day, self.ecb_rates(day)

    def fx_rate(self, base: str, quote: str, at: float) -> FxRate:
        """``base`` -> ``quote`` from the publication in force at ``at`` (a cross rate via EUR, unrounded)."""
        day, rates = self.ecb_latest(at)
        rates = {**rates, "EUR": 1.0}
        try:
            return FxRate(base, quote, rates[quote] / rates[base], day)
        except KeyError as exc:
            raise ValueError(f"no reference rate for {exc.args[0]} was published on {day}") from None


# A bar is a pure function of (instrument, day), the same for every DemoMarket: one shared cache
# (a year of bars for a hundred listings) makes history and the fakes' batches cheap.
_BARS = DemoMarket()


@functools.lru_cache(maxsize=32768)
def _cached_candle(inst: Instrument, day: date) -> Candle:
    return _BARS._build_candle(inst, day)


def _looks_like_symbol(text: str) -> bool:
    return 1 <= len(text) <= 20 and all(ch.isalnum() or ch in ".-^=:_" for ch in text)


@dataclass(frozen=True)
class DemoConfig(Section):
    """The demo source has no settings: it serves when no provider has a key."""

    prefix = "demo"


class DemoProvider(Provider):
    """Serves every kind from :class:`DemoMarket`, without any I/O. Thread-safe.

    Its answers are what stockcache serves after normalising a real provider's:
    prices in the major unit (``VOD.L`` in GBP, not the pence the market
    reports), the currency and MIC on each quote.
    """

    name = "demo"
    label = "the demo source"
    config = DemoConfig
    kinds = frozenset({"quote", "profile", "history", "news", "metric", "search", "listing", "fx", "analysis",
                       "lookup"})
    keyed = False
    local = True
    fallback_kinds = frozenset({"analysis"})  # written by rules when no model API is configured

    def __init__(self, config: DemoConfig | None = None, *, clock: Clock = time.time) -> None:
        super().__init__(config or DemoConfig(), clock=clock)
        self._market = DemoMarket()

    @classmethod
    def enabled(cls, settings: Settings, *, real: bool) -> bool:
        return not real  # demo data never mixes with real data

    def produce(self, kind: str, symbol: str, params: Mapping[str, Any]) -> Any:
        """The demo model for ``kind``; SymbolNotFound for the demo's unknown symbols."""
        self._check_kind(kind)
        return self._make(kind, symbol, params)

    def _make(self, kind: str, symbol: str, params: Mapping[str, Any]) -> Any:
        now = self._clock()
        market = self._market
        if kind == "fx":
            return self._rates(symbol, now)
        if kind == "search":
            return market.search(query_param(params, symbol))
        if kind == "analysis":
            return self._analysis(symbol, params.get("context") or {})
        if kind == "lookup":
            return market.lookup(symbol)
        reported, major, _ = market.currency(symbol)
        if kind == "quote":
            return dataclasses.replace(_in_major(market.quote(symbol, now), reported), exchange=self._mic(symbol))
        if kind == "profile":
            return dataclasses.replace(market.profile(symbol, now), currency=major if is_code(major) else None)
        if kind == "history":
            return _in_major(market.history(symbol, now, days_param(kind, params)), reported)
        if kind == "news":
            return market.news(symbol, now - days_param(kind, params) * 86400, now)
        if kind == "listing":
            market.check(symbol)
            inst = market.instrument(symbol)
            return ListingInfo(symbol=symbol, name=market.display_name(symbol), currency=reported,
                               exchange=self._mic(symbol), type=inst.asset)
        return market.metrics(symbol, now)

    @staticmethod
    def _analysis(symbol: str, context: Mapping[str, Any]) -> dict[str, Any]:
        """The demo analysis: ``analysis.demo_text`` of the context the service gathered, no tokens spent."""
        text, outlook = demo_text(symbol, context)
        return {"symbol": symbol, "analysis": text, "outlook": outlook, "model": "demo",
                "based_on": based_on(context), "tokens": {"prompt": 0, "completion": 0}}

    def _mic(self, symbol: str) -> str | None:
        inst = self._market.instrument(symbol)
        if inst.venue is None or inst.asset == INDEX:
            return None
        if inst.venue is US:
            return _US_MICS.get(inst.exchange)
        return inst.venue.mic

    def _rates(self, base: str, now: float) -> FxRates:
        """The ECB publication in force at ``now``, from ``base`` (cross rates via EUR, as Frankfurter does)."""
        day, rates = self._market.ecb_latest(now)
        rates = {**rates, "EUR": 1.0}
        if base not in rates:
            raise CurrencyNotFound(f"demo has no reference rate for {base}", currency=base)
        return FxRates(base=base, date=day.isoformat(),
                       rates={code: round(rate / rates[base], 6) for code, rate in rates.items() if code != base})


_US_MICS = {_NASDAQ: "XNAS", _NYSE: "XNYS", _ARCA: "ARCX"}


def _in_major(model: Any, reported: str) -> Any:
    """In the major unit; a pair quoted in a coin or stablecoin (``USDT``) keeps no currency."""
    try:
        return in_major(model, reported)
    except ValueError:
        return model
