"""HTTP plumbing under every endpoint: request context, errors, bodies, cookies, CSRF, pages.

Also the request observer and metrics, CORS, the body cap and the direct routes. The bottom layer
of the broker: it imports no other broker package.
"""
