"""The one store interface: users, API tokens, portfolios, watchlists, alerts and shared state, on either engine.

:class:`Store` is abstract; :class:`~stockcache.store.sqlite.SqliteStore`
(one box, ``<data_dir>/store.sqlite``) and
:class:`~stockcache.store.postgres.PostgresStore` (``STOCKCACHE_DATABASE_URL``,
several instances) implement it. Every method a caller uses is defined once,
in the entity modules; the engines only run SQL. A write method returns only
once its transaction is committed, so a write a client saw acknowledged is
durable. Rows handed out never carry a password or token hash except as a
separate element of a tuple (``get_user_by_name``, ``find_api_token``).
"""

from __future__ import annotations

from abc import ABC

from .alerts import AlertQueries
from .holdings import HoldingQueries
from .shared import SharedQueries
from .tokens import TokenQueries
from .users import UserQueries


class Store(UserQueries, TokenQueries, HoldingQueries, AlertQueries, SharedQueries, ABC):
    """The user store. Thread-safe, on either engine."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"

    def __enter__(self) -> Store:
        return self
