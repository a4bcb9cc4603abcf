"""``python -m stockcache``: the command line."""

from .cli import main

raise SystemExit(main())
