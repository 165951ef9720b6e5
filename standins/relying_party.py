"""A relying party's back-channel logout endpoint: receives Logout Tokens from an OpenID Provider
and verifies each one strictly (OpenID Connect Back-Channel Logout 1.0 §2.5-§2.8).

``POST /backchannel-logout`` takes a form with one ``logout_token`` and checks, in the order of
§2.6: the JWS with the provider's keys (``jwks_uri`` from its discovery document, read over HTTP;
read again once for an unknown ``kid``), the algorithm pinned to the one the client registered
(``--alg``), the header's ``typ: logout+jwt``; ``iss`` the provider, ``aud`` this client,
``iat`` not in the future and ``exp`` not past (30 s leeway); ``jti`` present and never seen
before; ``events`` an object holding the back-channel logout event as an object; ``sub`` or
``sid``; no ``nonce``. A valid token is recorded and answered 200 (``Cache-Control:
no-store``); anything else 400 with an ``error`` (§2.8), recorded with the reason.

Control API:

* ``POST /_control/reset`` — forget every token received, rejected or seen, end an outage;
* ``POST /_control/outage`` ``{"mode": "unavailable" | "none", "duration": null}`` — the relying
  party is down: ``/backchannel-logout`` answers 503 without reading the request, until ``none``,
  a reset, or ``duration`` seconds;
* ``GET /_control/logouts`` — ``{"received": [{"sid", "sub", "jti", "iat", "exp", "alg",
  "kid"}], "rejected": [{"reason"}], "refused_while_down": n}``.

Run: ``python -m standins.relying_party --port 9400 --issuer http://127.0.0.1:8000
--client-id web``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx2
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from standins.kit.bodies import json_object, non_negative_number
from standins.kit.faults import Outage
from standins.kit.runner import run

LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
LEEWAY = 30
NO_STORE = {"Cache-Control": "no-store"}


class Rejected(Exception):
    """The Logout Token is not valid; the message says why (§2.8: answered 400)."""


@dataclass
class ProviderKeys:
    """The provider's JWKS, read from its discovery document's ``jwks_uri`` when first needed."""

    issuer: str
    keys: KeySet | None = None

    async def key_set(self, *, refresh: bool = False) -> KeySet:
        if self.keys is None or refresh:
            async with httpx2.AsyncClient(timeout=5.0) as http:
                metadata = (
                    await http.get(f"{self.issuer}/.well-known/openid-configuration")
                ).json()
                if metadata.get("issuer") != self.issuer:
                    raise Rejected("the discovery document names another issuer")
                self.keys = KeySet.import_key_set((await http.get(metadata["jwks_uri"])).json())
        return self.keys


@dataclass
class Receiver:
    """What the relying party knows (its client id, the provider) and what it has seen."""

    issuer: str
    client_id: str
    alg: str
    provider: ProviderKeys
    outage: Outage = field(default_factory=Outage)
    received: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    seen_jtis: set[str] = field(default_factory=set)
    refused_while_down: int = 0

    def reset(self) -> None:
        self.outage.clear()
        self.received.clear()
        self.rejected.clear()
        self.seen_jtis.clear()
        self.refused_while_down = 0

    async def verify(self, token: str) -> dict[str, Any]:
        """§2.6 steps 1-7: the claims of a valid Logout Token, else :class:`Rejected`."""
        try:
            header = jws.extract_compact(token.encode()).headers()
        except (JoseError, ValueError, TypeError):
            raise Rejected("not a JWS compact serialization") from None
        if header.get("alg") != self.alg:
            raise Rejected(f"alg {header.get('alg')!r} is not the registered {self.alg}")
        if header.get("typ") != "logout+jwt":
            raise Rejected(f"typ {header.get('typ')!r} is not logout+jwt")
        keys = await self.provider.key_set()
        if header.get("kid") not in {key.kid for key in keys.keys}:
            keys = await self.provider.key_set(refresh=True)  # the provider rotated its keys
        try:
            decoded = jwt.decode(token, keys, algorithms=[self.alg])
        except (JoseError, ValueError, TypeError):
            raise Rejected("the signature does not verify with the provider's keys") from None
        claims = dict(decoded.claims)
        self._check_claims(claims)
        return {**claims, "alg": decoded.header["alg"], "kid": decoded.header.get("kid")}

    def _check_claims(self, claims: dict[str, Any]) -> None:
        now = int(time.time())
        if claims.get("iss") != self.issuer:
            raise Rejected("iss is not the provider")
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if self.client_id not in audiences:
            raise Rejected("aud does not name this client")
        iat, exp = claims.get("iat"), claims.get("exp")
        if not isinstance(iat, int) or iat > now + LEEWAY:
            raise Rejected("iat is missing or in the future")
        if not isinstance(exp, int) or exp < now - LEEWAY:
            raise Rejected("exp is missing or past")
        events = claims.get("events")
        if not isinstance(events, dict) or not isinstance(events.get(LOGOUT_EVENT), dict):
            raise Rejected("events does not hold the back-channel logout event")
        if not claims.get("sub") and not claims.get("sid"):
            raise Rejected("neither sub nor sid")
        if "nonce" in claims:
            raise Rejected("a Logout Token never carries a nonce")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti:
            raise Rejected("jti is missing")
        if jti in self.seen_jtis:
            raise Rejected("jti was seen before: a replay")


def create_app(issuer: str, client_id: str, alg: str) -> Starlette:
    receiver = Receiver(issuer, client_id, alg, ProviderKeys(issuer))

    async def backchannel_logout(request: Request) -> Response:
        if receiver.outage.current() == "unavailable":
            receiver.refused_while_down += 1
            return JSONResponse({"error": "temporarily_unavailable"}, 503, headers=NO_STORE)
        form = await request.form()
        tokens = [value for value in form.getlist("logout_token") if isinstance(value, str)]
        try:
            if request.headers.get("content-type", "").split(";")[0].strip() != (
                "application/x-www-form-urlencoded"
            ):
                raise Rejected("not a form POST")
            if len(tokens) != 1:
                raise Rejected("expected exactly one logout_token")
            claims = await receiver.verify(tokens[0])
        except httpx2.HTTPError:
            # The provider's keys cannot be read now: a failure of ours, not of the token.
            return JSONResponse({"error": "temporarily_unavailable"}, 503, headers=NO_STORE)
        except Rejected as exc:
            receiver.rejected.append({"reason": str(exc)})
            return JSONResponse(
                {"error": "invalid_request", "error_description": str(exc)}, 400, headers=NO_STORE
            )
        receiver.seen_jtis.add(claims["jti"])
        receiver.received.append(
            {
                name: claims.get(name)
                for name in ("sid", "sub", "jti", "iat", "exp", "alg", "kid", "aud")
            }
        )
        return Response(status_code=200, headers=NO_STORE)

    async def reset(request: Request) -> Response:
        receiver.reset()
        return JSONResponse({"reset": True})

    async def outage(request: Request) -> Response:
        body = await json_object(request)
        duration = body.get("duration") if body else None
        if body is None or body.get("mode") not in ("unavailable", "none"):
            return JSONResponse({"error": "mode must be 'unavailable' or 'none'"}, 400)
        if duration is not None and not non_negative_number(duration):
            return JSONResponse({"error": "'duration' must be a number >= 0, or null"}, 400)
        if body["mode"] == "none":
            receiver.outage.clear()
        else:
            receiver.outage.start("unavailable", 0.0, None if duration is None else duration)
        return JSONResponse(receiver.outage.as_json())

    async def logouts(request: Request) -> Response:
        return JSONResponse(
            {
                "received": receiver.received,
                "rejected": receiver.rejected,
                "refused_while_down": receiver.refused_while_down,
            }
        )

    return Starlette(
        routes=[
            Route("/backchannel-logout", backchannel_logout, methods=["POST"]),
            Route("/_control/reset", reset, methods=["POST"]),
            Route("/_control/outage", outage, methods=["POST"]),
            Route("/_control/logouts", logouts, methods=["GET"]),
        ]
    )


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--issuer", required=True, help="the OpenID Provider's issuer URL")
    parser.add_argument("--alg", default="RS256", help="the client's ID token algorithm")


def main(argv: Sequence[str] | None = None) -> None:
    """Serve the relying party until interrupted."""
    run(
        argv,
        description=__doc__,
        default_port=9400,
        add_arguments=_arguments,
        build=lambda args, _default_url: create_app(args.issuer, args.client_id, args.alg),
    )


if __name__ == "__main__":
    main()
