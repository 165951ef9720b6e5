"""Verifier throughput: ``oidc_broker_verifier`` with a warm JWKS cache against raw joserfc.

Both check the same access token the same way (signature with the key its ``kid`` names, then
``typ``, ``iss``, ``aud``, ``exp``); the ratio of their rates is the wrapper's cost. Runs in this
process, on one core, after the broker's JWKS was fetched once.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from joserfc import jwt
from joserfc.jwk import KeySet
from oidc_broker_verifier import AccessTokenVerifier


@dataclass(frozen=True)
class VerifierRates:
    verifier: float  # verifications per second
    joserfc: float

    @property
    def ratio(self) -> float:
        return self.verifier / self.joserfc if self.joserfc else float("nan")


def _rate(check: Callable[[], object], seconds: float) -> float:
    done, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        for _ in range(200):
            check()
        done += 200
    return done / elapsed


async def _async_rate(verifier: AccessTokenVerifier, token: str, seconds: float) -> float:
    """As a service calls it: ``await verifier.verify(token)`` in a handler."""
    done, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        for _ in range(200):
            await verifier.verify(token)
        done += 200
    return done / elapsed


def measure_verifier(
    issuer: str, jwks: dict[str, object], token: str, *, seconds: float = 2.0, rounds: int = 3
) -> VerifierRates:
    """Median rates over ``rounds`` alternating runs of ``seconds`` each."""
    verifier = AccessTokenVerifier(issuer, audience=issuer)
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(verifier.verify(token))  # fetch and cache the JWKS

        keys = KeySet.import_key_set(jwks)  # type: ignore[arg-type]
        registry = jwt.JWTClaimsRegistry(
            iss={"essential": True, "value": issuer},
            aud={"essential": True, "value": issuer},
            exp={"essential": True},
            leeway=10,
        )

        def raw() -> object:
            decoded = jwt.decode(token, keys, algorithms=["ES256"])
            if decoded.header.get("typ") != "at+jwt":
                raise ValueError("typ")
            registry.validate(decoded.claims)
            return decoded.claims

        ours, theirs = [], []
        for _ in range(rounds):
            ours.append(loop.run_until_complete(_async_rate(verifier, token, seconds)))
            theirs.append(_rate(raw, seconds))
        return VerifierRates(statistics.median(ours), statistics.median(theirs))
    finally:
        loop.run_until_complete(verifier.aclose())
        loop.close()
