"""The provider contract: every provider type through the same steps, each against its stand-in
over real HTTP, through a real broker (Dex's ``storage/conformance/`` is the model).

One scenario function per step, parametrised over the provider types by a driver
(``tests/contract/drivers.py``). The error steps follow the provider error contract
(``shared/providers/errors.py``) to what the broker does with each kind:

==================================  ====  ======  ======  =========  =======
step                                oidc  google  github  microsoft  dev
==================================  ====  ======  ======  =========  =======
login: token pair, identity         yes   yes     yes     yes        yes
worker refreshes the upstream       yes   yes     yes     yes        n/a (1)
profile sync reads a change         yes   yes     yes     yes        n/a (1)
unlink revokes at the upstream      yes   yes     yes     no (2)     n/a (1)
denied login: access_denied         yes   yes     yes     yes        n/a (1)
rejected code                       yes   yes     yes (3) yes        n/a (1)
unavailable (503, 429) at login     yes   yes     yes     yes        n/a (1)
failed checks at login              yes   yes     yes     yes        n/a (1)
rejected refresh: link revoked      yes   yes     yes     yes        n/a (1)
503, 429, timeout, invalid refresh  yes   yes     yes     yes        n/a (1)
==================================  ====  ======  ======  =========  =======

(1) ``dev`` is the broker's own form: no upstream, no upstream tokens or profile to read.
(2) Entra has no token revocation endpoint: the scenario asserts that the broker forgot the
tokens and that the grant still works upstream.
(3) GitHub answers a dead code with HTTP 200 ``bad_verification_code``, which the provider
counts as an answer that fails its checks: ``server_error`` rather than ``access_denied``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from shared.providers.errors import ProviderRejected

from tests.contract.drivers import ALL_TYPES, DRIVERS, UPSTREAM_TYPES, Driver
from tests.contract.harness import PROVIDER_TIMEOUT, Contract

pytestmark = pytest.mark.integration

upstream_types = pytest.mark.parametrize("driver", UPSTREAM_TYPES, indirect=True)


def _seconds_from_now(moment: dt.datetime) -> float:
    return (moment - dt.datetime.now(dt.UTC)).total_seconds()


# ------------------------------------------------------------------------------- the happy path


@pytest.mark.parametrize("driver", ALL_TYPES, indirect=True)
async def test_login_ends_with_a_token_pair_for_the_upstream_identity(
    contract: Contract, driver: Driver
) -> None:
    identity = await driver.new_user()

    tokens = await contract.login(driver.type, identity)

    assert tokens["access_token"] and tokens["refresh_token"] and tokens["id_token"]
    claims = await contract.bearer(tokens, "/userinfo")
    assert claims["email"] == identity.email
    assert claims["email_verified"] is identity.email_verified
    document = await contract.bearer(tokens, "/auth/oauth2/profile")
    assert claims["sub"] == document["user"]["id"]  # the broker's user, not the upstream's
    (link,) = document["profiles"]
    assert (link["provider"], link["subject"]) == (driver.type, identity.subject)
    assert link["email"] == identity.email


@upstream_types
async def test_the_worker_refreshes_the_upstream_token(contract: Contract, driver: Driver) -> None:
    identity = await driver.new_user()
    tokens = await contract.login(driver.type, identity)
    link = await contract.link(driver.type, identity.subject)
    access_before, _ = contract.upstream_tokens(link)

    result = await contract.refresh_upstream(link)

    assert result["status"] == "refreshed", result
    after = await contract.link(driver.type, identity.subject)
    access_after, refresh_after = contract.upstream_tokens(after)
    assert after.state == "ok" and after.last_refreshed_at is not None
    assert access_after != access_before and refresh_after
    assert _seconds_from_now(after.expires_at) > 600
    assert (await contract.broker_refresh(tokens)).status_code == 200


@upstream_types
async def test_a_profile_sync_reads_what_changed_upstream(
    contract: Contract, driver: Driver
) -> None:
    identity = await driver.new_user()
    tokens = await contract.login(driver.type, identity)
    link = await contract.link(driver.type, identity.subject)
    await driver.rename(identity, "Renamed Upstream")

    result = await contract.sync_profile(link)

    assert result["status"] == "synced" and "name" in result["changed"], result
    (profile,) = (await contract.bearer(tokens, "/auth/oauth2/profile"))["profiles"]
    assert profile["name"] == "Renamed Upstream"


@upstream_types
async def test_unlinking_revokes_the_grant_at_the_upstream_where_it_can(
    contract: Contract, driver: Driver
) -> None:
    """Signed in with the broker's own form, the user links the type, then unlinks it."""
    first = await DRIVERS["dev"](None).new_user()
    signed_in = await contract.login("dev", first)
    identity = await driver.new_user()
    linked = await contract.link_provider(signed_in, driver.type)
    assert linked["access_token"]
    link = await contract.link(driver.type, identity.subject)
    _access, refresh_token = contract.upstream_tokens(link)
    assert refresh_token

    removed = await contract.unlink(signed_in, driver.type)

    assert removed["unlinked"] == driver.type
    assert await contract.link(driver.type, identity.subject) is None
    provider = contract.runtime.providers[driver.type]
    if driver.revokes_upstream:
        with pytest.raises(ProviderRejected):
            await provider.refresh(refresh_token)
    else:  # nothing to call: the grant lives on upstream, the broker no longer holds it
        assert (await provider.refresh(refresh_token)).access_token


