"""Back-channel logout without I/O: the client fields, the Logout Token (claims, header, the
algorithm of the client's ID tokens), that it passes for no other token, discovery, the backoff,
the settings and the worker's metrics."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from broker.oauth.tokens import TokenInvalid, verify_access_token, verify_id_token_hint
from broker.routes.discovery import discovery_document
from joserfc import jwt
from prometheus_client.parser import text_string_to_metric_families
from shared.backoff import backoff_delay
from shared.crypto.keyring import Keyring
from shared.jobs.base import JobName
from shared.jobs.schedule import periodic_jobs
from shared.logout_tokens import (
    LOGOUT_EVENT,
    EndedSession,
    logout_token_claims,
    sign_logout_token,
)
from shared.settings import ConfigError, load_settings, make_settings
from shared.signing_keys import KeySnapshot, build_snapshot, generate_signing_key
from sync_worker.monitoring import WorkerMetrics
from sync_worker.options import record_result

NOW = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)
ISSUER = "http://127.0.0.1:8000"
ENDED = EndedSession(
    client_id="portal",
    user_id=uuid.UUID("6f1c2d1e-0000-4000-8000-000000000001"),
    session_id=uuid.UUID("0b6c1c9e-0000-4000-8000-000000000002"),
    jti="n0t-a-secret-just-unique",
)


def client(**fields: object) -> dict[str, object]:
    return {"id": "portal", "redirect_uris": ["https://app.example.com/cb"], **fields}


def keys() -> KeySnapshot:
    keyring = Keyring.generate("k1")
    rows = [generate_signing_key(alg, keyring, NOW) for alg in ("ES256", "RS256")]
    return build_snapshot(rows, keyring, NOW)


# --- client configuration ------------------------------------------------------------------


@pytest.mark.parametrize(
    "uri",
    [
        "https://app.example.com/bcl",
        "https://app.example.com:8443/bcl?tenant=a",
        "http://127.0.0.1:3000/bcl",
    ],
)
def test_a_backchannel_logout_uri_is_https_or_loopback(uri):
    settings = make_settings(clients=[client(backchannel_logout_uri=uri)])
    (registered,) = settings.clients
    assert registered.backchannel_logout_uri == uri
    assert registered.backchannel_logout_session_required is False  # §2.2's default


@pytest.mark.parametrize(
    "uri",
    [
        "http://app.example.com/bcl",  # the token would travel in clear
        "https://app.example.com/bcl#frag",
        "https://app.example.com/bcl#",
        "/bcl",
        "ftp://app.example.com/bcl",
    ],
)
def test_any_other_backchannel_logout_uri_stops_startup_naming_the_field(uri):
    with pytest.raises(ConfigError, match=r"clients\[0\]\.backchannel_logout_uri"):
        make_settings(clients=[client(backchannel_logout_uri=uri)])


# --- the Logout Token ----------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_a_logout_token_carries_the_spec_claims_and_header_in_the_clients_algorithm(alg):
    snapshot = keys()
    token = sign_logout_token(snapshot, alg, logout_token_claims(ISSUER, ENDED, NOW))
    assert token is not None

    decoded = jwt.decode(token, snapshot.verification, algorithms=[alg])

    assert decoded.header == {"typ": "logout+jwt", "alg": alg, "kid": snapshot.signer(alg).kid}
    issued = int(NOW.timestamp())
    assert decoded.claims == {
        "iss": ISSUER,
        "aud": "portal",
        "iat": issued,
        "exp": issued + 120,
        "jti": ENDED.jti,
        "sub": str(ENDED.user_id),
        "sid": str(ENDED.session_id),
        "events": {LOGOUT_EVENT: {}},
    }  # and never a nonce (§2.4)


def test_a_later_attempt_is_a_fresh_token_with_the_same_jti():
    snapshot = keys()
    first = logout_token_claims(ISSUER, ENDED, NOW)
    later = logout_token_claims(ISSUER, ENDED, NOW + dt.timedelta(hours=5))
    assert later["iat"] - first["iat"] == 5 * 3600 and later["exp"] > first["exp"]
    assert later["jti"] == first["jti"]
    assert sign_logout_token(snapshot, "RS256", first) != sign_logout_token(
        snapshot, "RS256", later
    )


def test_no_token_is_signed_without_a_key_for_the_algorithm():
    keyring = Keyring.generate("k1")
    only_es = build_snapshot([generate_signing_key("ES256", keyring, NOW)], keyring, NOW)
    assert sign_logout_token(only_es, "RS256", logout_token_claims(ISSUER, ENDED, NOW)) is None


def test_a_logout_token_is_neither_an_access_token_nor_an_id_token_hint():
    # typ logout+jwt: it cannot be replayed as a bearer token or to sign someone out.
    snapshot = keys()
    settings = make_settings(issuer=ISSUER)
    for alg in ("ES256", "RS256"):
        token = sign_logout_token(snapshot, alg, logout_token_claims(ISSUER, ENDED, NOW))
        assert token is not None
        with pytest.raises(TokenInvalid):  # ES256: refused for its typ; RS256: its alg too
            verify_access_token(token, snapshot, settings, NOW)
        with pytest.raises(TokenInvalid, match="not an ID token"):
            verify_id_token_hint(token, snapshot, settings)


# --- discovery, settings, schedule, backoff ------------------------------------------------


def test_discovery_advertises_back_channel_logout_with_sid():
    document = discovery_document(make_settings(), ["ES256", "RS256"])
    assert document["backchannel_logout_supported"] is True
    assert document["backchannel_logout_session_supported"] is True
    assert "sid" in document["claims_supported"]


def test_the_delivery_settings_come_from_broker_variables(tmp_path):
    settings = load_settings(
        {
            "BROKER_VAR_DIR": str(tmp_path),
            "BROKER_BACKCHANNEL_LOGOUT_INTERVAL": "0.5",
            "BROKER_BACKCHANNEL_LOGOUT_TIMEOUT": "3",
            "BROKER_BACKCHANNEL_LOGOUT_RETRY_BASE": "2",
            "BROKER_BACKCHANNEL_LOGOUT_RETRY_MAX": "600",
            "BROKER_BACKCHANNEL_LOGOUT_GIVE_UP_AFTER": "86400",
        }
    )
    assert settings.backchannel_logout_interval == 0.5
    assert settings.backchannel_logout_timeout == 3
    assert settings.backchannel_logout_retry_base == 2
    assert settings.backchannel_logout_retry_max == 600
    assert settings.backchannel_logout_give_up_after == 86400
    defaults = make_settings()
    assert (defaults.backchannel_logout_interval, defaults.backchannel_logout_timeout) == (2, 5)
    assert defaults.backchannel_logout_give_up_after == 3 * 86400
    with pytest.raises(ConfigError, match="BROKER_BACKCHANNEL_LOGOUT_TIMEOUT"):
        load_settings({"BROKER_VAR_DIR": str(tmp_path), "BROKER_BACKCHANNEL_LOGOUT_TIMEOUT": "0"})


@pytest.mark.parametrize("redis_url", [None, "redis://127.0.0.1:6379/0"])
def test_deliveries_run_on_the_timer_with_or_without_redis(redis_url):
    settings = make_settings(redis_url=redis_url, backchannel_logout_interval=0.5)
    (job,) = [
        job for job in periodic_jobs(settings) if job.name is JobName.DELIVER_BACKCHANNEL_LOGOUTS
    ]
    assert job.interval == 0.5


def test_the_backoff_doubles_from_its_base_with_equal_jitter_up_to_its_cap():
    assert [backoff_delay(n, base=10, cap=3600, draw=0.0) for n in (1, 2, 3, 4)] == [5, 10, 20, 40]
    assert [backoff_delay(n, base=10, cap=3600, draw=0.999) for n in (1, 2)] == pytest.approx(
        [9.995, 19.99]
    )
    assert backoff_delay(30, base=10, cap=3600, draw=0.0) == 1800  # capped, still jittered
    assert backoff_delay(10_000, base=10, cap=3600, draw=0.999) <= 3600


# --- the worker's metrics ------------------------------------------------------------------


def test_a_delivery_run_counts_its_outcomes_and_sets_the_pending_gauge():
    metrics = WorkerMetrics()
    job = JobName.DELIVER_BACKCHANNEL_LOGOUTS.value
    record_result(
        metrics,
        job,
        {"outcome": "ok", "delivered": 3, "retried": 2, "failed": 1, "pending": 7},
        0.1,
    )
    record_result(
        metrics,
        job,
        {"outcome": "ok", "delivered": 1, "retried": 0, "failed": 0, "pending": 4},
        0.1,
    )
    # A run that found no signing key yet reports no counts: the gauge keeps its value.
    record_result(metrics, job, {"outcome": "ok", "collected": 0, "reason": "no_signing_keys"}, 0.1)

    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for sample in family.samples
    }
    total = "sync_worker_backchannel_logouts_total"
    assert samples[(total, (("outcome", "delivered"),))] == 4
    assert samples[(total, (("outcome", "retried"),))] == 2
    assert samples[(total, (("outcome", "failed"),))] == 1
    assert samples[("sync_worker_backchannel_logouts_pending", ())] == 4
