"""Profile sync: read a linked identity from its upstream with the user's tokens, store what
changed (email, its verification, names, avatar, groups), and audit the changed field names.

Periodic per provider (``profile_sync_interval``) and on demand (``POST
/auth/oauth2/profile/sync``, and after a sign-in whose avatar the broker has not stored yet).
Steps, each short: lock the link and refresh its tokens if they are about to expire (or if the
provider only describes the user in a refresh's ID token); read the profile and fetch the
avatar outside any transaction (docs/security.md "Guarded avatar fetches" guards the fetch); write
the changes, the user's
derived claims and the audit row in one transaction. A verified address that comes back
unverified is recorded (``email_unverified_at``, and ``email_verification_lost`` in the audit
data) and stops counting as verified at once.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import structlog
from pydantic import Field
from sqlalchemy import func, or_, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.audit import record_audit_core
from shared.avatars import avatar_url, store_avatar
from shared.db.tables import LINKS, PROFILES
from shared.guarded_fetch import FetchRefused, fetch_image
from shared.jobs.base import JobDeps, JobName, JobPayload, JobResult
from shared.jobs.upstream_refresh import REFRESHABLE_STATES, WORKER_ACTOR, refresh_locked_link
from shared.profile_columns import UnusableIdentity, fit_columns
from shared.provider_states import is_switched_off, switched_off
from shared.providers.base import AvatarImage, UpstreamProfile, UpstreamTokens
from shared.providers.errors import ProviderError, ProviderUnavailable
from shared.upstream_tokens import unseal_upstream_token
from shared.user_claims import refresh_user_claims

log = structlog.get_logger("shared.jobs.profile_sync")

# A token this close to expiry is refreshed before it is used for a sync.
EXPIRY_SLACK = dt.timedelta(seconds=60)
SYNCED_FIELDS = (
    "email",
    "email_verified",
    "email_authoritative",
    "name",
    "given_name",
    "family_name",
    "preferred_username",
    "avatar_url",
    "groups",
)


class ProfileSyncPayload(JobPayload):
    """Sync one link (``oauth2_profiles.id``); ``requested_by`` is the audit actor on demand."""

    profile_id: uuid.UUID
    requested_by: str | None = Field(default=None, max_length=330)


class ProfileSyncScanPayload(JobPayload):
    limit: int = Field(default=1000, ge=1, le=10_000)


def sync_job_id(profile_id: uuid.UUID, attempted_at: dt.datetime | None) -> str:
    stamp = int(attempted_at.timestamp()) if attempted_at else 0
    return f"profile-sync:{profile_id}:{stamp}"


def avatar_job_id(profile_id: uuid.UUID, now: dt.datetime) -> str:
    """The sync a sign-in queues for a picture not stored yet (one a minute per link)."""
    return f"profile-sync:{profile_id}:avatar:{int(now.timestamp()) // 60}"


def on_demand_job_id(profile_id: uuid.UUID, now: dt.datetime) -> str:
    """At most one on-demand sync per link every 10 seconds (a pending one absorbs repeats)."""
    return f"profile-sync:{profile_id}:demand:{int(now.timestamp()) // 10}"


async def scan_profiles(payload: ProfileSyncScanPayload, deps: JobDeps) -> JobResult:
    """Enqueue a sync for every link not synced within its provider's interval."""
    if deps.queue is None:
        raise RuntimeError("the profile scan needs a job queue")
    now = deps.clock.now()
    enqueued = due = 0
    async with deps.engine.connect() as connection:
        # docs/security.md "Switching a provider off": paused while disabled.
        paused = await switched_off(connection)
    for provider_id, provider in deps.providers.items():
        config = deps.settings.provider(provider_id)
        interval = getattr(config, "profile_sync_interval", 0)
        if provider.type == "dev" or not interval or provider_id in paused:
            continue
        # The last attempt, successful or not: a link that fails is retried an interval later
        # and never holds back the others.
        attempted = func.coalesce(PROFILES.c.sync_attempted_at, PROFILES.c.last_synced_at)
        async with deps.engine.connect() as connection:
            rows = (
                await connection.execute(
                    select(PROFILES.c.id, attempted.label("attempted"))
                    .join(LINKS, LINKS.c.profile_id == PROFILES.c.id)
                    .where(
                        PROFILES.c.provider == provider_id,
                        LINKS.c.state.in_(REFRESHABLE_STATES),
                        LINKS.c.access_token_enc.is_not(None),
                        # A link that can be read: a live access token, or a refresh token.
                        or_(
                            LINKS.c.refresh_token_enc.is_not(None),
                            LINKS.c.expires_at.is_(None),
                            LINKS.c.expires_at > now + EXPIRY_SLACK,
                        ),
                        or_(attempted.is_(None), attempted <= now - dt.timedelta(seconds=interval)),
                    )
                    .order_by(attempted.nulls_first())
                    .limit(payload.limit)
                )
            ).all()
        due += len(rows)
        for row in rows:
            queued = await deps.queue.enqueue(
                JobName.SYNC_PROFILE,
                ProfileSyncPayload(profile_id=row.id),
                job_id=sync_job_id(row.id, row.attempted),
            )
            enqueued += queued is not None
    return {"outcome": "ok", "due": due, "enqueued": enqueued}


