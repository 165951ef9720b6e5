"""PKCE S256 as the token endpoint computes it (RFC 7636 §4.2)."""

from __future__ import annotations

from broker.oauth.codes import s256


def test_s256_matches_the_rfc7636_appendix_b_vector() -> None:
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"

    assert s256(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_s256_is_unpadded_base64url() -> None:
    challenge = s256("a" * 43)

    assert len(challenge) == 43
    assert "=" not in challenge and "+" not in challenge and "/" not in challenge
