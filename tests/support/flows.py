"""A browser and a relying party in code: drive the broker's login flow step by step.

Broker URLs go to the in-process app (with its cookie jar); upstream URLs go over real HTTP to
the upstream IdP process. Redirects are followed by hand so each hop can be inspected.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
from shared.client_tls import client_tls_context


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    return verifier, challenge.rstrip(b"=").decode()


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query, keep_blank_values=True).items()}


def relative(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


LINK_CONTINUE = 'id="link-continue"'


def link_continue_url(page: str) -> str:
    """The "Continue" button's target on the link confirmation page."""
    match = re.search(r'id="link-continue" href="([^"]+)"', page)
    assert match, page[:500]
    return html.unescape(match.group(1))


@dataclass
class AuthorizationResult:
    """Where the broker finally sent the browser, and every hop on the way."""

    location: str
    params: dict[str, str]
    verifier: str | None
    nonce: str
    state: str
    hops: list[httpx2.Response] = field(default_factory=list)


async def authorize(
    broker: httpx2.AsyncClient,
    *,
    client_id: str = "web",
    redirect_uri: str = "http://127.0.0.1:3000/callback",
    provider: str | None = "corp",
    scope: str = "openid email profile offline_access",
    pkce: bool = True,
    extra: dict[str, str] | None = None,
    dev_identity: tuple[str, str] = ("ada@example.com", "Ada Lovelace"),
    start_path: str = "/authorize",
    headers: dict[str, str] | None = None,
    confirm_link: bool = True,
) -> AuthorizationResult:
    """Run /authorize (or ``start_path``, e.g. a link flow) through the upstream and back;
    returns the final client redirect. A link confirmation page is confirmed unless
    ``confirm_link`` is false (the flow then ends on that page)."""
    verifier, challenge = pkce_pair() if pkce else (None, None)
    state, nonce = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    params: dict[str, str] = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": scope,
        "state": state,
        "nonce": nonce,
    }
    if provider:
        params["provider"] = provider
    if challenge:
        params.update(code_challenge=challenge, code_challenge_method="S256")
    params.update(extra or {})
    own = str(broker.base_url).rstrip("/")  # the broker's issuer, in-process or a real process
    hops: list[httpx2.Response] = []
    response = await broker.get(start_path, params=params, headers=headers)
    hops.append(response)
    async with httpx2.AsyncClient(verify=client_tls_context()) as browser_upstream:
        for _ in range(8):
            if confirm_link and response.status_code == 200 and LINK_CONTINUE in response.text:
                # The link confirmation page: the person clicks "Continue" (an upstream URL).
                response = await browser_upstream.get(link_continue_url(response.text))
                hops.append(response)
                continue
            if response.status_code not in (302, 303):
                break
            location = response.headers["location"]
            if location.startswith(own + "/auth/oauth2/") or location.startswith("/auth/"):
                if "/dev-login" in location:
                    form = query_of(location)
                    response = await broker.post(
                        relative(location),
                        data={
                            "state": form["state"],
                            "email": dev_identity[0],
                            "name": dev_identity[1],
                        },
                    )
                else:
                    response = await broker.get(relative(location))
            elif location.startswith(own):
                response = await broker.get(relative(location))
            elif location.startswith(redirect_uri.split("?")[0]) or not location.startswith(
                "http://127.0.0.1:"
            ):
                break
            else:
                response = await browser_upstream.get(location)
            hops.append(response)
    final = hops[-1]
    location = final.headers.get("location", "")
    return AuthorizationResult(
        location=location,
        params=query_of(location) if location else {},
        verifier=verifier,
        nonce=nonce,
        state=state,
        hops=hops,
    )


async def exchange(
    broker: httpx2.AsyncClient,
    result: AuthorizationResult,
    *,
    client_id: str = "web",
    client_secret: str | None = None,
    redirect_uri: str = "http://127.0.0.1:3000/callback",
) -> httpx2.Response:
    data = {
        "grant_type": "authorization_code",
        "code": result.params["code"],
        "redirect_uri": redirect_uri,
    }
    if result.verifier:
        data["code_verifier"] = result.verifier
    auth = None
    if client_secret is None:
        data["client_id"] = client_id
    else:
        auth = (client_id, client_secret)
    return await broker.post("/token", data=data, auth=auth)


async def login(broker: httpx2.AsyncClient, **kwargs: Any) -> dict[str, Any]:
    """The whole code flow for a public client (`web` unless told); returns the token response."""
    result = await authorize(broker, **kwargs)
    assert "code" in result.params, (result.location, [h.text[:300] for h in result.hops])
    response = await exchange(
        broker,
        result,
        client_id=kwargs.get("client_id", "web"),
        redirect_uri=kwargs.get("redirect_uri", "http://127.0.0.1:3000/callback"),
    )
    assert response.status_code == 200, response.text
    payload: dict[str, Any] = response.json()
    payload["_nonce"] = result.nonce
    return payload


def bearer(tokens: Mapping[str, Any]) -> dict[str, str]:
    """The ``Authorization`` header of a token response's access token."""
    return {"Authorization": f"Bearer {tokens['access_token']}"}


async def refresh(
    broker: httpx2.AsyncClient,
    refresh_token: str,
    client_id: str = "web",
    headers: dict[str, str] | None = None,
) -> httpx2.Response:
    return await broker.post(
        "/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": client_id,
        },
        headers=headers,
    )
