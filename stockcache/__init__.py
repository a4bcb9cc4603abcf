"""stockcache: a self-hosted, two-level cache in front of stock-market data APIs.

The public Python API is ``open_cache`` and ``StockService``; both are imported
lazily so ``import stockcache`` stays cheap (the CLI starts in well under a second).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["open_cache", "StockService", "Settings", "__version__"]

if TYPE_CHECKING:
    from .cache import open_cache
    from .service import StockService
    from .settings import Settings


def __getattr__(name: str) -> Any:
    if name == "open_cache":
        from .cache import open_cache

        return open_cache
    if name == "StockService":
        from .service import StockService

        return StockService
    if name == "Settings":
        from .settings import Settings

        return Settings
    raise AttributeError(f"module 'stockcache' has no attribute {name!r}")
