"""SQLAlchemy models, one table per module; importing this package registers them all."""

from shared.models.admin_grant import AdminGrant
from shared.models.audit_action import AuditAction
from shared.models.audit_daily_count import AuditDailyCount
from shared.models.audit_relay_cursor import AuditRelayCursor
from shared.models.auth_session import AuthSession
from shared.models.authorization_code import AuthorizationCode
from shared.models.avatar import Avatar
from shared.models.client_assertion import ClientAssertion
from shared.models.login_state import LoginState
from shared.models.logout_delivery import LogoutDelivery
from shared.models.oauth2_profile import OAuth2Profile
from shared.models.oauth2_token import OAuth2Token
from shared.models.provider_state import ProviderState
from shared.models.refresh_token import RefreshToken
from shared.models.revoked_access_token import RevokedAccessToken
from shared.models.signing_key import SigningKey
from shared.models.stat_snapshot import StatSnapshot
from shared.models.user import User

__all__ = [
    "AdminGrant",
    "AuditAction",
    "AuditDailyCount",
    "AuditRelayCursor",
    "AuthSession",
    "AuthorizationCode",
    "Avatar",
    "ClientAssertion",
    "LoginState",
    "LogoutDelivery",
    "OAuth2Profile",
    "OAuth2Token",
    "ProviderState",
    "RefreshToken",
    "RevokedAccessToken",
    "SigningKey",
    "StatSnapshot",
    "User",
]
