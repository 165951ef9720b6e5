"""Properties of redirect URI matching at ``/authorize`` (``broker.oauth.authorization``;
docs/security.md "Exact redirect URIs"): a registered URI always matches itself, and a URI that
differs from it in any way — case, trailing slash, port, query, fragment, userinfo, IDN form,
percent-encoding — never does (RFC 9700 §2.1, RFC 6749 §3.1.2)."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import pytest
from broker.oauth.authorization import ClientRejected, redirect_with, validate_client
from broker.routes.logout import LogoutRefused, _redirect_uri
from hypothesis import assume, given
from hypothesis import strategies as st
from shared.settings import Settings, make_settings

from tests.support.properties import budget, decoded_text

label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
idn_label = st.sampled_from(["bücher", "münchen", "日本", "пример", "straße", "xn--bcher-kva"])
host = st.one_of(
    st.lists(label, min_size=1, max_size=3).map(lambda labels: ".".join([*labels, "example"])),
    st.tuples(idn_label, label).map(lambda pair: f"{pair[0]}.{pair[1]}.example"),
    st.sampled_from(["127.0.0.1", "localhost", "[::1]"]),
)
segment = st.from_regex(r"[A-Za-z0-9._~!$&'()*+,;=:@-]{0,8}", fullmatch=True)
query = st.lists(
    st.tuples(
        st.from_regex(r"[a-z]{1,5}", fullmatch=True),
        st.from_regex(r"[A-Za-z0-9]{0,5}", fullmatch=True),
    ),
    max_size=3,
).map(lambda pairs: "&".join(f"{name}={value}" for name, value in pairs))


@st.composite
def registered_uris(draw: st.DrawFn) -> str:
    scheme = draw(st.sampled_from(["https", "http", "com.example.app"]))
    port = draw(st.none() | st.integers(1, 65535))
    path = "/" + "/".join(draw(st.lists(segment, min_size=1, max_size=3)))
    found = draw(query)
    netloc = draw(host) + (f":{port}" if port is not None else "")
    return f"{scheme}://{netloc}{path}" + (f"?{found}" if found else "")


def _swap_case(uri: str, index: int) -> str:
    return uri[:index] + uri[index].swapcase() + uri[index + 1 :]


def _percent_encode(uri: str, index: int) -> str:
    return uri[:index] + "".join(f"%{byte:02X}" for byte in uri[index].encode()) + uri[index + 1 :]


def _idn_swapped(uri: str) -> str:
    parts = urlsplit(uri)
    hostname = parts.hostname or ""
    try:
        other = hostname.encode("idna").decode() if not hostname.isascii() else None
        other = other or hostname.encode().decode("idna")
    except UnicodeError:
        return uri
    return uri.replace(hostname, other, 1)


@st.composite
def variants(draw: st.DrawFn, uri: str) -> str:
    """``uri`` changed in one of the ways that loose matching would forgive."""
    parts = urlsplit(uri)
    index = draw(st.integers(0, len(uri) - 1))
    port = parts.port
    with_port = parts._replace(netloc=f"{parts.hostname}:{draw(st.integers(0, 65535))}")
    changes = [
        _swap_case(uri, index),
        uri + "/",
        uri.rstrip("/") if uri.endswith("/") else uri + "/.",
        with_port.geturl(),
        parts._replace(netloc=parts.netloc.rsplit(":", 1)[0]).geturl() if port else uri + "?",
        uri + ("&" if parts.query else "?") + draw(query.filter(bool) | st.just("x")),
        parts._replace(query="").geturl(),
        uri + "#" + draw(st.sampled_from(["", "x", "code=1"])),
        parts._replace(netloc=f"{draw(label)}@{parts.netloc}").geturl(),
        parts._replace(netloc=f"{parts.netloc}@evil.example").geturl(),
        _idn_swapped(uri),
        _percent_encode(uri, index),
        uri.replace("%", "%25", 1),
        uri + draw(st.sampled_from(["\x00", " ", "\t", "\n", "%00", "%20", "/..", "//"])),
        draw(st.sampled_from([" ", "\ufeff", ""])) + uri,
    ]
    return draw(st.sampled_from(changes))


def settings_with(uris: list[str]) -> Settings:
    return make_settings(clients=[{"id": "app", "redirect_uris": uris}])


@budget(60)
@given(st.lists(registered_uris(), min_size=1, max_size=3, unique=True), st.data())
def test_a_registered_uri_matches_itself(uris: list[str], data: st.DataObject):
    uri = data.draw(st.sampled_from(uris))

    client, redirect_uri = validate_client(
        settings_with(uris), {"client_id": "app", "redirect_uri": uri}
    )

    assert (client.id, redirect_uri) == ("app", uri)


@budget(150)
@given(registered_uris().flatmap(lambda uri: st.tuples(st.just(uri), variants(uri))))
def test_a_uri_differing_from_the_registered_one_never_matches(pair: tuple[str, str]):
    registered, presented = pair
    assume(presented != registered)

    with pytest.raises(ClientRejected):
        validate_client(
            settings_with([registered]), {"client_id": "app", "redirect_uri": presented}
        )


@budget(100)
@given(registered_uris().flatmap(lambda uri: st.tuples(st.just(uri), variants(uri))))
def test_a_post_logout_redirect_uri_matches_only_the_registered_one(pair: tuple[str, str]):
    # docs/security.md "Logout needs proof": the same exact match, or no open redirect.
    registered, presented = pair
    settings = make_settings(
        clients=[
            {"id": "app", "redirect_uris": [registered], "post_logout_redirect_uris": [registered]}
        ]
    )
    client = settings.client("app")

    assert _redirect_uri(client, registered) == registered
    if presented != registered:
        with pytest.raises(LogoutRefused):
            _redirect_uri(client, presented)


@budget(100)
@given(registered_uris(), decoded_text)
def test_any_other_text_never_matches(registered: str, presented: str):
    assume(presented != registered)

    with pytest.raises(ClientRejected):
        validate_client(
            settings_with([registered]), {"client_id": "app", "redirect_uri": presented}
        )


@budget(100)
@given(registered_uris(), st.dictionaries(st.sampled_from(["code", "state", "iss"]), decoded_text))
def test_the_response_goes_to_the_registered_uri_keeping_its_query(
    registered: str, params: dict[str, str]
):
    location = urlsplit(redirect_with(registered, params))
    parts = urlsplit(registered)

    assert (location.scheme, location.netloc, location.path) == (
        parts.scheme,
        parts.netloc,
        parts.path,
    )
    own = parse_qsl(parts.query, keep_blank_values=True)
    assert parse_qsl(location.query, keep_blank_values=True) == [*own, *params.items()]
    assert location.fragment == ""
