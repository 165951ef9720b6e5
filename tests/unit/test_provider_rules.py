"""Provider facts decided without I/O: Microsoft issuers, Google email authority and prompts,
GitHub/Google/Microsoft settings, the auto-link decision and image sniffing."""

from __future__ import annotations

import uuid

import pytest
from broker.login.identity import LinkRefused, UpstreamIdentity, auto_link_decision
from shared.avatars import avatar_image, sniff_image_type
from shared.crypto.keyring import Keyring
from shared.providers.base import LoginStart, UpstreamLogin, UpstreamProfile
from shared.providers.errors import ProviderDenied, ProviderInvalidResponse
from shared.providers.google import google_profile, google_start
from shared.providers.microsoft import CONSUMERS_TENANT, MicrosoftIssuer, microsoft_profile
from shared.settings import ConfigError, make_settings

AUTHORITY = "https://login.microsoftonline.com"
TENANT_A = "11111111-1111-1111-1111-111111111111"
TENANT_B = "22222222-2222-2222-2222-222222222222"
TEMPLATE = f"{AUTHORITY}/{{tenantid}}/v2.0"


def _ms_claims(tid: str, iss: str | None = None, **extra: object) -> dict[str, object]:
    return {"tid": tid, "iss": iss or f"{AUTHORITY}/{tid}/v2.0", "oid": str(uuid.uuid4()), **extra}


def test_multi_tenant_discovery_must_advertise_the_tenantid_template():
    issuers = MicrosoftIssuer(AUTHORITY, "common", ())
    assert issuers.metadata_issuer_ok(TEMPLATE)
    assert not issuers.metadata_issuer_ok(f"{AUTHORITY}/{TENANT_A}/v2.0")
    assert not issuers.metadata_issuer_ok("https://evil.example/{tenantid}/v2.0")


def test_a_token_iss_must_name_its_own_tid():
    issuers = MicrosoftIssuer(AUTHORITY, "organizations", ())
    issuers.check_token(_ms_claims(TENANT_A), TEMPLATE)
    for iss in (
        f"{AUTHORITY}/{TENANT_B}/v2.0",  # another tenant than tid
        TEMPLATE,  # the literal template
        f"https://sts.windows.net/{TENANT_A}/",  # a v1 issuer
    ):
        with pytest.raises(ProviderInvalidResponse):
            issuers.check_token(_ms_claims(TENANT_A, iss), TEMPLATE)
    with pytest.raises(ProviderInvalidResponse):
        issuers.check_token({"iss": f"{AUTHORITY}/x/v2.0", "tid": "x"}, TEMPLATE)


def test_the_tenant_allow_list_refuses_other_tenants():
    issuers = MicrosoftIssuer(AUTHORITY, "common", (TENANT_A,))
    issuers.check_token(_ms_claims(TENANT_A), TEMPLATE)
    with pytest.raises(ProviderDenied):
        issuers.check_token(_ms_claims(TENANT_B), TEMPLATE)


def test_a_single_tenant_or_consumers_pins_the_tid():
    single = MicrosoftIssuer(AUTHORITY, TENANT_A, ())
    assert single.metadata_issuer_ok(f"{AUTHORITY}/{TENANT_A}/v2.0")
    assert not single.metadata_issuer_ok(TEMPLATE)
    with pytest.raises(ProviderInvalidResponse):
        single.check_token(_ms_claims(TENANT_B), f"{AUTHORITY}/{TENANT_A}/v2.0")
    consumers = MicrosoftIssuer(AUTHORITY, "consumers", ())
    assert consumers.metadata_issuer_ok(f"{AUTHORITY}/{CONSUMERS_TENANT}/v2.0")
    consumers.check_token(_ms_claims(CONSUMERS_TENANT), f"{AUTHORITY}/{CONSUMERS_TENANT}/v2.0")


def test_microsoft_identity_is_tid_and_oid_and_email_needs_xms_edov():
    claims = _ms_claims(TENANT_A, email="ceo@victim.example", name="Eve")
    profile = microsoft_profile(claims, "ignored")
    assert profile.subject == f"{TENANT_A}:{claims['oid']}"
    assert profile.email == "ceo@victim.example"
    assert profile.email_verified is False and profile.email_authoritative is False
    proven = microsoft_profile({**claims, "xms_edov": True}, "ignored")
    assert proven.email_verified is True and proven.email_authoritative is True
    assert microsoft_profile({**claims, "xms_edov": "true"}, "x").email_verified is False
    with pytest.raises(ProviderInvalidResponse):
        microsoft_profile({**claims, "oid": None}, "x")


def test_google_is_authoritative_only_for_gmail_or_a_hosted_domain():
    issuer = "https://accounts.google.com"

    def profile(email: str, verified: bool = True, **extra: object) -> UpstreamProfile:
        claims = {"sub": "1", "email": email, "email_verified": verified, **extra}
        return google_profile(claims, issuer, ())

    assert profile("a@gmail.com").email_authoritative is True
    assert profile("a@corp.example", hd="corp.example").email_authoritative is True
    consumer = profile("a@corp.example")  # a Google account on someone else's address
    assert consumer.email_verified is True and consumer.email_authoritative is False
    assert profile("a@gmail.com", verified=False).email_authoritative is False


