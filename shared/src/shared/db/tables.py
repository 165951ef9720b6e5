"""The Core ``Table`` of every model, named once, for the Core statements of the code and tests."""

from __future__ import annotations

from shared.db.base import table
from shared.models import (
    AdminGrant,
    AuditAction,
    AuditDailyCount,
    AuditRelayCursor,
    AuthorizationCode,
    AuthSession,
    Avatar,
    ClientAssertion,
    LoginState,
    LogoutDelivery,
    OAuth2Profile,
    OAuth2Token,
    ProviderState,
    RefreshToken,
    RevokedAccessToken,
    SigningKey,
    StatSnapshot,
    User,
)

ADMIN_GRANTS = table(AdminGrant)
AUDIT_TABLE = table(AuditAction)
AUDIT_CURSORS = table(AuditRelayCursor)
AUDIT_DAILY_COUNTS = table(AuditDailyCount)
AVATARS = table(Avatar)
CLIENT_ASSERTIONS = table(ClientAssertion)
CODES = table(AuthorizationCode)
# ``oauth2_tokens``: one row per linked profile holding its upstream grant (an upstream link).
LINKS = table(OAuth2Token)
LOGIN_STATES = table(LoginState)
LOGOUT_DELIVERIES = table(LogoutDelivery)
PROFILES = table(OAuth2Profile)
PROVIDER_STATES = table(ProviderState)
REFRESH_TOKENS = table(RefreshToken)
REVOKED_ACCESS_TOKENS = table(RevokedAccessToken)
SESSIONS = table(AuthSession)
SIGNING_KEYS = table(SigningKey)
STAT_SNAPSHOTS = table(StatSnapshot)
USERS = table(User)
