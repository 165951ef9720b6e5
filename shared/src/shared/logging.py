"""structlog configuration: JSON (or console) output, and a processor that drops secrets.

Any field whose name looks like a token, secret, code, cookie or password is replaced, and any
string value that looks like a JWT or a bearer credential is masked, at every level
(docs/security.md "No secrets in logs"). authlib's logger is kept at INFO: it logs the PKCE verifier
at DEBUG.

With tracing on, every line logged while a span is current carries its ``trace_id`` and
``span_id`` (W3C hex), so an operator can go from a log line to its trace.

``build_access_logger`` is the one-line-per-request logger: same output format, its own lean
pipeline.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import orjson
import structlog
from opentelemetry import trace

REDACTED = "[redacted]"
_SECRET_KEY = re.compile(
    r"(token|secret|password|passwd|code|verifier|cookie|authorization|assertion|key|state|nonce)",
    re.IGNORECASE,
)
_SAFE_KEYS = {"status_code", "error_code", "kid", "token_type", "key_id", "grant_type"}
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")
_BEARER = re.compile(r"(?i)(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
_QUERY_SECRET = re.compile(
    r"(?i)((?:code|state|token|access_token|refresh_token|id_token|code_verifier|client_secret)=)[^&\s\"']+"
)


def _scrub_text(value: str) -> str:
    value = _JWT.sub(REDACTED, value)
    value = _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", value)
    return _QUERY_SECRET.sub(lambda m: m.group(1) + REDACTED, value)


def _scrub(key: str, value: Any) -> Any:
    if key not in _SAFE_KEYS and _SECRET_KEY.search(key) and value not in (None, "", True, False):
        return REDACTED
    if isinstance(value, str):
        return _scrub_text(value)
    if isinstance(value, dict):
        return {k: _scrub(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(key, v) for v in value]
    return value


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: never let a secret reach the output."""
    for key in list(event_dict):
        if key == "event":
            event_dict[key] = _scrub_text(str(event_dict[key]))
        else:
            event_dict[key] = _scrub(key, event_dict[key])
    return event_dict


def add_trace_ids(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: the current span's trace and span ids, when there is one."""
    span = trace.get_current_span().get_span_context()
    if span.is_valid:
        event_dict.setdefault("trace_id", trace.format_trace_id(span.trace_id))
        event_dict.setdefault("span_id", trace.format_span_id(span.span_id))
    return event_dict


def configure_logging(level: str = "INFO", fmt: str = "json", *, trace_ids: bool = False) -> None:
    """Route structlog and the standard library through one redacting pipeline to stderr;
    ``trace_ids`` (tracing on) adds the current span's ids to every line."""
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared_processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        *([add_trace_ids] if trace_ids else []),
        structlog.processors.format_exc_info,
        redact_secrets,
    ]
    structlog.configure(
        processors=[
            *shared_processors[:-2],
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared_processors[:-1],
            processors=[
                structlog.processors.format_exc_info,
                redact_secrets,
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # authlib logs the PKCE code_verifier at DEBUG (docs/security.md "Library traps"); httpx logs
    # request URLs.
    for name, floor in (
        ("authlib", logging.INFO),
        ("httpx", logging.WARNING),
        ("httpx2", logging.WARNING),
        ("httpcore", logging.WARNING),
        ("uvicorn.access", logging.WARNING),
    ):
        logging.getLogger(name).setLevel(max(floor, logging.getLevelName(level)))


def _orjson_text(event: Any, **_: Any) -> str:
    return orjson.dumps(event).decode()


def build_access_logger(
    level: str = "INFO", fmt: str = "json", stream: TextIO | None = None
) -> Any:
    """A logger for the access line of every request, in the format ``configure_logging`` uses.

    The stdlib pipeline above costs about 75 µs a line, as much as a whole JWKS request; this
    one writes straight to the stream for about 9 µs. It has no redaction step, so its callers
    pass only fields that cannot hold a secret: method, route template (never a URL), status,
    duration, checked request id, client and user ids.
    """
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_orjson_text)
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    logger = structlog.wrap_logger(
        structlog.WriteLogger(stream or sys.stderr),
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
    )
    return logger.bind(logger="broker.access")  # the key add_logger_name writes
