"""Everything between stockcache and the upstream APIs.

``providers/`` (what each API is: settings, coverage, requests, parsing),
``router`` (which providers to ask, in turn), ``transport`` (HTTP, once, with
one deadline per exchange), ``guard`` (budgets and circuit breakers),
``singleflight`` (one fetch per key) and ``shared`` (the same across
instances through Redis). Imported lazily where it pulls heavy libraries.
"""
