"""``/healthz`` (the process answers) and ``/readyz`` (ready to take traffic).

Ready means: the database answers within ``CHECK_TIMEOUT`` seconds, its schema is this
release's (or a newer release's, whose migrations ran before its rollout), the signing keys are
loaded, and the process is not shutting down.
"""

from __future__ import annotations

import asyncio

import structlog
from shared.db.migrate import SchemaRevisions, current_revision
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from broker.http.context import runtime_of
from broker.http.openapi import Answer, Contract, Operation, json_answer, strict_object

CHECK_TIMEOUT = 2.0  # the manifests give the probe 3 s (the kubelet's default is 1 s)
log = structlog.get_logger("broker.health")


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    runtime = runtime_of(request)
    revisions: SchemaRevisions = request.app.state.schema_revisions
    checks: dict[str, object] = {
        "keys": runtime.keys.loaded,
        "database": False,
        "schema": "unknown",
        "shutting_down": runtime.stopping,
    }
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            current = await current_revision(runtime.engine)
        checks["database"] = True
        checks["schema"] = revisions.state(current)
    except (SQLAlchemyError, OSError, TimeoutError) as exc:
        # The type only: a driver's message can carry the URL with its password.
        log.warning("readiness.database_failed", error=type(exc).__name__)
    ready = (
        checks["keys"] is True
        and checks["database"] is True
        and checks["schema"] in ("current", "ahead")
        and not runtime.stopping
    )
    return JSONResponse(
        {"status": "ready" if ready else "not_ready", "checks": checks},
        status_code=200 if ready else 503,
    )


_READINESS = strict_object(
    {
        "status": {"enum": ["ready", "not_ready"]},
        "checks": strict_object(
            {
                "keys": {"type": "boolean"},
                "database": {"type": "boolean"},
                "schema": {"type": "string"},
                "shutting_down": {"type": "boolean"},
            },
            required=["keys", "database", "schema", "shutting_down"],
        ),
    },
    required=["status", "checks"],
)

# The probes, and the scrape (``broker.http.metrics``): none of them reads the database
# through the request path's error handling (readiness reports it instead of failing).
CONTRACT = Contract(
    operations=(
        Operation(
            "GET",
            "/healthz",
            "healthz",
            "Liveness: the process answers",
            "Operations",
            answers=(
                json_answer(
                    200, "alive", strict_object({"status": {"const": "ok"}}, required=["status"])
                ),
            ),
            reads_database=False,
        ),
        Operation(
            "GET",
            "/readyz",
            "readyz",
            "Readiness: database reachable, schema migrated, keys loaded, not shutting down",
            "Operations",
            answers=(
                json_answer(200, "ready", _READINESS),
                json_answer(503, "not ready, and why", _READINESS),
            ),
            reads_database=False,
        ),
        Operation(
            "GET",
            "/metrics",
            "metrics",
            "Prometheus metrics (text exposition format)",
            "Operations",
            answers=(Answer(200, "the metrics", {"text/plain": {"type": "string"}}),),
            reads_database=False,
        ),
    ),
)
