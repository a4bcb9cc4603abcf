#!/usr/bin/env python3
"""Start stockcache on waitress: ``python run.py [--host H] [--port P] [--data-dir D]``."""

from stockcache.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["serve", *__import__("sys").argv[1:]]))
