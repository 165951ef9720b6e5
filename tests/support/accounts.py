"""Signing in test users through the upstream stand-in, and reading their audit rows."""

from __future__ import annotations

import uuid
from typing import Any

import httpx2
from shared.db.tables import AUDIT_TABLE
from shared.runtime import Runtime
from sqlalchemy import select

from tests.support.flows import login

# A broker with a signed-in admin: (runtime, client, the admin's bearer headers, admin user id).
Admin = tuple[Runtime, httpx2.AsyncClient, dict[str, str], str]


# The tests' client allowed to ask for the admin scope (tests/conftest.py).
CONSOLE = {
    "client_id": "console",
    "redirect_uri": "http://127.0.0.1:3000/console",
    "scope": "openid email profile offline_access admin",
}


async def sign_in(
    broker: httpx2.AsyncClient, idp: httpx2.AsyncClient, *, admin_scope: bool = False, **claims: Any
) -> Any:
    """A new upstream user signs in through `web`, or with ``admin_scope`` through `console`
    asking for the admin scope; returns the subject and Bearer headers."""
    subject = f"sync-{uuid.uuid4().hex[:10]}"
    user = {
        "sub": subject,
        "email": f"{subject}@corp.example",
        "email_verified": True,
        "name": "Before Sync",
        **claims,
    }
    await idp.post("/_control/user", json=user)
    tokens = await login(broker, **(CONSOLE if admin_scope else {}))
    return subject, {"Authorization": f"Bearer {tokens['access_token']}"}


async def corp_profile(broker: httpx2.AsyncClient, headers: dict[str, str]) -> dict[str, Any]:
    document: dict[str, Any] = (await broker.get("/auth/oauth2/profile", headers=headers)).json()
    return document


async def audit_rows(runtime: Runtime, user_id: str, action: str) -> list[Any]:
    async with runtime.engine.connect() as connection:
        return list(
            (
                await connection.execute(
                    select(AUDIT_TABLE).where(
                        AUDIT_TABLE.c.subject == user_id, AUDIT_TABLE.c.action == action
                    )
                )
            ).all()
        )