def test_google_allowed_domains_checks_hd_not_the_email_suffix():
    issuer = "https://accounts.google.com"
    allowed = ("corp.example",)
    ok = {"sub": "1", "email": "a@corp.example", "email_verified": True, "hd": "corp.example"}
    assert google_profile(ok, issuer, allowed).email == "a@corp.example"
    spoofed = {"sub": "2", "email": "a@corp.example", "email_verified": True}  # no hd
    with pytest.raises(ProviderDenied):
        google_profile(spoofed, issuer, allowed)
    with pytest.raises(ProviderDenied):
        google_profile({**ok, "hd": "other.example"}, issuer, allowed)


def test_google_has_no_prompt_login_so_it_becomes_max_age_zero():
    start = LoginStart(redirect_uri="r", state="s", nonce="n", code_verifier="v")
    assert google_start(start) == start
    adapted = google_start(LoginStart("r", "s", "n", "v", prompt="login consent"))
    assert adapted.prompt == "consent" and adapted.max_age == 0
    assert google_start(LoginStart("r", "s", "n", "v", prompt="select_account")).max_age is None


def _identity(
    *, verified: bool, authoritative: bool, link_by_email: bool, provider: str = "github"
) -> UpstreamIdentity:
    profile = UpstreamProfile(
        subject="42",
        email="ada@example.com",
        email_verified=verified,
        email_authoritative=authoritative,
    )
    return UpstreamIdentity(
        provider_id=provider,
        provider_type=provider,
        login=UpstreamLogin(profile=profile, tokens=None),
        link_by_email=link_by_email,
    )


def test_auto_link_needs_the_flag_authority_and_verification():
    user = uuid.uuid4()
    linkable = _identity(verified=True, authoritative=True, link_by_email=True)
    assert auto_link_decision(linkable, [user]) == user
    assert auto_link_decision(linkable, []) is None  # no collision: a new user
    with pytest.raises(LinkRefused) as refused:
        auto_link_decision(
            _identity(verified=True, authoritative=True, link_by_email=False), [user]
        )
    assert refused.value.reason == "auto_link_disabled"
    with pytest.raises(LinkRefused) as refused:
        auto_link_decision(linkable, [user, uuid.uuid4()])
    assert refused.value.reason == "ambiguous_email"


def test_an_unproven_email_matches_nobody_and_is_never_refused():
    """docs/security.md "Auto-linking needs both sides authoritative": no refusal that would say the
    address has an account."""
    user = uuid.uuid4()
    for verified, authoritative in ((False, False), (True, False), (False, True)):
        unproven = _identity(verified=verified, authoritative=authoritative, link_by_email=True)
        assert auto_link_decision(unproven, [user]) is None
        assert auto_link_decision(unproven, [user, uuid.uuid4()]) is None


def test_images_are_recognised_by_magic_bytes_only():
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16
    assert sniff_image_type(png) == "image/png"
    assert sniff_image_type(b"\xff\xd8\xff\xe0rest") == "image/jpeg"
    assert sniff_image_type(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "image/webp"
    assert sniff_image_type(b"<svg xmlns='http://www.w3.org/2000/svg'/>") is None
    assert sniff_image_type(b"<html>") is None
    assert avatar_image(png + b"\x00" * (1024 * 1024)) is None  # over the size limit
    assert avatar_image(b"") is None


def _settings(*providers: dict[str, object]) -> None:
    make_settings(keyring=Keyring.generate(), providers=list(providers))


def test_provider_types_need_only_a_client_id_and_secret():
    _settings(
        {"id": "google", "type": "google", "client_id": "g", "client_secret": "s"},
        {"id": "github", "type": "github", "client_id": "h", "client_secret": "s"},
        {"id": "ms", "type": "microsoft", "client_id": "m", "client_secret": "s"},
    )
    with pytest.raises(ConfigError, match="client_secret"):
        _settings({"id": "github", "type": "github", "client_id": "h"})
    with pytest.raises(ConfigError, match="allowed_tenants"):
        _settings(
            {
                "id": "ms",
                "type": "microsoft",
                "client_id": "m",
                "client_secret": "s",
                "allowed_tenants": ["contoso.com"],
            }
        )
    with pytest.raises(ConfigError, match="https"):
        _settings(
            {"id": "g", "type": "google", "client_id": "g", "client_secret": "s",
             "issuer": "http://accounts.example"}
        )  # fmt: skip
    with pytest.raises(ConfigError, match="openid"):
        _settings(
            {"id": "m", "type": "microsoft", "client_id": "m", "client_secret": "s",
             "scopes": ["User.Read"]}
        )  # fmt: skip
    with pytest.raises(ConfigError, match="link_by_email"):
        _settings({"id": "dev", "type": "dev", "link_by_email": True})


def test_github_asks_for_read_org_only_when_organizations_are_checked():
    settings = make_settings(
        keyring=Keyring.generate(),
        providers=[
            {"id": "a", "type": "github", "client_id": "h", "client_secret": "s"},
            {
                "id": "b",
                "type": "github",
                "client_id": "h",
                "client_secret": "s",
                "allowed_organizations": ["acme"],
            },
        ],
    )
    plain, restricted = settings.providers
    assert "read:org" not in plain.requested_scopes  # type: ignore[union-attr]
    assert "read:org" in restricted.requested_scopes  # type: ignore[union-attr]
