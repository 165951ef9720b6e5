"""The ``broker`` command: ``main`` (serve, migrate, dispatch), ``keys`` and ``admins``."""