def _result(status: str, provider: str | None = None, **extra: Any) -> JobResult:
    outcome = {"retry": "retried", "failed": "failed"}.get(status, "ok")
    return {"outcome": outcome, "status": status, "provider": provider, **extra}


async def _usable_tokens(
    deps: JobDeps, profile_id: uuid.UUID
) -> tuple[Row[Any] | None, UpstreamTokens | JobResult]:
    """Lock the link, refresh it when needed, and return the tokens to read the profile with."""
    now = deps.clock.now()
    revocations = []
    async with deps.engine.connect() as connection, connection.begin():
        profile = (
            await connection.execute(select(PROFILES).where(PROFILES.c.id == profile_id))
        ).first()
        if profile is None:
            return None, _result("skipped", reason="gone")
        if await is_switched_off(connection, profile.provider):
            # Nothing is read from a provider an admin disabled (and no attempt is recorded).
            return profile, _result("skipped", profile.provider, reason="provider_disabled")
        provider = deps.providers.get(profile.provider)
        # The profile row first, then the link's: the order a sign-in writes them in.
        await connection.execute(
            update(PROFILES).where(PROFILES.c.id == profile_id).values(sync_attempted_at=now)
        )
        link = (
            await connection.execute(
                select(LINKS).where(LINKS.c.profile_id == profile_id).with_for_update()
            )
        ).first()
        if provider is None or provider.type == "dev":
            return profile, _result("skipped", profile.provider, reason="not_syncable")
        if link is None or link.state not in REFRESHABLE_STATES:
            return profile, _result("skipped", profile.provider, reason="no_usable_link")
        expiring = link.expires_at is not None and link.expires_at <= now + EXPIRY_SLACK
        keyring = deps.settings.keyring
        if provider.syncs_through_refresh or expiring or link.access_token_enc is None:
            if link.refresh_token_enc is None:
                return profile, _result("skipped", profile.provider, reason="token_expired")
            if link.next_attempt_at is not None and link.next_attempt_at > now:
                # docs/security.md "Upstream refresh": an upstream that asked us to back off is not
                # asked again
                # sooner because a user pressed "sync".
                return profile, _result("retry", profile.provider, reason="backing_off")
            outcome = await refresh_locked_link(connection, link, provider, deps)
            revocations = outcome.revocations
            if outcome.status != "refreshed" or outcome.tokens is None:
                status = "retry" if outcome.status == "retry" else "failed"
                tokens_or_result: UpstreamTokens | JobResult = _result(
                    status, profile.provider, reason=outcome.reason
                )
            else:
                tokens_or_result = outcome.tokens
        else:
            access = unseal_upstream_token(keyring, link.id, "access_token", link.access_token_enc)
            assert access is not None
            tokens_or_result = UpstreamTokens(access_token=access)
    await deps.revocations.publish(revocations)
    return profile, tokens_or_result


async def _avatar(
    deps: JobDeps, upstream: UpstreamProfile, current: Row[Any]
) -> tuple[AvatarImage | None, str | None]:
    """The picture to store, if it could be had, and the URL it comes from."""
    if upstream.avatar is not None:
        return upstream.avatar, None
    if not upstream.picture:
        return None, None
    try:
        image = await fetch_image(
            deps.http, upstream.picture, allow_private=deps.settings.allow_private_network_fetch
        )
    except FetchRefused as exc:
        log.info("avatar.fetch_refused", provider=current.provider, reason=str(exc))
        return None, upstream.picture
    return image, upstream.picture


