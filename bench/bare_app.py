"""The baseline for bench.bench_http: a bare Bottle app on waitress answering the same quote JSON.

Run: ``.venv/bin/python -m bench.bare_app --port 8099 --threads 8 --quote quote.json``.

No auth, no cache, no access log, no metrics: one route returning a stored
quote dict through Bottle's own JSON plugin, so the gap to stockcache is
exactly what stockcache adds per request. waitress gets the thread count and
the socket settings stockcache uses (poll, connection limit, backlog).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from typing import Any

import bottle
from waitress.server import create_server


def create_app(quote: dict[str, Any]) -> bottle.Bottle:
    """A minimal app: ``GET /api/quote/<symbol>`` and ``GET /healthz``."""
    app = bottle.Bottle()

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"status": "ok"}

    @app.get("/api/quote/<symbol>")
    def quote_route(symbol: str) -> dict[str, Any]:
        answer = dict(quote)
        answer["symbol"] = symbol.upper()
        return answer

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bare_app", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--quote", required=True, help="a JSON file holding the quote to answer with")
    args = parser.parse_args(argv)
    with open(args.quote, encoding="utf-8") as handle:
        quote = json.load(handle)
    server = create_server(
        create_app(quote), host=args.host, port=args.port, threads=args.threads,
        connection_limit=1000, asyncore_use_poll=True, backlog=2048, ident="bare",
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"bare app listening on http://{args.host}:{server.effective_port}", file=sys.stderr, flush=True)
    try:
        server.run()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.close()


if __name__ == "__main__":
    main()
