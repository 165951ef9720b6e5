"""The baselines the broker is measured against: the same Starlette and uvicorn, no broker logic.

- ``GET /jwks`` answers with pre-serialised bytes (the broker's own JWKS response, read once at
  startup from the file named by ``BENCH_BASELINE_JWKS_FILE``): the static baseline.
- ``POST /sign`` mints one access token, the one ``/token`` makes: the sign-only baseline.
- ``POST /token`` reads a refresh grant's form body and answers what the broker's refresh grant
  answers, without a database: an access token and an ID token with the same JOSE headers, the
  same claims in the same order (``iat``, ``nbf``, ``exp``, ``jti`` and ``at_hash`` made fresh per
  request), a random opaque refresh token of the broker's size, the same JSON fields and the same
  ``Cache-Control: no-store`` and ``Pragma: no-cache`` headers: the same-tokens baseline.

What the tokens carry is copied, once at startup, from one real refresh response of the broker
(the file named by ``BENCH_BASELINE_SAMPLE_RESPONSE``): its tokens' headers and claims become
templates, so the baseline follows the broker's claims, algorithms and sizes for the bench's
client and user and cannot drift from them (``tests/integration/test_bench_servers.py`` compares
the two responses). The keys are the broker's own signing keys, private JWKs in
``BENCH_BASELINE_SIGNING_JWKS`` (``{"keys": [...]}``), each token's picked by the ``kid`` of the
sample's header: the P-256 key for the ES256 access token, and for the ID token the key of the
algorithm the bench's client gets (RSA: RS256 is the default).

Per request the baseline does what a minimal app built on the same libraries would: the form
parsed with ``urllib.parse``, the claims copied from the template, each token signed with
``joserfc.jwt.encode`` and the body serialised by Starlette's ``JSONResponse``. The broker signs
with its own ``shared.crypto.jwt_signer`` (the same bytes, without joserfc's per-call checks), so
these are the costs a plain implementation pays; ``at_hash`` is authlib's ``create_half_hash``.
From shared code the app takes only the opaque-token generator (``shared.crypto.opaque``, which
imports nothing else: no extra heap for the collector to walk, no cost per call beyond
``secrets``), so that the refresh token's size is the broker's by construction.

Run it with ``uvicorn --factory bench.baseline_app:create_app``.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from authlib.oidc.core.util import create_half_hash
from joserfc import jws, jwt
from joserfc.jwk import KeySet
from shared.crypto.opaque import new_opaque_token
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

JWKS_FILE_ENV = "BENCH_BASELINE_JWKS_FILE"
SIGNING_JWKS_ENV = "BENCH_BASELINE_SIGNING_JWKS"
SAMPLE_RESPONSE_ENV = "BENCH_BASELINE_SAMPLE_RESPONSE"

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}  # RFC 6749 §5.1
ISSUED_AT_CLAIMS = ("iat", "nbf")  # set to the time of the request where the template has them


@dataclass(frozen=True)
class TokenTemplate:
    """One of the sample's tokens: its protected header, its claims, its key and lifetime."""

    header: dict[str, Any]
    claims: dict[str, Any]
    key: Any  # the joserfc key of the header's kid
    lifetime: int  # exp - iat

    @classmethod
    def from_token(cls, token: str, keys: KeySet) -> TokenTemplate:
        """The template of a token the broker signed with one of ``keys`` (verified here)."""
        alg = jws.extract_compact(token.encode("ascii")).protected["alg"]
        decoded = jwt.decode(token, keys, algorithms=[alg])
        header = dict(decoded.header)
        claims = dict(decoded.claims)
        return cls(header, claims, keys.get_by_kid(header["kid"]), claims["exp"] - claims["iat"])

    @property
    def alg(self) -> str:
        return str(self.header["alg"])

    def mint(self, issued: int, **fresh: Any) -> str:
        """The template's claims at ``issued`` with ``fresh`` values, signed as joserfc does."""
        claims = dict(self.claims)  # updating a key keeps its place: the same JSON, byte count
        for name in ISSUED_AT_CLAIMS:
            if name in claims:
                claims[name] = issued
        claims["exp"] = issued + self.lifetime
        claims.update(fresh)
        return jwt.encode(self.header, claims, self.key, algorithms=[self.alg])


def create_app() -> Starlette:
    """The baseline app, configured from the environment (read once, here)."""
    jwks_body = Path(os.environ[JWKS_FILE_ENV]).read_bytes()
    keys = KeySet.import_key_set(json.loads(os.environ[SIGNING_JWKS_ENV]))
    sample: dict[str, Any] = json.loads(Path(os.environ[SAMPLE_RESPONSE_ENV]).read_bytes())
    access = TokenTemplate.from_token(sample["access_token"], keys)
    identity = TokenTemplate.from_token(sample["id_token"], keys)
    token_type, expires_in, scope = sample["token_type"], sample["expires_in"], sample["scope"]

    def access_token(issued: int) -> str:
        return access.mint(issued, jti=secrets.token_urlsafe(16))

    async def jwks(request: Request) -> Response:
        return Response(jwks_body, media_type="application/json")

    async def sign(request: Request) -> Response:
        return JSONResponse(
            {"access_token": access_token(int(time.time())), "token_type": token_type}
        )

    async def token(request: Request) -> Response:
        params = dict(parse_qsl((await request.body()).decode("utf-8")))
        if params.get("grant_type") != "refresh_token" or not params.get("refresh_token"):
            return JSONResponse({"error": "invalid_request"}, status_code=400, headers=NO_STORE)
        issued = int(time.time())
        access_jwt = access_token(issued)
        # OIDC Core §3.1.3.6 at_hash, by authlib (test_bench_servers checks it against the broker).
        half_hash = create_half_hash(access_jwt, identity.alg).decode("ascii")
        id_jwt = identity.mint(issued, at_hash=half_hash)
        body = {
            "access_token": access_jwt,
            "token_type": token_type,
            "expires_in": expires_in,
            "refresh_token": new_opaque_token(),
            "id_token": id_jwt,
            "scope": scope,
        }
        return JSONResponse(body, headers=NO_STORE)

    return Starlette(
        routes=[
            Route("/jwks", jwks, methods=["GET"]),
            Route("/sign", sign, methods=["POST"]),
            Route("/token", token, methods=["POST"]),
        ]
    )
