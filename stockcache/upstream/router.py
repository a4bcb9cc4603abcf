"""The route walk: which providers to ask for a subject, and asking them in turn until one answers.

:func:`plan` orders the configured providers for a kind and subject: the
route setting (``STOCKCACHE_ROUTE_<KIND>``) if given, else each provider's
``priority``, keeping only those that cover the subject's market on their
plan. A local source (demo) serves alone when it is configured.

:class:`Router` walks one such route for one fetch, with non-blocking
callbacks on the transport's pool, so no pool thread ever waits on another
and a hung request holds only its own fetch. For each provider: its circuit
breaker, its budget, the transport (one deadline for the whole exchange),
the provider's parser, then the kind's sanity check. A failure or a spent
budget moves to the next provider; "not found" is final. What each outcome
means for the provider's health is decided here, once ("no data" from one
provider, :class:`~stockcache.errors.NoData`, moves on like a failure but
says the provider is alive; "not found" from all of them is not found):

- "not found", a rate limit and a refusal of one symbol say the provider is
  alive: they never count against its breaker; a refusal is reported
  (``on_refusal``) so the read-through path can remember it;
- a bad answer for one symbol counts once per symbol (``CircuitBreaker``),
  a refused key or a refused connection counts every time.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import (
    NoData,
    RateLimited,
    StockcacheError,
    SymbolNotFound,
    SymbolRefused,
    UpstreamAuthError,
    UpstreamError,
    UpstreamTimeout,
)
from ..kinds import KINDS
from ..metrics import Metrics
from ..symbols import Listing
from .guard import CircuitBreaker, Limits, share_cap
from .providers.base import Provider, UpstreamRequest
from .singleflight import FetchResult
from .transport import Answer, ProviderDown, Transport

log = logging.getLogger(__name__)

# When a provider says 429 without Retry-After, leave it alone this long.
DEFAULT_429_PAUSE = 10.0
# Metric names (labels: provider): refusals of one symbol received, and calls not made
# because a refusal was remembered (counted by the read-through path, which skips the provider).
REFUSED = "upstream_refused"
REFUSAL_SKIPPED = "upstream_refusal_skipped"

Done = Callable[[FetchResult | None, StockcacheError | None], None]
OnRefusal = Callable[[str, str, SymbolRefused], None]


class UpstreamBudget(Protocol):
    """What the router needs of a budget: ``guard.Budget``, or ``shared.SharedBudget``."""

    provider: str
    limits: Limits

    def acquire(self, *, share: float = 1.0, units: int = 1) -> float: ...

    def pause(self, seconds: float) -> None: ...

    def remaining(self) -> dict[str, int | None]: ...

    def calls_today(self) -> int: ...

    def settle(self, reserved: int, spent: int) -> None: ...


def plan(kind: str, listing: Listing | None, providers: Mapping[str, Provider],
         configured: Sequence[str] = ()) -> list[Provider]:
    """The providers to ask for ``kind`` of ``listing``, in order; empty when none covers it."""
    local = [p for p in providers.values() if p.local and kind in p.kinds]
    if local:
        return local
    if configured:
        order = [providers[name] for name in configured if name in providers]
    else:
        order = sorted((p for p in providers.values() if kind in p.priority), key=lambda p: p.priority[kind])
    return [p for p in order if kind in p.kinds and p.covers(kind, listing)]


@dataclass
class _Walk:
    """The state of one fetch as it walks its providers."""

    kind: str
    subject: str
    params: Mapping[str, Any]
    providers: list[Provider]
    share: float
    done: Done
    # provider -> its listing entry (needs_listing): a dict, None, or the lookup's error
    listings: Mapping[str, Any] = field(default_factory=dict)
    errors: list[StockcacheError] = field(default_factory=list)
    index: int = 0
    reserved: int = 0  # budget units the attempt on the wire reserved (settled when its answer says more)
    finished: bool = False  # set once, under Router._lock: a walk ends exactly once


class Router:
    """Walks routes concurrently with per-provider budgets and breakers. Thread-safe."""

    def __init__(
        self,
        providers: Mapping[str, Provider],
        budgets: Mapping[str, UpstreamBudget],
        transport: Transport,
        *,
        breakers: Mapping[str, CircuitBreaker] | None = None,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
        on_refusal: OnRefusal | None = None,
    ) -> None:
        self.providers = dict(providers)
        self.budgets = dict(budgets)
        self.breakers = dict(breakers) if breakers is not None else {
            name: CircuitBreaker(clock=clock) for name, p in self.providers.items() if not p.local
        }
        self.transport = transport
        self._clock = clock
        self.metrics = metrics or Metrics()
        self.on_refusal = on_refusal  # set by the read-through path, which remembers refusals
        self._lock = threading.Lock()

    @property
    def timeout(self) -> float:
        return self.transport.timeout

    def walk(self, kind: str, subject: str, params: Mapping[str, Any], providers: Iterable[Provider], *,
             share: float = 1.0, done: Done, listings: Mapping[str, Any] | None = None) -> None:
        """Ask ``providers`` in turn for ``kind`` of ``subject``; ``done(result, error)`` runs exactly once.

        Returns at once; ``done`` runs on whichever thread settles the walk.
        ``share`` < 1 makes it use only part of each budget (background refresh).
        """
        state = _Walk(kind, subject, params, list(providers), share, done, dict(listings or {}))
        self._run(state, self._next, state)

    def walk_all(self, kind: str, items: Iterable[WalkItem], *, share: float = 1.0) -> None:
        """:meth:`walk` for many subjects, sending many per request where the route allows.

        Subjects whose route starts with a provider that takes several symbols
        per request of ``kind`` (``Provider.batch``) go to it together, in
        chunks of its maximum (and of what its budget can pay for at once); each
        answer's symbols end or walk on one by one, so a failed symbol inside a
        batch is that symbol's error only and its walk goes on to the next
        provider alone. Everything else walks as :meth:`walk` does. Returns at
        once; each item's ``done`` runs exactly once.
        """
        groups: dict[str, list[_Walk]] = {}
        for item in items:
            state = _Walk(kind, item.subject, item.params, list(item.providers), share, item.done,
                          dict(item.listings))
            first = state.providers[0] if state.providers else None
            if (first is not None and not first.local and first.batch.get(kind, 1) > 1
                    and not isinstance(state.listings.get(first.name), StockcacheError)):
                groups.setdefault(first.name, []).append(state)
            else:
                self._run(state, self._next, state)
        for name, states in groups.items():
            provider = self.providers[name]
            size = self._chunk_size(provider, kind, share)
            for start in range(0, len(states), size):
                chunk = states[start:start + size]
                if len(chunk) == 1:
                    self._run(chunk[0], self._next, chunk[0])
                    continue
                for state in chunk:
                    state.index = 1  # the first provider is asked for the whole chunk at once
                self._run_batch(provider, chunk, self._batch_next, provider, chunk)

    def close(self) -> None:
        self.transport.close()

    # -- batches -----------------------------------------------------------------------------

    def _chunk_size(self, provider: Provider, kind: str, share: float) -> int:
        """The most symbols one request may carry: the provider's maximum, and no more units than its
        minute and day budgets hold at all (a batch that could never be paid for would never be sent)."""
        size = max(1, provider.batch.get(kind, 1))
        budget = self.budgets.get(provider.name)
        if budget is None:
            return size
        caps = [share_cap(limit, share) for limit in (budget.limits.per_minute, budget.limits.per_day) if limit]
        while size > 1 and caps and provider.units(kind, size) > min(caps):
            size -= 1
        return size

    def _run_batch(self, provider: Provider, chunk: list[_Walk], step: Callable[..., None], *args: Any) -> None:
        """Like :meth:`_run` for a chunk: an unexpected exception ends every walk of it that is still open."""
        try:
            step(*args)
        except Exception:
            log.exception("fetching a batch of %s from %s failed unexpectedly", chunk[0].kind, provider.name)
            for state in chunk:
                self._end(state, error=UpstreamError("stockcache could not complete this fetch."))

    def _batch_next(self, provider: Provider, chunk: list[_Walk]) -> None:
        """Ask ``provider`` for the whole chunk; if it cannot even be sent, each walks on alone."""
        name = provider.name
        if self.transport.closing:
            self._walk_on(chunk, _shutting_down(name))
            return
        deadline = time.monotonic() + self.timeout
        entered = self.transport.enter_lane(
            name, deadline, start=functools.partial(self._queued_batch, provider, chunk, deadline),
            expired=functools.partial(self._batch_lane_expired, provider, chunk))
        if not entered:
            return
        alone: list[_Walk] = []
        try:
            error = self._start_batch(provider, chunk, deadline, alone)
        except BaseException:
            self.transport.leave_lane(name)
            raise
        if error is not None:
            self.transport.leave_lane(name)
            self._walk_on(chunk, error)
        self._walk_alone(alone)

    def _queued_batch(self, provider: Provider, chunk: list[_Walk], deadline: float) -> bool:
        alone: list[_Walk] = []
        try:
            error = self._start_batch(provider, chunk, deadline, alone)
        except Exception:
            log.exception("fetching a batch of %s from %s failed unexpectedly", chunk[0].kind, provider.name)
            for state in chunk + alone:
                self._end(state, error=UpstreamError("stockcache could not complete this fetch."))
            return False
        if error is not None:
            self._walk_on(chunk, error)
        self._walk_alone(alone)
        return error is None

    def _walk_alone(self, states: list[_Walk]) -> None:
        """Walks cut off a batch the budget could not pay for whole: each asks the same provider alone
        (so each is refused, or served, by the budget on its own) and then walks on."""
        for state in states:
            state.index -= 1
            self._run(state, self._next, state)

    def _reserve(self, provider: Provider, chunk: list[_Walk], budget: UpstreamBudget,
                 alone: list[_Walk]) -> float:
        """Reserve the budget for as much of ``chunk`` as it can pay for now; the delay before the call.

        When the provider counts per symbol (Twelve Data's credits) and the whole chunk does not
        fit what is left of the minute or the day, the chunk is cut to what fits (at least two
        symbols) and the rest go to ``alone``; when not even two fit, every walk goes there. A
        provider that counts calls fits all or none, so its refusal is the whole chunk's.
        """
        kind, share = chunk[0].kind, chunk[0].share
        size = len(chunk)
        while True:
            try:
                delay = budget.acquire(share=share, units=provider.units(kind, size))
            except RateLimited:
                if provider.units(kind, size - 1) == provider.units(kind, size):
                    raise  # the call itself is refused, whatever it carries
                if size > 2:
                    size -= 1
                    continue
                alone.extend(chunk)
                del chunk[:]
                raise
            alone.extend(chunk[size:])
            del chunk[size:]
            return delay

    def _batch_lane_expired(self, provider: Provider, chunk: list[_Walk]) -> None:
        self._walk_on(chunk, _shutting_down(provider.name) if self.transport.closing
                      else _no_connection(provider.name, self.timeout))

    def _start_batch(self, provider: Provider, chunk: list[_Walk], deadline: float,
                     alone: list[_Walk]) -> StockcacheError | None:
        """Send one request for the chunk; the error every walk gets when it could not be sent.

        The chunk may be cut to what the budget can pay for (:meth:`_reserve`); the walks cut
        off are put in ``alone`` for the caller to start on their own.
        """
        name = provider.name
        kind = chunk[0].kind
        breaker = self.breakers.get(name)
        if breaker is not None:
            wait = breaker.allow()
            if wait is not None:
                return UpstreamError(f"{name} is failing; next try in {max(1, math.ceil(wait))} s.", provider=name)
        try:
            params = _batch_params(provider, chunk)
            request = provider.build_batch_request(kind, [state.subject for state in chunk], params)
            budget = self.budgets.get(name)
            delay = self._reserve(provider, chunk, budget, alone) if budget is not None else 0.0
            if alone:  # cut to what the budget pays for: ask for those only
                params = _batch_params(provider, chunk)
                request = provider.build_batch_request(kind, [state.subject for state in chunk], params)
        except StockcacheError as exc:
            if breaker is not None:
                breaker.release()
            if isinstance(exc, RateLimited) and chunk:  # an empty chunk's walks are each refused alone
                self.metrics.inc(Metrics.RATE_LIMITED, name)
            return exc
        except BaseException:
            if breaker is not None:
                breaker.release()
            raise
        return self._send(name, request, breaker, delay, deadline,
                          lambda future: self._on_batch_answer(provider, chunk, params, future))

    def _send(self, name: str, request: UpstreamRequest, breaker: CircuitBreaker | None, delay: float, deadline: float,
              done: Callable[[Future[Answer]], None]) -> StockcacheError | None:
        """Hand ``request`` to the transport; the error when the pool is shutting down, else None.

        No call was made when it raises: the breaker's half-open probe slot is
        given back, or the provider would stay off for good.
        """
        try:
            self.transport.send(name, request, delay=delay, deadline=deadline, done=done)
        except RuntimeError:
            if breaker is not None:
                breaker.release()
            if not self.transport.closing:
                raise
            return _shutting_down(name)  # the pool shut down between our check and here
        except BaseException:
            if breaker is not None:
                breaker.release()
            raise
        self.metrics.inc(Metrics.UPSTREAM_CALLS, name)
        return None

    def _on_batch_answer(self, provider: Provider, chunk: list[_Walk], params: Mapping[str, Any],
                         future: Future[Answer]) -> None:
        try:
            self._run_batch(provider, chunk, self._after_batch_answer, provider, chunk, params, future)
        finally:
            self.transport.leave_lane(provider.name)

    def _after_batch_answer(self, provider: Provider, chunk: list[_Walk], params: Mapping[str, Any],
                            future: Future[Answer]) -> None:
        """Each symbol of one batch answer ends its walk, or walks on to the next provider alone."""
        name = provider.name
        kind = chunk[0].kind
        breaker = self.breakers.get(name)
        if future.cancelled() or (self.transport.closing and isinstance(future.exception(), UpstreamError)):
            if breaker is not None:
                breaker.release()
            self._walk_on(chunk, _shutting_down(name))
            return
        symbols = [state.subject for state in chunk]
        try:
            answer = future.result()
            results = provider.parse_batch(kind, symbols, params, answer.status, answer.headers, answer.body)
        except ProviderDown as exc:
            self._walk_on(chunk, self._classify(provider, kind, ",".join(symbols), exc, None))
            return
        except StockcacheError as exc:
            # The whole answer failed (a throttled call, a refused key, an unreadable body):
            # one verdict for the provider, not one per symbol.
            self._walk_on(chunk, self._classify(provider, kind, ",".join(symbols), exc, None))
            return
        except Exception:
            log.exception("unexpected error with a %s batch answer for %s", name, kind)
            error = UpstreamError(f"{name} gave an answer stockcache could not read.", provider=name)
            self._walk_on(chunk, self._classify(provider, kind, ",".join(symbols), error, None))
            return
        now = self._clock()
        answered = False
        for state in chunk:
            value = results.get(state.subject)
            failure: StockcacheError
            if value is None:
                failure = UpstreamError(f"{name} left {state.subject} out of its answer.", provider=name)
            elif isinstance(value, StockcacheError):
                failure = value
            else:
                try:
                    model = self._checked(provider, state, value)
                except UpstreamError as exc:
                    failure = exc
                else:
                    answered = True
                    self._end(state, result=FetchResult(model, name, now))
                    continue
            verdict = self._classify(provider, kind, state.subject, failure, state.subject)
            state.errors.append(verdict)
            if _final(verdict):
                self._end(state, error=verdict)
            else:
                self._run(state, self._next, state)
        if answered and breaker is not None:
            breaker.success()

    def _walk_on(self, chunk: list[_Walk], error: StockcacheError) -> None:
        """Every walk of the chunk records (its own copy of) ``error`` and goes on to its next provider."""
        for state in chunk:
            own = _copy(error)
            state.errors.append(own)
            if _final(own):
                self._end(state, error=own)
            else:
                self._run(state, self._next, state)

    # -- the walk ----------------------------------------------------------------------------

    def _run(self, state: _Walk, step: Callable[..., None], *args: Any) -> None:
        """Run one step of a walk; an unexpected exception ends it instead of stranding its fetch.

        Every entry point (``walk``, transport callbacks, the lanes) goes through
        here. Breaker slots are given back where they are taken; lane slots in
        ``_attempt`` and ``_on_answer``; so only the walk is left to end.
        """
        try:
            step(*args)
        except Exception:
            log.exception("fetching %s %s failed unexpectedly", state.kind, state.subject)
            self._end(state, error=UpstreamError("stockcache could not complete this fetch."))

    def _next(self, state: _Walk) -> None:
        """Try the next provider of the route; end the walk when none is left."""
        while state.index < len(state.providers):
            provider = state.providers[state.index]
            state.index += 1
            name = provider.name
            if self.transport.closing and not provider.local:
                state.errors.append(_shutting_down(name))
                break
            looked_up = state.listings.get(name)
            if isinstance(looked_up, StockcacheError):
                # Its listing lookup failed (classified when it was made): that is this provider's
                # answer, so "no such coin" there is not found and a throttled lookup a rate limit.
                own = _copy(looked_up)
                own.fields.setdefault("provider", name)
                state.errors.append(own)
                if _final(own):
                    break
                continue
            if provider.local:
                try:
                    model = self._checked(provider, state, provider.produce(state.kind, state.subject,
                                                                            _params_for(provider, state)))
                except StockcacheError as exc:
                    state.errors.append(exc)
                    if _final(exc):
                        break
                    continue
                self._end(state, result=FetchResult(model, name, self._clock()))
                return
            deadline = time.monotonic() + self.timeout
            entered = self.transport.enter_lane(
                name, deadline, start=functools.partial(self._queued_start, state, provider, deadline),
                expired=functools.partial(self._lane_expired, state, provider))
            if not entered:
                return  # the lane starts it when a connection frees, or moves on at its deadline
            if self._attempt(state, provider, deadline):
                return
        self._end(state, error=_pick_error(state))

    def _attempt(self, state: _Walk, provider: Provider, deadline: float) -> bool:
        """Send the request of a slot holder; False (slot given back) when it could not be sent."""
        try:
            started = self._start(state, provider, deadline)
        except BaseException:
            self.transport.leave_lane(provider.name)
            raise
        if not started:
            self.transport.leave_lane(provider.name)
        return started

    def _queued_start(self, state: _Walk, provider: Provider, deadline: float) -> bool:
        """A lane slot came free for a queued attempt; False when it could not use it (then it walks on)."""
        try:
            started = self._start(state, provider, deadline)
        except Exception:
            log.exception("fetching %s %s failed unexpectedly", state.kind, state.subject)
            self._end(state, error=UpstreamError("stockcache could not complete this fetch."))
            return False
        if not started:
            self._run(state, self._next, state)
        return started

    def _lane_expired(self, state: _Walk, provider: Provider) -> None:
        """The attempt waited for a connection until its deadline (or the transport closed): move on."""
        error = (_shutting_down(provider.name) if self.transport.closing
                 else _no_connection(provider.name, self.timeout))
        state.errors.append(error)
        self._run(state, self._next, state)

    def _start(self, state: _Walk, provider: Provider, deadline: float) -> bool:
        name = provider.name
        breaker = self.breakers.get(name)
        if breaker is not None:
            wait = breaker.allow()
            if wait is not None:
                state.errors.append(UpstreamError(
                    f"{name} is failing; next try in {max(1, math.ceil(wait))} s.", provider=name))
                return False
        try:
            request = provider.build_request(state.kind, state.subject, _params_for(provider, state))
            budget = self.budgets.get(name)
            units = request.units or provider.units(state.kind, 1)
            delay = budget.acquire(share=state.share, units=units) if budget is not None else 0.0
            state.reserved = units if budget is not None else 0
        except StockcacheError as exc:
            if breaker is not None:
                breaker.release()
            if isinstance(exc, RateLimited):
                self.metrics.inc(Metrics.RATE_LIMITED, name)
            state.errors.append(exc)
            return False
        except BaseException:
            # No call was made: give back a half-open probe slot, or the provider stays off for good.
            if breaker is not None:
                breaker.release()
            raise
        refused = self._send(name, request, breaker, delay, deadline,
                             lambda future: self._on_answer(state, provider, future, request))
        if refused is not None:
            state.errors.append(refused)
            return False
        return True

    def _on_answer(self, state: _Walk, provider: Provider, future: Future[Answer], request: UpstreamRequest) -> None:
        # concurrent.futures swallows a callback's exception: _run is what ends the walk then.
        try:
            self._settle(state, provider, future, request)
            self._run(state, self._after_answer, state, provider, future)
        finally:
            self.transport.leave_lane(provider.name)

    def _settle(self, state: _Walk, provider: Provider, future: Future[Answer], request: UpstreamRequest) -> None:
        """Settle the budget to what an answered call really cost (``Provider.spent``: a model's usage).

        No answer (a timeout, a refused connection) keeps the reservation: the
        upstream may have done the work anyway.
        """
        reserved, state.reserved = state.reserved, 0
        budget = self.budgets.get(provider.name)
        if budget is None or not reserved or future.cancelled() or future.exception() is not None:
            return
        answer = future.result()
        try:
            spent = provider.spent(state.kind, request, answer.status, answer.body)
        except Exception:
            log.exception("reading what a %s answer cost failed", provider.name)
            return
        if spent is None:
            spent = reserved
        self.metrics.inc(Metrics.UPSTREAM_UNITS, provider.name, amount=spent)
        if spent != reserved:
            try:
                budget.settle(reserved, spent)
            except Exception:
                log.exception("settling the %s budget failed", provider.name)

    def _after_answer(self, state: _Walk, provider: Provider, future: Future[Answer]) -> None:
        error = self._outcome(state, provider, future)
        if error is None:
            return
        state.errors.append(error)
        if _final(error):
            self._end(state, error=error)
        else:
            self._next(state)

    def _outcome(self, state: _Walk, provider: Provider, future: Future[Answer]) -> StockcacheError | None:
        """Parse one answer; end the walk on success and return None, else return the error."""
        name = provider.name
        breaker = self.breakers.get(name)
        if future.cancelled() or (self.transport.closing and isinstance(future.exception(), UpstreamError)):
            # Never sent (cancelled, or a delayed request let go by close()): not the provider's fault.
            if breaker is not None:
                breaker.release()
            return _shutting_down(name)
        # What failed, for the breaker: the subject, or None when the whole provider is at fault.
        failed_key: str | None = state.subject
        try:
            answer = future.result()
            model = self._checked(provider, state, provider.parse(
                state.kind, state.subject, _params_for(provider, state), answer.status, answer.headers, answer.body))
        except ProviderDown as exc:
            error: StockcacheError = exc
            failed_key = None
        except StockcacheError as exc:
            error = exc
        except Exception:
            # A parser bug: count it against the provider like any unreadable answer (this
            # also ends a half-open probe) and let the fallback try.
            log.exception("unexpected error with a %s answer for %s %s", name, state.kind, state.subject)
            error = UpstreamError(f"{name} gave an answer stockcache could not read.", provider=name)
        else:
            if breaker is not None:
                breaker.success()
            extra = self._companions(provider, state, answer)
            self._end(state, result=FetchResult(model, name, self._clock(), extra))
            return None
        return self._classify(provider, state.kind, state.subject, error, failed_key)

    def _classify(self, provider: Provider, kind: str, subject: str, error: StockcacheError,
                  failed_key: str | None) -> StockcacheError:
        """What a failed answer means for the provider's health, decided once: breaker, budget, metrics.

        ``failed_key`` is what failed for the breaker: the subject, or None when
        the whole provider is at fault (a refused key, a refused connection).
        """
        name = provider.name
        breaker = self.breakers.get(name)
        if isinstance(error, SymbolNotFound | RateLimited | SymbolRefused):
            # The provider is alive and answering; only its budget or the symbol is the problem.
            if breaker is not None:
                breaker.success()
            if isinstance(error, RateLimited):
                self.metrics.inc(Metrics.RATE_LIMITED, name)
                pause = error.retry_after or DEFAULT_429_PAUSE
                # A 429 without Retry-After still tells the client when to come back (the 503's header).
                error.fields["retry_after"] = max(1, math.ceil(pause))
                budget = self.budgets.get(name)
                if budget is not None:
                    budget.pause(pause)
            elif isinstance(error, SymbolRefused):
                self.metrics.inc(REFUSED, name)
                self._refused(name, subject, error)
        else:
            if isinstance(error, UpstreamAuthError):
                failed_key = None  # our key refused: every symbol would fail the same way
            if breaker is not None:
                breaker.failure(failed_key)
            self.metrics.inc(Metrics.UPSTREAM_ERRORS, name)
            log.warning("%s %s %s failed: %s", name, kind, subject, error.message)
        error.fields.setdefault("provider", name)
        return error

    def _companions(self, provider: Provider, state: _Walk, answer: Answer) -> dict[str, Any]:
        """The other kinds the same answer fills (``Provider.companions``); one that does not parse is left out."""
        out: dict[str, Any] = {}
        for kind in provider.companions.get(state.kind, ()):
            try:
                out[kind] = checked(provider.name, kind, state.subject, provider.parse(
                    kind, state.subject, state.params, answer.status, answer.headers, answer.body))
            except StockcacheError:
                continue
            except Exception:
                log.exception("unexpected error reading a %s answer as %s for %s", provider.name, kind,
                              state.subject)
        return out

    def _checked(self, provider: Provider, state: _Walk, model: Any) -> Any:
        return checked(provider.name, state.kind, state.subject, model)

    def _refused(self, name: str, subject: str, error: SymbolRefused) -> None:
        if self.on_refusal is None:
            return
        try:
            self.on_refusal(name, subject, error)
        except Exception:
            log.exception("remembering that %s refused %s failed", name, subject)

    def _end(self, state: _Walk, *, result: FetchResult | None = None,
             error: StockcacheError | None = None) -> None:
        with self._lock:
            if state.finished:
                return
            state.finished = True
        state.done(result, error)


def checked(provider: str, kind: str, subject: str, model: Any) -> Any:
    """``model`` if it passes its kind's sanity check; else UpstreamError: the provider's fault, never cached.

    Every provider's output comes through here (parse and produce alike), so
    no parser repeats a bound.
    """
    try:
        KINDS[kind].check(subject, model)
    except ValueError as exc:
        raise UpstreamError(f"{provider} sent an out-of-range {kind}: {str(exc)[:120]}", provider=provider) from None
    return model


@dataclass(frozen=True)
class WalkItem:
    """One subject of :meth:`Router.walk_all`: its params, its route, and what to call when it ends."""

    subject: str
    params: Mapping[str, Any]
    providers: Sequence[Provider]
    done: Done
    listings: Mapping[str, Any] = field(default_factory=dict)  # provider -> its listing entry


def _params_for(provider: Provider, state: _Walk) -> Mapping[str, Any]:
    """The walk's params, with the provider's own listing entry as "listing" when it asked for one."""
    if provider.name not in state.listings:
        return state.params
    return {**state.params, "listing": state.listings[provider.name]}


def _batch_params(provider: Provider, chunk: Sequence[_Walk]) -> dict[str, Any]:
    """The params of a chunk's request: the first walk's, with each subject's listing entry under "listings"."""
    params = dict(chunk[0].params)
    listings = {state.subject: state.listings[provider.name] for state in chunk if provider.name in state.listings}
    if listings:
        params["listings"] = listings
    return params


def _copy(error: StockcacheError) -> StockcacheError:
    """An error of its own for each walk of a batch (callers add fields such as the symbol to it)."""
    return type(error)(error.message, **dict(error.fields))


def _final(error: StockcacheError) -> bool:
    """Whether ``error`` ends a route: "not found" does; one provider's "no data" asks the next one."""
    return isinstance(error, SymbolNotFound) and not isinstance(error, NoData)


def _shutting_down(name: str) -> UpstreamError:
    return UpstreamError("stockcache is shutting down.", provider=name)


def _no_connection(name: str, timeout: float) -> UpstreamTimeout:
    # Not the provider's answer, so it never counts against its breaker: its other requests do.
    return UpstreamTimeout(f"{name} had no free connection within {timeout:g} s (all busy).", provider=name)


def _pick_error(state: _Walk) -> StockcacheError:
    """The error to report when every provider failed: the primary's, unless all were rate limits.

    A refusal of the symbol or one provider's "no data" say the least about
    what to do next, so any other error comes first (a rate limit must not
    become a remembered "not found"); when every provider had no data it is
    not found, and when every one refused it, one error names them all.
    """
    if not state.errors:
        return UpstreamError(f"No configured provider serves {state.kind} data.")
    for error in state.errors:
        if _final(error):
            return error
    errors = [e for e in state.errors if not isinstance(e, SymbolRefused | NoData)]
    if not errors:
        empty = [str(e.fields.get("provider", "?")) for e in state.errors if isinstance(e, NoData)]
        if empty:
            names = " and ".join(dict.fromkeys(empty))
            return SymbolNotFound(f"{names} {'has' if len(empty) == 1 else 'have'} no {state.kind} data "
                                  f"for {state.subject}.", symbol=state.subject)
        return refused_everywhere(state.subject, [str(e.fields.get("provider", "?")) for e in state.errors])
    limits = [e for e in errors if isinstance(e, RateLimited)]
    if len(limits) == len(errors):
        return min(limits, key=lambda e: e.retry_after or 0)
    return next(e for e in errors if not isinstance(e, RateLimited))


def refused_everywhere(symbol: str, providers: Iterable[str]) -> SymbolRefused:
    """The error when every provider that could serve ``symbol`` refused it on the configured plan."""
    names = " and ".join(dict.fromkeys(providers))
    return SymbolRefused(f"{symbol} is not available from {names} on the configured plan "
                         "(it refused this symbol), and no other configured provider serves it.",
                         symbol=symbol)
