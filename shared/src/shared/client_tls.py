"""The TLS context of a process's outbound HTTP clients, built once and shared.

httpx builds a context for every client it creates, and building one reads the whole CA bundle:
about 20 ms of CPU and a copy of the trust store each time. The broker's and the worker's
clients (the process's own, and one per upstream provider) verify servers alike, so they share
this one; an ``ssl.SSLContext`` may serve any number of connections at once. The test suite's
most frequent clients (a browser per sign-in, readiness polls) pass it too.
"""

from __future__ import annotations

import functools
import ssl

import httpx2


@functools.cache
def client_tls_context() -> ssl.SSLContext:
    """httpx's default verifying context (the system's CA bundle, or ``SSL_CERT_FILE`` /
    ``SSL_CERT_DIR`` when set), built on first use."""
    return httpx2.create_ssl_context(trust_env=True)
