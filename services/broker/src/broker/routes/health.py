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
