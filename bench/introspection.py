"""Token checks beside the grant: the broker's introspection under wrk, and ``bench.verifier``."""

from __future__ import annotations

import base64
import json
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from bench.rounds import Measurement, Rounds, Target, print_run
from bench.verifier import VerifierRates, measure_verifier

INTROSPECTOR, INTROSPECTOR_SECRET = "bench-introspector", "bench-introspector-secret-0123456789"


@dataclass(frozen=True)
class Extras:
    introspection: Measurement
    verifier: VerifierRates


def measure_extras(
    workdir: Path, issuer: str, jwks_body: bytes, access_token: str, rounds: Rounds
) -> Extras:
    """Introspection under wrk (3 rounds) and the verifier against raw joserfc, in-process."""
    credentials = base64.b64encode(f"{INTROSPECTOR}:{INTROSPECTOR_SECRET}".encode()).decode()
    script = workdir / "introspect.lua"
    body = urllib.parse.urlencode({"token": access_token, "token_type_hint": "access_token"})
    script.write_text(
        'wrk.method = "POST"\n'
        f'wrk.body = "{body}"\n'
        'wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"\n'
        f'wrk.headers["Authorization"] = "Basic {credentials}"\n',
        encoding="ascii",
    )
    target = Target("introspect", "broker introspection", f"{issuer}/introspect", script=script)
    print("introspection and verifier")
    target.run(rounds.warmup, rounds.connections)
    introspection = Measurement(target.name, [])
    for _ in range(min(3, rounds.repeats)):
        result = target.run(rounds.duration, rounds.connections)
        assert result is not None
        print_run(target.name, result)
        introspection.runs.append(result)
    rates = measure_verifier(issuer, json.loads(jwks_body), access_token)
    print(f"  verifier {rates.verifier:,.0f}/s, raw joserfc {rates.joserfc:,.0f}/s")
    return Extras(introspection, rates)