# ------------------------------------------------------------------------------- login errors


@upstream_types
async def test_a_login_the_upstream_denies_returns_access_denied(
    contract: Contract, driver: Driver
) -> None:
    identity = await driver.new_user()
    await driver.misbehave("deny")

    result = await contract.failed_login(driver.type)

    assert result.params["error"] == "access_denied"
    assert await contract.profile(driver.type, identity.subject) is None


@upstream_types
async def test_a_code_the_upstream_rejects_fails_the_login(
    contract: Contract, driver: Driver
) -> None:
    identity = await driver.new_user()
    await driver.fail_next_code_exchange("invalid_grant")

    result = await contract.failed_login(driver.type)

    assert result.params["error"] == driver.rejected_code_error
    assert await contract.profile(driver.type, identity.subject) is None


@upstream_types
@pytest.mark.parametrize("outage", ["unavailable", "retry_after"])
async def test_an_unavailable_upstream_at_login_answers_temporarily_unavailable(
    contract: Contract, driver: Driver, outage: str
) -> None:
    identity = await driver.new_user()
    await driver.fail_next_code_exchange(outage)

    result = await contract.failed_login(driver.type)

    assert result.params["error"] == "temporarily_unavailable"
    assert await contract.profile(driver.type, identity.subject) is None


def _invalid_answers() -> list[Any]:
    """Per type: a token response without an access token, and each broken proof of identity
    its stand-in can send (docs/security.md "Upstream ID-token validation", "Upstream issuer
    and UserInfo subject", "Microsoft tenants and nOAuth")."""
    return [
        pytest.param(provider_type, answer, id=f"{provider_type}-{answer}")
        for provider_type in UPSTREAM_TYPES
        for answer in ("no_access_token", *DRIVERS[provider_type].broken_identity_proofs)
    ]


@pytest.mark.parametrize(("driver", "answer"), _invalid_answers(), indirect=["driver"])
async def test_an_upstream_answer_that_fails_the_checks_is_a_server_error_and_creates_nothing(
    contract: Contract, driver: Driver, answer: str
) -> None:
    identity = await driver.new_user()
    if answer == "no_access_token":
        await driver.fail_next_code_exchange("invalid_response")
    else:
        await driver.misbehave(answer)

    result = await contract.failed_login(driver.type)

    assert result.params["error"] == "server_error"
    assert await contract.profile(driver.type, identity.subject) is None


# ------------------------------------------------------------------------------- refresh errors


@upstream_types
async def test_a_refresh_the_upstream_rejects_revokes_the_link_and_its_sessions(
    contract: Contract, driver: Driver
) -> None:
    identity = await driver.new_user()
    tokens = await contract.login(driver.type, identity)
    link = await contract.link(driver.type, identity.subject)
    await driver.fail_next_refresh("invalid_grant")

    result = await contract.refresh_upstream(link)

    assert result["status"] == "revoked" and result["sessions_revoked"] == 1, result
    assert (await contract.link(driver.type, identity.subject)).state == "revoked"
    refused = await contract.broker_refresh(tokens)
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"


@upstream_types
@pytest.mark.parametrize(
    ("failure", "seconds", "at_least", "reason"),
    [
        pytest.param("unavailable", 1.0, 0.0, "HTTP 503", id="503"),
        pytest.param("retry_after", 120.0, 119.0, "HTTP 429", id="429-retry-after"),
        pytest.param("hang", PROVIDER_TIMEOUT + 4, 0.0, "timed out", id="timeout"),
        pytest.param("invalid_response", 1.0, 0.0, "no access_token", id="invalid-answer"),
    ],
)
async def test_a_refresh_that_fails_for_now_backs_off_and_revokes_nothing(
    contract: Contract, driver: Driver, failure: str, seconds: float, at_least: float, reason: str
) -> None:
    """5xx, 429 (with its ``Retry-After``), timeouts and answers that fail the checks: the link
    retries later (docs/security.md "Upstream refresh"); the sessions keep working."""
    identity = await driver.new_user()
    tokens = await contract.login(driver.type, identity)
    link = await contract.link(driver.type, identity.subject)
    await driver.fail_next_refresh(failure, seconds=seconds)

    result = await contract.refresh_upstream(link)

    assert result["status"] == "retry", result
    after = await contract.link(driver.type, identity.subject)
    assert after.state == "refresh_failing" and after.failure_count == 1
    assert reason in after.last_error
    assert _seconds_from_now(after.next_attempt_at) >= max(at_least, 1.0)
    assert contract.upstream_tokens(after) == contract.upstream_tokens(link)
    assert (await contract.broker_refresh(tokens)).status_code == 200
