"""The OAuth 2.0 / OIDC core: ``/authorize`` validation, clients, codes, grants, tokens.

Also the abuse limits on client authentication, tokens presented for revocation or
introspection, callers of the first-party API, the admin role and scope, and the dashboard's
built-in client. Imports only ``broker.http`` of the broker.
"""
