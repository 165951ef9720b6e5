"""Background jobs shared by the broker (embedded default) and the sync worker.

Layers, each importing only those below it (an import-linter contract):

* ``queue``: the arq (Redis) and in-process backends that put jobs on a queue and run them;
  ``schedule``: the timer that enqueues the periodic jobs.
* ``registry``: the job table, every job's name, typed payload and body.
* one module per job, its payload and its body, independent of arq: ``upstream_refresh``,
  ``profile_sync``, ``audit_relay``, ``audit_rollup``, ``stats_snapshot``, ``housekeeping``,
  ``backchannel_logout`` (with ``logout_outbox``, its reader of ended sessions), ``noop`` (with
  ``audit_cursor``, the position a reader of the audit log has reached).
* ``base``: the job names, the payload base, the result type, ``JobDeps`` and the ``JobQueue``
  interface; ``provider_slots``, the per-provider concurrency limit in ``JobDeps``.

Import from the module that defines a name: this package re-exports nothing, so importing a
payload or the queue interface does not load every job body.
"""
