"""Load benchmarks of the broker against minimal Starlette baselines (``make bench``).

``bench.run`` drives everything: a throw-away PostgreSQL database, the broker and the baseline
app as subprocesses, seeded refresh tokens, and ``wrk`` runs whose numbers it prints.
"""
