"""Stand-in upstream identity providers: real HTTP servers on 127.0.0.1 that tests and the bench
can script.

* :mod:`standins.oidc` — an OpenID Provider (Keycloak-like), or Google with ``--google``;
* :mod:`standins.github` — github.com and its REST API (GitHub Enterprise Server addressing);
* :mod:`standins.microsoft` — the Microsoft identity platform v2.0 and a bit of Graph;
* :mod:`standins.kit` — what they share: PKCE, request bodies, redirects, signing, the
  ``/_control/`` API (reset, the user, misbehaviours, scripted token faults, request logs) and
  the process runner.

Each runs as its own process from the repository root, e.g.
``python -m standins.oidc --port 9100``. The stand-ins never import the broker's code: they play
the other side of the protocol, so they must not share its bugs.
"""
