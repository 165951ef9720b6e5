"""``/admin``: the server-rendered admin dashboard (users, sessions and tokens, stats, audit).

The dashboard is a relying party of the broker itself: it signs the admin in through the
broker's own ``/authorize`` as the built-in public client ``broker-admin``
(``broker.oauth.dashboard_client``), redeems
the code in-process (``signin``) and keeps a sealed reference to the resulting broker session in
an ``HttpOnly`` cookie (``session``). Every request re-checks that session, its user and the
admin role (``guard``); every form that changes something is a POST with a CSRF token and an
origin check. The pages read and change data only through the functions behind the
``/admin/oauth2/*`` JSON API, so the dashboard and the API cannot disagree.

Modules: ``session`` (its two cookies), ``guard`` (who may see a page or post a form),
``rendering`` (Jinja2 templates with autoescape, the page headers), ``params`` (a page's query
string), ``chart`` (the server-rendered SVG chart), ``signin`` (login, callback, logout),
``overview``, ``users``, ``tokens``, ``audit`` (the pages). Their routes are rows of the one
route table, ``broker.app.routes``.
"""
