"""Fakes of the upstream APIs, with the real APIs' shapes and quirks, served from ``DemoMarket``.

Each module is one API, mounted on ``bench.fake_upstream.FakeUpstream`` (one
loopback server, shared counts, latency and faults; see :mod:`.base`):

=================  ==================  ============================================
module             mounted at          configure stockcache with
=================  ==================  ============================================
``twelvedata``     ``/twelvedata``     ``FakeUpstream.url("twelvedata")``
``coingecko``      ``/coingecko``      ``url("coingecko")`` (``.../api/v3``)
``frankfurter``    ``/frankfurter``    ``url("frankfurter")`` (``.../v1``)
``openfigi``       ``/openfigi``       ``url("openfigi")`` (``.../v3``)
``openai``         ``/openai``         ``url("openai")`` (``.../v1``)
=================  ==================  ============================================

``notify`` is a separate receiver (ntfy and webhooks), not mounted: it is the
other end of a delivery, not an upstream.
"""

from __future__ import annotations

import time

from stockcache.upstream.providers.demo import DemoMarket

from .base import Clock, MountedApi
from .coingecko import CoinGecko
from .frankfurter import Frankfurter
from .openai import ChatCompletions
from .openfigi import OpenFigi
from .twelvedata import TwelveData

__all__ = ["ChatCompletions", "CoinGecko", "Frankfurter", "MountedApi", "OpenFigi", "TwelveData", "standard_apis"]


def standard_apis(*, market: DemoMarket | None = None, clock: Clock = time.time) -> list[MountedApi]:
    """One of each mounted API, sharing ``market`` and ``clock``."""
    market = market or DemoMarket(marked=False, unknown=())
    return [cls(market=market, clock=clock) for cls in (TwelveData, CoinGecko, Frankfurter, OpenFigi, ChatCompletions)]
