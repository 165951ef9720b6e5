"""Logs never carry a token, code, verifier, secret or cookie, at any level (docs/security.md "No
secrets in logs")."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
import structlog
from shared.logging import REDACTED, configure_logging, redact_secrets

from tests.support.logging_state import restore_logging  # noqa: F401 - a fixture

JWT = (
    "eyJhbGciOiJFUzI1NiIsInR5cCI6ImF0K2p3dCJ9"
    ".eyJzdWIiOiJ1c2VyLTEyMyIsImlzcyI6Imh0dHA6Ly8xMjcuMC4wLjEifQ"
    ".c2lnbmF0dXJlLWJ5dGVzLWhlcmU"
)
OPAQUE = "rT_9fQ2xZ8kLmN3pQ4sV7wY1aB5cD6eF0gH2iJ3kL4m"
CODE = "SplxlOBeZQQYbYS6WxSbIA"
STATE = "af0ifjsldkj"
VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"


def redact(**event: Any) -> dict[str, Any]:
    return dict(redact_secrets(None, "info", dict(event)))


# --- the processor ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field",
    [
        "access_token",
        "refresh_token",
        "id_token",
        "token",
        "client_secret",
        "code",
        "authorization_code",
        "code_verifier",
        "cookie",
        "session_cookie",
        "password",
        "authorization",
        "state",
        "nonce",
        "private_key",
        "Refresh_Token",
    ],
)
def test_fields_named_like_secrets_are_masked(field: str) -> None:
    assert redact(event="e", **{field: OPAQUE})[field] == REDACTED


def test_secret_fields_inside_nested_values_are_masked() -> None:
    event = redact(event="e", response={"access_token": OPAQUE, "expires_in": 3600})

    assert event["response"] == {"access_token": REDACTED, "expires_in": 3600}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("user_id", "0b4a7f0e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"),
        ("provider", "google"),
        ("client_id", "web"),
        ("status_code", 401),
        ("kid", "20300101-abcd1234"),
        ("token_type", "Bearer"),
        ("grant_type", "refresh_token"),
        ("error_code", "invalid_grant"),
        ("duration_ms", 12.5),
    ],
)
def test_harmless_fields_are_kept(field: str, value: Any) -> None:
    assert redact(event="e", **{field: value})[field] == value


def test_jwt_inside_any_string_is_masked() -> None:
    event = redact(event="e", detail=f"upstream sent {JWT} back")

    assert JWT not in event["detail"]
    assert event["detail"] == f"upstream sent {REDACTED} back"


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "Basic"])
def test_credentials_after_an_auth_scheme_are_masked(scheme: str) -> None:
    event = redact(event="e", header=f"Authorization: {scheme} {OPAQUE}")

    assert OPAQUE not in event["header"]
    assert event["header"] == f"Authorization: {scheme} {REDACTED}"


def test_code_and_state_in_a_url_are_masked() -> None:
    url = f"http://127.0.0.1:3000/callback?code={CODE}&state={STATE}&iss=http%3A%2F%2Fb"

    event = redact(event="e", url=url)

    assert CODE not in event["url"] and STATE not in event["url"]
    assert event["url"] == (
        f"http://127.0.0.1:3000/callback?code={REDACTED}&state={REDACTED}&iss=http%3A%2F%2Fb"
    )


def test_secrets_in_a_form_body_string_are_masked() -> None:
    body = f"grant_type=authorization_code&code={CODE}&code_verifier={VERIFIER}&client_secret=s3"

    event = redact(event="e", body=body)

    assert CODE not in event["body"] and VERIFIER not in event["body"]
    assert "client_secret=s3" not in event["body"]
    assert "grant_type=authorization_code" in event["body"]


def test_the_event_text_itself_is_scrubbed() -> None:
    event = redact(event=f"callback ?code={CODE}&state={STATE} with Bearer {OPAQUE} and {JWT}")

    for secret in (CODE, STATE, OPAQUE, JWT):
        assert secret not in event["event"]
    assert event["event"].startswith("callback ?code=")


def test_strings_in_lists_are_scrubbed() -> None:
    event = redact(event="e", urls=[f"https://a/cb?code={CODE}", "https://b/"])

    assert event["urls"] == [f"https://a/cb?code={REDACTED}", "https://b/"]


# --- the configured pipeline --------------------------------------------------------------------


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.mark.usefixtures("restore_logging")
def test_structlog_line_at_debug_never_prints_secrets(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("DEBUG", "json")

    structlog.get_logger("broker.test").debug(
        "upstream_token.refreshed",
        provider="corp",
        refresh_token=OPAQUE,
        id_token=JWT,
        client_secret="s3cr3t-value",
        callback=f"http://127.0.0.1:3000/callback?code={CODE}&state={STATE}",
        header=f"Bearer {VERIFIER}",
    )

    err = capsys.readouterr().err
    for secret in (OPAQUE, JWT, "s3cr3t-value", CODE, STATE, VERIFIER):
        assert secret not in err
    [line] = json_lines(err)
    assert line["event"] == "upstream_token.refreshed"
    assert line["level"] == "debug"
    assert line["provider"] == "corp"
    assert line["refresh_token"] == REDACTED


@pytest.mark.usefixtures("restore_logging")
def test_stdlib_log_lines_are_scrubbed_too(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("DEBUG", "json")

    logging.getLogger("some.library").debug(
        "POST /token code=%s code_verifier=%s Authorization: Bearer %s", CODE, VERIFIER, OPAQUE
    )

    err = capsys.readouterr().err
    for secret in (CODE, VERIFIER, OPAQUE):
        assert secret not in err
    [line] = json_lines(err)
    assert line["event"].startswith("POST /token code=")


@pytest.mark.usefixtures("restore_logging")
def test_authlib_debug_lines_are_dropped_even_at_debug(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("DEBUG", "json")

    # What authlib's sync_app logs when it builds an authorization URL.
    logging.getLogger("authlib").debug(f"Using code_verifier: {VERIFIER!r}")
    logging.getLogger("authlib.integrations.base_client.sync_app").debug(
        f"Using code_verifier: {VERIFIER!r}"
    )
    logging.getLogger("authlib").info("authlib.info_line_is_kept")

    err = capsys.readouterr().err
    assert VERIFIER not in err
    assert "code_verifier" not in err
    assert "authlib.info_line_is_kept" in err
    assert logging.getLogger("authlib").getEffectiveLevel() >= logging.INFO
    assert logging.getLogger("authlib.integrations").getEffectiveLevel() >= logging.INFO
    assert logging.getLogger().getEffectiveLevel() == logging.DEBUG


@pytest.mark.usefixtures("restore_logging")
def test_console_format_is_scrubbed_too(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("DEBUG", "console")

    structlog.get_logger("broker.test").info("token.issued", access_token=JWT, note=f"x {JWT}")

    err = capsys.readouterr().err
    assert "token.issued" in err
    assert JWT not in err
