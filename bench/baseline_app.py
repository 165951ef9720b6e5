"""The baseline the broker is measured against: the same Starlette and uvicorn, no broker logic.

``GET /jwks`` answers with pre-serialised bytes (the broker's own JWKS response, read once at
startup from the file named by ``BENCH_BASELINE_JWKS_FILE``); ``POST /sign`` mints one ES256
access token with joserfc, with the broker's access-token claims, using the P-256 private JWK in
``BENCH_BASELINE_SIGNING_JWK``. Run it with
``uvicorn --factory bench.baseline_app:create_app``.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

JWKS_FILE_ENV = "BENCH_BASELINE_JWKS_FILE"
SIGNING_JWK_ENV = "BENCH_BASELINE_SIGNING_JWK"
ISSUER_ENV = "BENCH_BASELINE_ISSUER"
ACCESS_TOKEN_TTL = 900


def create_app() -> Starlette:
    """The baseline app, configured from the environment (read once, here)."""
    jwks_body = Path(os.environ[JWKS_FILE_ENV]).read_bytes()
    key = ECKey.import_key(json.loads(os.environ[SIGNING_JWK_ENV]))
    issuer = os.environ.get(ISSUER_ENV, "http://127.0.0.1:8000")
    header = {"alg": "ES256", "kid": key.kid, "typ": "at+jwt"}
    subject = str(uuid.uuid4())
    session_id = str(uuid.uuid4())
    auth_time = int(time.time())

    async def jwks(request: Request) -> Response:
        return Response(jwks_body, media_type="application/json")

    async def sign(request: Request) -> Response:
        issued = int(time.time())
        claims: dict[str, Any] = {
            "iss": issuer,
            "sub": subject,
            "aud": issuer,
            "exp": issued + ACCESS_TOKEN_TTL,
            "iat": issued,
            "nbf": issued,
            "jti": uuid.uuid4().hex,
            "client_id": "bench",
            "scope": "openid email profile",
            "sid": session_id,
            "auth_time": auth_time,
        }
        token = jwt.encode(header, claims, key, algorithms=["ES256"])
        return JSONResponse({"access_token": token, "token_type": "Bearer"})

    return Starlette(
        routes=[Route("/jwks", jwks, methods=["GET"]), Route("/sign", sign, methods=["POST"])]
    )
