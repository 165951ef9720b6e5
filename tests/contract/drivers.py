"""One driver per provider type: how the contract suite makes a user at that type's stand-in,
what the broker should then record, and what the type promises where types differ.

The stand-ins share one control API (``standins/kit/control.py``), so scripting a failure is the
same call for every upstream; only the shape of a user, and of the identity the broker keys it
by (docs/security.md "Identity is provider and subject"), differs.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx2

from standins.microsoft import DEFAULT_TENANT


@dataclass(frozen=True)
class Identity:
    """A user made at a stand-in, and what the broker should record for it."""

    subject: str  # the link's subject: Google/OIDC `sub`, GitHub's numeric id, Entra `tid:oid`
    email: str
    email_verified: bool
    key: str  # the stand-in's key for `POST /_control/users/{key}`


class Driver:
    """A provider type of the contract broker (its provider id is the type's name)."""

    type: ClassVar[str]
    # Unlinking revokes the grant at the upstream (RFC 7009, or GitHub's DELETE .../grant).
    revokes_upstream: ClassVar[bool] = True
    # What the broker tells the client when the upstream rejects the code at the exchange.
    rejected_code_error: ClassVar[str] = "access_denied"
    # Misbehaviours of the stand-in that break the proof of identity at a login.
    broken_identity_proofs: ClassVar[tuple[str, ...]] = ()

    def __init__(self, control: httpx2.AsyncClient | None) -> None:
        self._control = control

    @property
    def control(self) -> httpx2.AsyncClient:
        assert self._control is not None, f"{self.type} has no stand-in to script"
        return self._control

    async def new_user(self) -> Identity:
        """A fresh user at the stand-in, whom the next authorization is issued for."""
        raise NotImplementedError

    async def _post(self, path: str, body: dict[str, Any]) -> None:
        response = await self.control.post(path, json=body)
        assert response.status_code == 200, response.text

    async def misbehave(self, mode: str) -> None:
        await self._post("/_control/misbehave", {"mode": mode})

    async def fail_next_code_exchange(self, mode: str) -> None:
        await self._post("/_control/code_faults", {"mode": mode})

    async def fail_next_refresh(self, mode: str, *, seconds: float = 1.0) -> None:
        await self._post("/_control/refresh_faults", {"mode": mode, "seconds": seconds})

    async def rename(self, identity: Identity, name: str) -> None:
        """Change the user's name upstream (what a profile sync should pick up)."""
        await self._post(f"/_control/users/{identity.key}", {"name": name})


def _email(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex[:10]}@example.com"


class OIDCDriver(Driver):
    type = "oidc"
    broken_identity_proofs = ("wrong_aud", "alg_none", "userinfo_sub_mismatch")

    async def new_user(self) -> Identity:
        subject, email = uuid.uuid4().hex, _email(self.type)
        user = {"sub": subject, "email": email, "email_verified": True, "name": "Contract User"}
        await self._post("/_control/user", user)
        return Identity(subject=subject, email=email, email_verified=True, key=subject)


class GoogleDriver(OIDCDriver):
    type = "google"
    broken_identity_proofs = ("bad_signature", "expired")


class GitHubDriver(Driver):
    type = "github"
    # GitHub answers a dead code with HTTP 200 `bad_verification_code`, not an RFC 6749
    # `invalid_grant`: the provider counts it as an answer that fails its checks.
    rejected_code_error = "server_error"

    async def new_user(self) -> Identity:
        account_id, email = random.randint(10_000_000, 99_999_999), _email(self.type)
        account = {
            "id": account_id,
            "login": f"contract{account_id}",
            "name": "Contract User",
            "emails": [{"email": email, "primary": True, "verified": True, "visibility": None}],
        }
        await self._post("/_control/user", account)
        key = str(account_id)
        return Identity(subject=key, email=email, email_verified=True, key=key)


class MicrosoftDriver(Driver):
    type = "microsoft"
    # Entra has no token revocation endpoint: unlinking can only forget the tokens.
    revokes_upstream = False
    broken_identity_proofs = ("iss_other_tenant", "iss_template", "iss_v1")

    async def new_user(self) -> Identity:
        oid, email = str(uuid.uuid4()), _email(self.type)
        user = {
            "tid": DEFAULT_TENANT,
            "oid": oid,
            "name": "Contract User",
            "preferred_username": email,
            "email": email,
            "xms_edov": True,  # docs/security.md "Microsoft tenants and nOAuth": a proven address
            "photo": None,
        }
        await self._post("/_control/user", user)
        return Identity(
            subject=f"{DEFAULT_TENANT}:{oid}", email=email, email_verified=True, key=oid
        )


class DevDriver(Driver):
    """The broker's own form: no upstream, so only the login step applies."""

    type = "dev"

    async def new_user(self) -> Identity:
        email = _email(self.type)
        # docs/security.md "Dev provider is local and unverified": keyed and never verified.
        return Identity(subject=email, email=email, email_verified=False, key=email)


DRIVERS: dict[str, type[Driver]] = {
    driver.type: driver
    for driver in (OIDCDriver, GoogleDriver, GitHubDriver, MicrosoftDriver, DevDriver)
}
UPSTREAM_TYPES = ["oidc", "google", "github", "microsoft"]
"""The provider types with an upstream: every scenario runs for each."""
ALL_TYPES = [*UPSTREAM_TYPES, "dev"]
"""Where a step applies to the broker's own ``dev`` form too (the login)."""
