"""Administration: who may call an admin endpoint, the listings' queries, the dashboard.

One query module per admin listing (``users``, ``tokens``, ``stats``, ``audit``), shared by the
``/admin/oauth2/*`` JSON API and the server-rendered ``dashboard``; audit events and exports;
the listings' pagination cursors. Imports ``broker.oauth`` and ``broker.http`` only.
"""
