"""OpenTelemetry tracing: off unless an OTLP endpoint is configured (``Settings.tracing``).

When it is off nothing is installed and every traced component takes its untraced path (no
tracer, no wrapper, no span objects); the SDK, the exporter and the SQLAlchemy instrumentation
are not even imported. When it is on, the process builds one SDK tracer provider at start
(``install``; its makeup in ``provider``) and passes it down with its other resources; the
components make their spans from it (``spans``: how each opens one and records a failure):

- ``database``: a span per SQL statement of the SQLAlchemy engine and of the hot-path pool
  (statement text with its placeholders, never the bound values);
- ``http_client``: a span per upstream HTTP request (method, URL without its query string,
  status; never headers or bodies);
- ``jobs``: the trace context carried from the enqueuing span into the job, so a sign-in and
  the profile sync it queued are one trace;
- the broker's server span per request lives with its request observer
  (``broker.http.request_tracing``).

What a span may carry: docs/security.md "What traces carry".
"""
