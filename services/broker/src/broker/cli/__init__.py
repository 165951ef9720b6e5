"""The ``broker`` command: ``main`` (serve, migrate, dispatch), ``keys``, ``admins`` and
``providers``, over ``command`` (the audit actor, exit statuses)."""
