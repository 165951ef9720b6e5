"""What every stand-in shares, one concept per module: ``pkce``, ``bodies`` (forms, JSON, client
credentials), ``redirects``, ``signing`` (keys, JWKS, JWTs), ``faults`` (scripted token-endpoint
failures and the refresh log), ``control`` (the ``/_control/`` API), ``images`` and ``runner``
(``main(argv)`` with ``--port``)."""