def _groups(profile: UpstreamProfile) -> list[str] | None:
    groups = profile.claims.get("groups")
    return groups if isinstance(groups, list) else None


async def _write(
    connection: AsyncConnection,
    deps: JobDeps,
    payload: ProfileSyncPayload,
    upstream: UpstreamProfile,
    image: AvatarImage | None,
    source: str | None,
    read_at: dt.datetime,
) -> list[str] | None:
    """Store the synced profile; the changed fields, or None when the link is gone."""
    now = deps.clock.now()
    current = (
        await connection.execute(
            select(PROFILES).where(PROFILES.c.id == payload.profile_id).with_for_update()
        )
    ).first()
    if current is None:
        return None
    if current.updated_at != read_at:
        # A sign-in stored fresher facts while this sync was reading: they win.
        return []
    if image is not None:
        avatar: str | None = avatar_url(
            deps.settings.issuer, await store_avatar(connection, image, now)
        )
    elif upstream.avatar_unavailable or (
        source is not None and current.picture_source == source and current.avatar_url
    ):
        avatar = current.avatar_url  # the same picture could not be fetched again: keep it
    else:
        # No picture; or one that could not be fetched (refused address, not an image, down):
        # the provider's own URL stands in, as it does right after a sign-in.
        avatar = source
    old_groups = (current.profile_data or {}).get("groups")
    fresh = {
        "email": upstream.email,
        "email_verified": upstream.email_verified,
        # docs/security.md "Auto-linking needs both sides authoritative": whether this link still
        # counts for linking by email.
        "email_authoritative": upstream.email_authoritative,
        "name": upstream.name,
        "given_name": upstream.given_name,
        "family_name": upstream.family_name,
        "preferred_username": upstream.preferred_username,
        "avatar_url": avatar,
    }
    changed = [name for name, value in fresh.items() if getattr(current, name) != value]
    if _groups(upstream) is not None and _groups(upstream) != old_groups:
        changed.append("groups")
    lost = bool(current.email_verified and not upstream.email_verified)
    values: dict[str, Any] = {**fresh, "last_synced_at": now, "picture_source": source}
    if lost:
        values["email_unverified_at"] = now
    elif upstream.email_verified:
        values["email_unverified_at"] = None
    if changed:
        values["profile_data"] = dict(upstream.claims)
        values["updated_at"] = now
    await connection.execute(
        update(PROFILES).where(PROFILES.c.id == payload.profile_id).values(**values)
    )
    if changed:
        await refresh_user_claims(connection, current.user_id, now)
        await record_audit_core(
            connection,
            action="profile.synced",
            actor=payload.requested_by or WORKER_ACTOR,
            subject=str(current.user_id),
            data={
                "provider": current.provider,
                "link": str(current.id),
                "changed": sorted(changed),
                "email_verification_lost": lost,
            },
            now=now,
        )
    return sorted(changed)


async def sync_profile(payload: ProfileSyncPayload, deps: JobDeps) -> JobResult:
    """The job: fresh tokens, the upstream profile and avatar, then one write."""
    profile, tokens = await _usable_tokens(deps, payload.profile_id)
    if not isinstance(tokens, UpstreamTokens):
        return tokens
    assert profile is not None
    provider = deps.providers[profile.provider]
    try:
        async with deps.slots.slot(profile.provider):
            upstream = await provider.fetch_profile(tokens, subject=profile.subject)
    except ProviderUnavailable as exc:
        log.warning("profile.sync_failed", provider=profile.provider, error=str(exc))
        return _result("retry", profile.provider, reason=str(exc))
    except ProviderError as exc:
        log.warning("profile.sync_failed", provider=profile.provider, error=str(exc))
        return _result("failed", profile.provider, reason=str(exc))
    try:
        upstream = fit_columns(upstream)
    except UnusableIdentity as exc:
        return _result("failed", profile.provider, reason=str(exc))
    image, source = await _avatar(deps, upstream, profile)
    async with deps.engine.connect() as connection, connection.begin():
        changed = await _write(
            connection, deps, payload, upstream, image, source, profile.updated_at
        )
    if changed is None:
        return _result("skipped", profile.provider, reason="gone")
    if changed:
        log.info("profile.synced", provider=profile.provider, changed=changed)
    return _result("synced", profile.provider, changed=changed)
