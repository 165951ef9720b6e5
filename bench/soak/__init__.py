"""``make soak``: the broker under a steady mixed load while faults are injected, then checked.

Two brokers behind a round-robin proxy, two sync-workers, a PostgreSQL and a Redis of the run's
own, and the OpenID Provider stand-in upstream. One module per job: ``cluster`` (the throw-away
PostgreSQL and Redis), ``processes`` (the brokers, workers, stand-in and proxy), ``proxy``,
``load`` (the client mix) and ``ledger`` (what it saw), ``faults`` (the schedule), ``checks``
(the invariants, from the database, the audit stream and the stand-in), ``report``, and ``run``
tying them together. What it checks and how to read it: docs/reliability.md.
"""
