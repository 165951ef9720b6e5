"""GitHub and GitHub Enterprise: plain OAuth 2.0 (no ID token), identity from the REST API.

* The identity is the numeric account ``id`` from ``GET /user`` (logins can be renamed).
* The email is the one ``GET /user/emails`` marks ``primary`` *and* ``verified``; a user without
  one signs in with ``email_verified`` false and no email (docs/security.md "GitHub emails and token
  expiry"). GitHub only lists
  addresses it verified the user controls, so a verified primary address is authoritative.
* Whether tokens expire is read from each token response (``expires_in``, ``refresh_token``):
  expiring user tokens (8 hours, with a rotating 6-month refresh token) are the default for
  GitHub Apps and new OAuth Apps, older OAuth Apps get tokens that never expire.
* ``allowed_organizations`` / ``allowed_teams`` restrict who may sign in; the allow-listed
  memberships, and only those, are exposed as ``groups`` (``org`` and ``org/team-slug``, as
  configured). Without an allow-list there are no groups.
* Token-endpoint errors come back as HTTP 200 with an ``error`` field; authlib raises them like
  any OAuth error and ``bad_refresh_token`` counts as a dead grant.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import httpx2
from opentelemetry.trace import Tracer

from shared.clock import Clock
from shared.providers.base import (
    LoginStart,
    ProbeStep,
    UpstreamLogin,
    UpstreamProfile,
    UpstreamTokens,
)
from shared.providers.errors import ProviderDenied, ProviderInvalidResponse
from shared.providers.http import get_json, get_json_object
from shared.providers.oauth2 import (
    OAuth2Credentials,
    OAuth2Endpoints,
    OAuth2Flow,
    check_callback,
    translated_errors,
)
from shared.providers.oidc import text_claim
from shared.settings import GitHubProviderConfig

API_HEADERS = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}
MAX_PAGES = 10


class GitHubProvider:
    def __init__(
        self,
        config: GitHubProviderConfig,
        *,
        http: httpx2.AsyncClient,
        clock: Clock,
        tracer: Tracer | None = None,
    ) -> None:
        assert config.client_secret is not None
        self._config = config
        self._http = http
        self._client_secret = config.client_secret.get_secret_value()
        self._flow = OAuth2Flow(
            OAuth2Credentials(
                client_id=config.client_id,
                client_secret=self._client_secret,
                # GitHub documents the credentials as form parameters.
                auth_method=config.token_endpoint_auth_method or "client_secret_post",
            ),
            scopes=config.requested_scopes,
            clock=clock,
            timeout=config.timeout,
            tracer=tracer,
        )
        self._endpoints = OAuth2Endpoints(
            authorization_endpoint=f"{config.base_url}/login/oauth/authorize",
            token_endpoint=f"{config.base_url}/login/oauth/access_token",
        )

    @property
    def id(self) -> str:
        return self._config.id

    @property
    def type(self) -> str:
        return "github"

    @property
    def display_name(self) -> str:
        return self._config.title

    @property
    def reprompts_for_refresh_token(self) -> bool:
        return False

    def probe_steps(self) -> tuple[ProbeStep, ...]:
        # Plain OAuth 2.0: no discovery or JWKS to read. The REST API's unauthenticated
        # `/meta` shows that the API the sign-in needs answers.
        return (ProbeStep("api", self._probe_api),)

    async def _probe_api(self) -> None:
        await get_json(self._http, f"{self._config.api_url}/meta", "api", headers=API_HEADERS)

    async def authorization_url(self, start: LoginStart) -> str:
        # GitHub has no OIDC nonce, prompt or max_age; `prompt=select_account` is its only
        # prompt, so a relying party's prompt=login offers the account picker.
        params = {"prompt": "select_account"} if start.prompt else {}
        plain = LoginStart(
            redirect_uri=start.redirect_uri,
            state=start.state,
            nonce="",
            code_verifier=start.code_verifier,
        )
        return self._flow.authorization_url(self._endpoints, plain, params)

    async def complete_login(
        self, start: LoginStart, callback_params: Mapping[str, str]
    ) -> UpstreamLogin:
        code = check_callback(callback_params, expected_issuer=None, iss_required=False)
        raw = await self._flow.exchange_code(self._endpoints, code, start)
        tokens = self._flow.tokens_from(raw)
        profile = await self._profile(tokens.access_token)
        return UpstreamLogin(profile=profile, tokens=tokens)

    @property
    def syncs_through_refresh(self) -> bool:
        return False

    async def fetch_profile(self, tokens: UpstreamTokens, *, subject: str) -> UpstreamProfile:
        profile = await self._profile(tokens.access_token)
        if profile.subject != subject:
            raise ProviderInvalidResponse("the GitHub account is not the linked one")
        return profile

    async def _api(self, path: str, access_token: str) -> Any:
        return await get_json(
            self._http,
            f"{self._config.api_url}{path}",
            f"GitHub {path}",
            bearer=access_token,
            headers=API_HEADERS,
        )

    async def _profile(self, access_token: str) -> UpstreamProfile:
        user = await get_json_object(
            self._http,
            f"{self._config.api_url}/user",
            "GitHub /user",
            bearer=access_token,
            headers=API_HEADERS,
        )
        account_id = user.get("id")
        if not isinstance(account_id, int) or isinstance(account_id, bool):
            raise ProviderInvalidResponse("GitHub /user has no numeric id")
        email, verified = await self._verified_email(access_token)
        groups = await self._groups(access_token)
        login = text_claim(user.get("login"))
        # docs/security.md "Groups are labelled by provider": only the allow-listed memberships,
        # never what /user says;
        # always present (an empty list without an allow-list), so a sync that finds none
        # drops the ones stored before.
        claims: dict[str, Any] = {**user, "groups": groups}
        return UpstreamProfile(
            subject=str(account_id),
            issuer=self._config.base_url,
            email=email,
            email_verified=verified,
            email_authoritative=verified,
            name=text_claim(user.get("name")) or login,
            preferred_username=login,
            picture=text_claim(user.get("avatar_url")),
            claims=claims,
        )

    async def _verified_email(self, access_token: str) -> tuple[str | None, bool]:
        """The primary address if GitHub verified it; else no email at all."""
        try:
            emails = await self._api("/user/emails", access_token)
        except ProviderInvalidResponse:
            return None, False  # e.g. 403 without the user:email scope: no verified email
        if not isinstance(emails, list):
            return None, False
        for entry in emails:
            if (
                isinstance(entry, dict)
                and entry.get("primary") is True
                and entry.get("verified") is True
                and text_claim(entry.get("email"))
            ):
                return str(entry["email"]), True
        return None, False

    async def _paged(self, path: str, access_token: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        for page in range(1, MAX_PAGES + 1):
            batch = await self._api(f"{path}?per_page=100&page={page}", access_token)
            if not isinstance(batch, list):
                raise ProviderInvalidResponse(f"GitHub {path} is not a list")
            items.extend(entry for entry in batch if isinstance(entry, dict))
            if len(batch) < 100:
                break
        return items

    async def _groups(self, access_token: str) -> list[str]:
        """The allow-listed organizations and teams the user is in (none without an allow-list);
        ``ProviderDenied`` when there is an allow-list and the user is in none of it.

        docs/security.md "Groups are labelled by provider": any other organization or team is named
        by whoever created
        it and vouches for nothing, so it is not released; the released names are spelled as
        configured (GitHub compares logins and slugs without case).
        """
        config = self._config
        if not (config.allowed_organizations or config.allowed_teams):
            return []
        orgs: set[str] = set()
        if config.allowed_organizations:
            orgs = {
                str(org["login"]).lower()
                for org in await self._paged("/user/orgs", access_token)
                if text_claim(org.get("login"))
            }
        teams: set[str] = set()
        if config.allowed_teams:
            for team in await self._paged("/user/teams", access_token):
                organization = team.get("organization")
                org_login = organization.get("login") if isinstance(organization, dict) else None
                if text_claim(org_login) and text_claim(team.get("slug")):
                    teams.add(f"{org_login}/{team['slug']}".lower())
        groups = {org for org in config.allowed_organizations if org.lower() in orgs} | {
            team for team in config.allowed_teams if team.lower() in teams
        }
        if not groups:
            raise ProviderDenied(
                "access_denied", "the GitHub account is not in an allowed organization or team"
            )
        return sorted(groups)

    async def refresh(self, refresh_token: str) -> UpstreamTokens:
        raw = await self._flow.refresh(self._endpoints, refresh_token)
        return self._flow.tokens_from(raw, previous_refresh=refresh_token)

    async def aclose(self) -> None:
        await self._flow.aclose()

    async def revoke(self, *, access_token: str | None, refresh_token: str | None) -> None:
        """``DELETE /applications/{client_id}/grant`` with the access token, authenticated as
        the app: it ends the authorization and every token of it (GitHub takes no refresh
        token here)."""
        if not access_token:
            return
        credentials = f"{self._config.client_id}:{self._client_secret}".encode()
        async with translated_errors("token revocation"):
            response = await self._http.request(
                "DELETE",
                f"{self._config.api_url}/applications/{self._config.client_id}/grant",
                json={"access_token": access_token},
                headers={
                    **API_HEADERS,
                    "Authorization": "Basic " + base64.b64encode(credentials).decode(),
                },
            )
            if response.status_code >= 500 or response.status_code == 429:
                response.raise_for_status()
