"""StockService: the contract's Python API over the read-through path.

It validates what callers give (symbols, days, queries), asks the read-through
path (``readthrough``) and shapes the answers; portfolio maths is in
``portfolio``, statistics in ``stats``. It builds nothing itself: the parts
come from ``runtime.build_service`` (or a whole ``Runtime``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from . import analysis, portfolio
from .currency import parse_code
from .errors import (
    CurrencyNotFound,
    InvalidRequest,
    InvalidSymbol,
    StockcacheError,
    SymbolNotCovered,
    SymbolNotFound,
    UpstreamError,
)
from .metrics import Metrics
from .readthrough import Batch, ReadThrough
from .settings import Settings
from .stats import activity_stats
from .symbols import normalize_isin, normalize_symbol, normalize_symbols
from .upstream.providers.base import MAX_HISTORY_DAYS, Provider, days_param
from .upstream.router import REFUSAL_SKIPPED, REFUSED

if TYPE_CHECKING:
    from .cache import TieredCache
    from .upstream.router import Router


class StockService:
    """Quotes, profiles, history, news and more through the cache. Thread-safe.

    Build it with :meth:`from_env` or ``runtime.build_service``.
    """

    def __init__(self, settings: Settings, readthrough: ReadThrough, *, metrics: Metrics,
                 closers: Sequence[Any] = ()) -> None:
        self.settings = settings
        self.readthrough = readthrough
        self.metrics = metrics
        self.clock = readthrough.clock
        self._closers = list(closers)  # what close() closes after the read-through path, in order
        self._closed = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **kwargs: Any) -> StockService:
        """A service configured from the same environment as ``run.py``."""
        from .runtime import build_service

        return build_service(Settings.from_env(environ), **kwargs)

    # -- parts, for the runtime, the refresher and stats ---------------------------------------

    @property
    def cache(self) -> TieredCache:
        return self.readthrough.cache

    @property
    def router(self) -> Router:
        return self.readthrough.router

    @property
    def providers(self) -> Mapping[str, Provider]:
        return self.router.providers

    @property
    def source_names(self) -> list[str]:
        return list(self.providers)

    # -- the contract's API --------------------------------------------------------------------

    def get_quote(self, symbol: str) -> dict[str, Any]:
        """One quote, as served at /api/quote/<symbol>; raises the item's error."""
        return self.readthrough.one("quote", normalize_symbol(symbol))

    def fetch_multiple_quotes(self, symbols: Iterable[str] | str) -> dict[str, Any]:
        """``{"quotes": {...}, "errors": {...}}``: every symbol once, in one or the other."""
        names, invalid = self._symbols(symbols)
        found, errors = self.readthrough.many("quote", names)
        errors = {**invalid, **errors}
        return {"quotes": found, "errors": _error_dicts(errors)}

    def quotes_for(self, symbols: Iterable[str]) -> dict[str, Any]:
        """Quotes for a user's saved symbols (watchlist), as ``{"quotes": {...}, "errors": {...}}``.

        Unlike :meth:`fetch_multiple_quotes` there is no ``max_batch`` cap: that
        bounds one request, while a saved list may be longer, so it is read in
        chunks of ``max_batch``. A symbol that is not valid any more is an error
        of its own, not a failure of the whole list.
        """
        found, errors = self._quotes_chunked(symbols)
        return {"quotes": found, "errors": _error_dicts(errors)}

    def verify_symbol(self, symbol: str) -> bool:
        """Whether ``symbol`` names a listing, checked by reading its quote (needed soon anyway).

        True when the quote came; False when the upstream could not say just now
        (down, throttled, slow): the symbol is given the benefit of the doubt.
        Raises SymbolNotFound for a symbol nobody knows and SymbolNotCovered for
        one no configured provider serves, so a typo is refused when it is typed.
        """
        try:
            self.get_quote(symbol)
        except (SymbolNotFound, SymbolNotCovered):
            raise
        except StockcacheError:
            return False
        return True

    def get_profile(self, symbol: str) -> dict[str, Any]:
        return self.readthrough.one("profile", normalize_symbol(symbol))

    def fetch_multiple_profiles(self, symbols: Iterable[str] | str) -> dict[str, Any]:
        names, invalid = self._symbols(symbols)
        found, errors = self.readthrough.many("profile", names)
        errors = {**invalid, **errors}
        return {"profiles": found, "errors": _error_dicts(errors)}

    def get_history(self, symbol: str, days: int = 30) -> dict[str, Any]:
        """Daily bars, oldest first; one cached fetch of the most days serves every ``days``."""
        days = days_param("history", {"days": days})
        # Always fetched at its longest (Alpha Vantage compact, what a free key gets) and sliced
        # per request, so every ``days`` shares one cache entry.
        answer = self.readthrough.one("history", normalize_symbol(symbol), (), {"days": MAX_HISTORY_DAYS})
        answer["candles"] = list(answer.get("candles", ()))[-days:]
        return answer

    def get_news(self, symbol: str, days: int = 7) -> dict[str, Any]:
        days = days_param("news", {"days": days})
        return self.readthrough.one("news", normalize_symbol(symbol), (days,), {"days": days})

    def get_metric(self, symbol: str) -> dict[str, Any]:
        """Key figures ``{"symbol", "metrics": {name: float}}`` (names in providers.base.METRIC_NAMES)."""
        return self.readthrough.one("metric", normalize_symbol(symbol))

    def search(self, query: str) -> dict[str, Any]:
        """Symbols matching ``query``: ``{"query", "results": [{"symbol", "name", "type"}]}``.

        The query is folded (trimmed, spaces collapsed, upper-cased) so ``apple`` and
        ``APPLE `` share one cache entry, ``search:APPLE``, and one upstream call.
        """
        folded = " ".join(str(query).split()).upper() if isinstance(query, str) else ""
        if not 1 <= len(folded) <= 100:
            raise InvalidRequest("A search query is 1 to 100 characters.", field="q")
        answer = self.readthrough.one("search", folded, (), {"q": folded})
        answer["query"] = folded
        return answer

    def get_analysis(self, symbol: str) -> dict[str, Any]:
        """A short plain-text analysis of one listing, as served at /api/analysis/<symbol>.

        Cached for ``STOCKCACHE_TTL_AI_ANALYSIS`` under the prompt's version and
        the model (``analysis:AAPL:p1:llm-gpt-4o-mini``). Only on a miss is its
        context read (quote, profile, key figures, 30 daily bars, 7 days of
        headlines, through the cache like any read) and the model asked, once for
        all concurrent callers. A symbol nobody knows is SymbolNotFound before
        any model call.
        """
        name = normalize_symbol(symbol)
        found, errors = self._analyses([name])
        if name in errors:
            raise errors[name]
        return found[name]

    def _analyses(self, symbols: Sequence[str], *, share: float = 1.0) -> tuple[dict[str, Any], dict[str, Any]]:
        """Analyses of ``symbols`` (normalised), grouped by cache key variant; contexts read in one round trip."""
        found: dict[str, Any] = {}
        errors: dict[str, StockcacheError] = {}
        contexts: dict[str, dict[str, Any] | StockcacheError] = {}

        def prepare(subject: str) -> Mapping[str, Any]:
            if subject not in contexts:  # each miss of a batch is read with the others (below)
                contexts.update(self._analysis_contexts([subject]))
            context = contexts[subject]
            if isinstance(context, StockcacheError):
                raise context
            return {"context": context}

        groups: dict[tuple[str, ...], list[str]] = {}
        for name in symbols:
            route = self.readthrough.route("analysis", name)
            if not route:
                errors[name] = self.readthrough.no_route_error("analysis", name)
                continue
            groups.setdefault((analysis.PROMPT_VERSION, route[0].variant("analysis")), []).append(name)
        for key_params, names in groups.items():
            if len(names) > 1:
                contexts.update(self._analysis_contexts(self._uncached("analysis", names, key_params)))
            part, failed = self.readthrough.many("analysis", names, key_params, share=share, prepare=prepare)
            found.update(part)
            errors.update(failed)
        return found, errors

    def _uncached(self, kind: str, names: Sequence[str], key_params: tuple[Any, ...]) -> list[str]:
        """Those of ``names`` without a fresh ``kind`` entry (not counted as reads)."""
        expiries = self.readthrough.expiries(kind, names, key_params)
        now = self.clock()
        return [name for name in names if expiries.get(name, 0.0) <= now]

    def _analysis_contexts(self, symbols: Sequence[str]) -> dict[str, dict[str, Any] | StockcacheError]:
        """What each analysis is built from, read through the cache in one round trip for all ``symbols``.

        The quote is required: its error (not found, not covered, the upstream
        down) is the analysis's; the other parts are left out when they fail.
        """
        if not symbols:
            return {}
        names = list(symbols)
        days = analysis.NEWS_DAYS
        parts = self.readthrough.gather([
            Batch("quote", names), Batch("profile", names), Batch("metric", names),
            Batch("history", names, (), {"days": MAX_HISTORY_DAYS}), Batch("news", names, (days,), {"days": days}),
        ])
        (quotes, quote_errors), (profiles, _), (metrics, _), (histories, _), (news, _) = parts
        out: dict[str, dict[str, Any] | StockcacheError] = {}
        for name in names:
            if name not in quotes:
                out[name] = quote_errors.get(name) or UpstreamError("No quote to analyse.", symbol=name)
                continue
            history = histories.get(name) or {}
            out[name] = {
                "quote": quotes[name],
                "profile": profiles.get(name),
                "metrics": dict((metrics.get(name) or {}).get("metrics") or {}) or None,
                "history": list(history.get("candles") or ())[-analysis.HISTORY_BARS:],
                "news": list((news.get(name) or {}).get("articles") or ()),
            }
        return out

    def lookup_isin(self, isin: str) -> dict[str, Any]:
        """The listings of an ISIN: ``{"isin", "listings": [{"symbol", "name", "exchange", "figi", "currency"?}]}``.

        The check digit is checked first: a mistyped ISIN is InvalidRequest with no
        upstream call; one nobody lists is SymbolNotFound (remembered like a symbol's).
        """
        return self.readthrough.one("lookup", normalize_isin(isin))

    def lookup_text(self, query: str) -> dict[str, Any]:
        """Listings whose name or symbol matches ``query``: the search route, ``{"query", "listings": [...]}``."""
        answer = self.search(query)
        answer["listings"] = answer.pop("results", [])
        return answer

    def symbol_for_isin(self, isin: str) -> str:
        """The ISIN's listing on the first of ``STOCKCACHE_PREFERRED_EXCHANGES`` it has, else its first listing.

        SymbolNotCovered when the ISIN has no listing on a venue stockcache knows.
        """
        code = normalize_isin(isin)
        listings = self.lookup_isin(code)["listings"]
        if not listings:
            raise SymbolNotCovered(f"{code} has no listing on a venue stockcache knows.", isin=code)
        by_mic: dict[str, str] = {}
        for item in listings:
            by_mic.setdefault(item["exchange"], item["symbol"])
        for mic in self.settings.preferred_exchanges:
            if mic in by_mic:
                return by_mic[mic]
        return str(listings[0]["symbol"])

    def fetch_portfolio_quotes(self, positions: Sequence[Any], currency: str | None = None) -> dict[str, Any]:
        """Performance of positions (dicts or objects with id, symbol, shares, cost_basis) in ``currency``.

        ``currency`` defaults to ``STOCKCACHE_BASE_CURRENCY``. The quotes (in
        chunks of ``max_batch``) and the base currency's reference rates are
        read in one concurrent batch. A position whose quote or rate failed is
        listed with its error and left out of the totals (``complete: false``).
        """
        base = _currency_input(currency, "currency") if currency is not None else self.settings.base_currency
        rows = portfolio.position_rows(positions)
        names, invalid = self._valid_symbols(row["symbol"] for row in rows)
        step = self.settings.max_batch
        batches = [Batch("quote", names[start:start + step]) for start in range(0, len(names), step)]
        # No positions, nothing to convert: an empty portfolio reads no market data at all.
        rates = [Batch("fx", [base])] if names else [Batch("fx", [])]
        *quote_parts, (rates_found, rates_failed) = self.readthrough.gather([*batches, *rates])
        quotes: dict[str, dict[str, Any]] = {}
        errors: dict[str, StockcacheError] = dict(invalid)
        for found, failed in quote_parts:
            quotes.update(found)
            errors.update(failed)
        if isinstance(rates_failed.get(base), CurrencyNotFound):
            raise rates_failed[base]  # no rates from that currency at all: the request itself is wrong
        table = rates_found.get(base)
        rates_error = rates_failed[base].to_dict() if base in rates_failed else None
        answer = portfolio.performance(rows, quotes, _error_dicts(errors), base=base,
                                       rates=table["rates"] if table else None, rates_error=rates_error)
        answer["fx"] = None if table is None else {
            "base": base, "date": table["date"], "source": table["source"], "stale": table["stale"]}
        return answer

    def get_fx(self, base: str, quote: str) -> dict[str, Any]:
        """The reference rate from ``base`` to ``quote``, as served at /api/fx/<FROM>/<TO>.

        One cached table per base currency (one upstream call) serves every pair
        from it. InvalidRequest for a malformed code, CurrencyNotFound for one
        nobody publishes a rate for.
        """
        base, quote = _currency_input(base, "from"), _currency_input(quote, "to")
        table = self.readthrough.one("fx", base)
        rate = 1.0 if quote == base else table["rates"].get(quote)
        if rate is None:
            raise CurrencyNotFound(f"No reference rate from {base} to {quote} is published.", currency=quote)
        return {"from": base, "to": quote, "rate": rate, "date": table["date"],
                **{k: table[k] for k in ("source", "cache", "fetched_at", "age", "stale")}}

    def warm(self, symbols: Iterable[str], kinds: Iterable[str] = ("quote",), *,
             share: float = 1.0) -> dict[str, str | StockcacheError]:
        """Fetch whatever is not fresh for ``symbols``; what became of each item, by ``kind:symbol``.

        ``"fetched"`` (from the upstream now), ``"fresh"`` (already cached), or
        its error: a remembered "not found" is an error, not fresh data, and an
        item answered only by a stale copy (the upstream failed) was not warmed.
        """
        outcome: dict[str, str | StockcacheError] = {}
        names = list(dict.fromkeys(normalize_symbol(s) for s in symbols))
        step = self.settings.max_batch
        for kind in kinds:
            params = {"days": MAX_HISTORY_DAYS} if kind == "history" else None
            for start in range(0, len(names), step):
                chunk = names[start:start + step]
                if kind == "analysis":  # spends model tokens: the warm command says so
                    found, errors = self._analyses(chunk, share=share)
                else:
                    found, errors = self.readthrough.many(kind, chunk, (), params, share=share)
                for symbol, item in found.items():
                    outcome[f"{kind}:{symbol}"] = (
                        UpstreamError("The upstream failed; only a stale copy is cached.", symbol=symbol)
                        if item.get("stale") else "fetched" if item.get("cache") == "upstream" else "fresh")
                outcome.update({f"{kind}:{s}": e for s, e in errors.items()})
        return outcome

    def refresh(self, kind: str, symbols: Sequence[str], *, share: float = 1.0,
                cancel: threading.Event | None = None) -> tuple[dict[str, Any], dict[str, StockcacheError]]:
        """Fetch ``symbols`` now even if their cached entries are still fresh (background refresh).

        Goes through the same single-flight, budgets (``share`` of each) and
        write-through as a read; returns ``(found, errors)`` by symbol and never
        serves stale data. ``symbols`` must already be normalised.
        """
        params = {"days": MAX_HISTORY_DAYS} if kind == "history" else None
        return self.readthrough.many(kind, list(symbols), (), params, share=share, force=True, cancel=cancel)

    def route(self, kind: str, symbol: str | None = None) -> list[str]:
        """The providers tried for ``kind`` (of ``symbol``), in order; the first one's budget matters."""
        return [provider.name for provider in self.readthrough.route(kind, symbol)]

    def stats(self) -> dict[str, Any]:
        """Cache and upstream statistics, as served at /api/cache/stats."""
        out = dict(self.cache.get_stats())
        router = self.router
        upstream: dict[str, Any] = {}
        for name, provider in self.providers.items():
            if provider.local and provider.kinds <= provider.fallback_kinds:
                continue  # the demo's analyses beside real market data: no upstream to count
            budget = router.budgets.get(name)
            breaker = router.breakers.get(name)
            upstream[name] = {
                "calls": self.metrics.get(Metrics.UPSTREAM_CALLS, name),
                "errors": self.metrics.get(Metrics.UPSTREAM_ERRORS, name),
                "rate_limited": self.metrics.get(Metrics.RATE_LIMITED, name),
                "refused": self.metrics.get(REFUSED, name),
                "refusals_skipped": self.metrics.get(REFUSAL_SKIPPED, name),
                "calls_today": budget.calls_today() if budget else None,
                "budget_left": budget.remaining() if budget else None,
                "circuit": breaker.state if breaker and not provider.local else None,
                "unit": provider.unit,
            }
        out["upstream"] = upstream
        out["llm_tokens"] = self._token_stats(upstream)
        out["coalesced"] = self.metrics.total(Metrics.COALESCED)
        out["stale_served"] = self.metrics.total(Metrics.STALE_SERVED)
        out["demo"] = self.settings.demo
        out.update(activity_stats(self.metrics, self.settings))
        return out

    def _token_stats(self, upstream: Mapping[str, Any]) -> dict[str, Any]:
        """Who writes analyses, and the model tokens spent today (every process on the data dir) and left.

        ``upstream`` is stats()'s per-provider figures, read already (a shared budget's are Redis calls).
        """
        route = self.readthrough.route("analysis")
        writer = route[0] if route else None
        out: dict[str, Any] = {"source": writer.name if writer else None,
                               "model": getattr(writer, "model", writer.name if writer else None),
                               "today": 0, "per_day": None, "left": None, "spent": 0}
        if writer is None or writer.unit != "token":
            return out
        budget = self.router.budgets.get(writer.name)
        out["spent"] = self.metrics.get(Metrics.UPSTREAM_UNITS, writer.name)  # by this process since it started
        if budget is not None:
            seen = upstream.get(writer.name)
            today, left = (seen["calls_today"], seen["budget_left"]) if seen else (budget.calls_today(),
                                                                                   budget.remaining())
            out["today"] = today
            out["per_day"] = budget.limits.per_day or None
            out["left"] = left.get("day")
        return out

    def close(self) -> None:
        """Stop upstream work (requests on the wire finish and are stored), then close what it owns. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.readthrough.close()
        for part in self._closers:
            part.close()

    # -- helpers -------------------------------------------------------------------------------

    def _symbols(self, symbols: Iterable[str] | str) -> tuple[list[str], dict[str, InvalidSymbol]]:
        raw = symbols if isinstance(symbols, str) else list(symbols)
        return normalize_symbols(raw, max_batch=self.settings.max_batch)

    def _valid_symbols(self, symbols: Iterable[str]) -> tuple[list[str], dict[str, StockcacheError]]:
        """Saved symbols normalised, in order, duplicates folded; one no longer valid is an error of its own."""
        names: dict[str, None] = {}
        errors: dict[str, StockcacheError] = {}
        for raw in symbols:
            try:
                names[normalize_symbol(raw)] = None
            except InvalidRequest as exc:
                errors[str(raw)] = exc
        return list(names), errors

    def _quotes_chunked(
        self, symbols: Iterable[str]
    ) -> tuple[dict[str, dict[str, Any]], dict[str, StockcacheError]]:
        ordered, errors = self._valid_symbols(symbols)
        step = self.settings.max_batch
        found: dict[str, dict[str, Any]] = {}
        parts = self.readthrough.gather([Batch("quote", ordered[start:start + step])
                                         for start in range(0, len(ordered), step)])
        for chunk_found, chunk_errors in parts:
            found.update(chunk_found)
            errors.update(chunk_errors)
        return found, errors


def _currency_input(raw: object, field: str) -> str:
    """A currency code a caller gave (``eur`` -> ``EUR``); InvalidRequest naming ``field`` otherwise."""
    try:
        return parse_code(raw)
    except ValueError as exc:
        raise InvalidRequest(f"{field}: {exc}.", field=field) from None


def _error_dicts(errors: Mapping[str, StockcacheError]) -> dict[str, dict[str, Any]]:
    return {symbol: error.to_dict() for symbol, error in errors.items()}
