"""The documentation and the route table stay in step: docs/http-api.md lists every route the
broker serves with each of its methods, and no page (README.md, docs/*.md) names a route or a
method the broker does not serve.

The route table is the built application's own (nothing is started); a path in the text "looks
like the broker's" when its first segment is one of the broker's namespaces. Path parameters
match whatever their names: ``{provider}`` and ``{provider id}`` are both ``{}``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from broker.app import create_app
from shared.runtime import build_runtime
from shared.settings import make_settings
from starlette.applications import Starlette

ROOT = Path(__file__).resolve().parents[2]
API_PAGE = ROOT / "docs" / "http-api.md"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# First path segments that make a path in the text the broker's (the route table adds its own).
NAMESPACES = {
    ".well-known",
    "authorize",
    "token",
    "userinfo",
    "revoke",
    "introspect",
    "logout",
    "auth",
    "admin",
    "avatars",
    "healthz",
    "readyz",
    "metrics",
}
# HEAD comes with every GET, OPTIONS with CORS: neither is documented per route.
IMPLIED_METHODS = {"HEAD", "OPTIONS"}

_SEGMENT = r"(?:[\w.~-]+|\{[^}/\n]*\}|\*)"
_PATH = re.compile(rf"/{_SEGMENT}(?:/{_SEGMENT})*")
_VERB = r"(?:GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS)"
_METHODS_AND_PATH = re.compile(rf"(?<![\w/])({_VERB}(?:/{_VERB})*) (?=/)")
_PARAMETER = re.compile(r"\{[^}]*\}")

Route = tuple[frozenset[str] | None, str]  # (methods, normalised path)


def _normalised(path: str) -> str:
    return _PARAMETER.sub("{}", path.rstrip("."))


def _routes_of(routes: Iterable[object], prefix: str = "") -> Iterator[Route]:
    for route in routes:
        path = prefix + getattr(route, "path", "")
        children = getattr(route, "routes", None)
        if children:  # a Mount: its routes under its path
            yield from _routes_of(children, path)
            continue
        methods = getattr(route, "methods", None)
        yield (frozenset(methods) if methods else None), _normalised(path)


@pytest.fixture(scope="module")
def route_table() -> list[Route]:
    app = create_app(build_runtime(make_settings()))
    while not isinstance(app, Starlette):  # the observer, the body cap, the direct routes
        app = app.app
    table = list(_routes_of(app.routes))
    assert len(table) > 30
    return table


def _is_the_brokers(path: str, namespaces: set[str]) -> bool:
    return path.split("/")[1] in namespaces


def _named_paths(text: str, namespaces: set[str]) -> set[str]:
    paths = {_normalised(match.group()) for match in _PATH.finditer(text)}
    return {path for path in paths if _is_the_brokers(path, namespaces)}


def _named_methods(text: str, namespaces: set[str]) -> set[tuple[str, str]]:
    """``GET /x`` and ``GET/POST /x`` as (method, normalised path) pairs."""
    pairs = set()
    for match in _METHODS_AND_PATH.finditer(text):
        found = _PATH.match(text, match.end())
        path = _normalised(found.group()) if found else ""
        if not path or not _is_the_brokers(path, namespaces):
            continue
        for method in match.group(1).split("/"):
            pairs.add((method, path))
    return pairs


def _namespaces(table: list[Route]) -> set[str]:
    return NAMESPACES | {path.split("/")[1] for _, path in table}


def _matches(route: str, path: str) -> bool:
    """``path`` names ``route``: a parameter stands for any one segment (``/auth/oauth2/github/
    callback`` is ``/auth/oauth2/{}/callback``), a ``*`` for anything below it."""
    if "*" in path:
        return route.startswith(path.split("*")[0])
    pattern = re.escape(route).replace(re.escape("{}"), r"[^/]+")
    return re.fullmatch(pattern, path) is not None


def _served(path: str, table: list[Route]) -> bool:
    return any(_matches(route, path) for _, route in table)


def _answers(method: str, path: str, table: list[Route]) -> bool:
    return any(
        _matches(route, path) and (methods is None or method in methods) for methods, route in table
    )


def test_every_route_and_method_is_listed_in_the_http_api_page(route_table) -> None:
    text = API_PAGE.read_text(encoding="utf-8")
    listed = _named_methods(text, _namespaces(route_table))
    missing = sorted(
        f"{method} {path}"
        for methods, path in route_table
        for method in sorted((methods or {"GET"}) - IMPLIED_METHODS)
        if (method, path) not in listed
    )
    assert missing == []


def test_no_page_names_a_route_the_broker_does_not_serve(route_table) -> None:
    namespaces = _namespaces(route_table)
    named = {
        (page.relative_to(ROOT).as_posix(), path)
        for page in PAGES
        for path in _named_paths(page.read_text(encoding="utf-8"), namespaces)
    }
    assert len(named) > 50  # the extraction finds what the pages name
    unknown = sorted((page, path) for page, path in named if not _served(path, route_table))
    assert unknown == []


def test_no_page_names_a_method_a_route_does_not_answer(route_table) -> None:
    namespaces = _namespaces(route_table)
    wrong = sorted(
        (page.relative_to(ROOT).as_posix(), f"{method} {path}")
        for page in PAGES
        for method, path in _named_methods(page.read_text(encoding="utf-8"), namespaces)
        if "*" not in path and not _answers(method, path, route_table)
    )
    assert wrong == []


@pytest.mark.parametrize(
    ("text", "paths"),
    [
        ("`{issuer}/auth/oauth2/{provider id}/callback`", {"/auth/oauth2/{}/callback"}),
        ("curl '$B/admin/oauth2/users?email=alice&limit=20'", {"/admin/oauth2/users"}),
        ("ends at /logout.", {"/logout"}),
        ("`shared/jobs/housekeeping.py`, `broker/tokens.py`, GitHub's `GET /user`", set()),
        ("`{authority}/{tenant}/v2.0/.well-known/openid-configuration`", set()),
    ],
)
def test_paths_are_read_from_the_text_as_the_broker_would_route_them(text, paths) -> None:
    assert _named_paths(text, NAMESPACES) == paths


def test_methods_are_read_with_their_path() -> None:
    text = "`GET/POST /authorize`, `DELETE /admin/oauth2/tokens/{id}`, `DELETE /applications/x`"
    assert _named_methods(text, NAMESPACES) == {
        ("GET", "/authorize"),
        ("POST", "/authorize"),
        ("DELETE", "/admin/oauth2/tokens/{}"),
    }
