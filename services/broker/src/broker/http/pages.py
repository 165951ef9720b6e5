"""Server-rendered pages: provider chooser, link confirmation, dev login form, sign-out, error
page.

Every page is escaped with ``html.escape`` and sent with ``frame-ancestors 'none'`` and
``no-referrer`` (docs/security.md "Page headers and escaping"); upstream text such as
``error_description`` is never raw HTML.
"""

from __future__ import annotations

from collections.abc import Iterable
from html import escape
from urllib.parse import urlsplit

from starlette.responses import HTMLResponse

PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:28rem;margin:4rem auto;padding:0 1rem;"
    "color:#1f2328}h1{font-size:1.4rem}a.button,button{display:block;width:100%;margin:.5rem 0;"
    "padding:.7rem;border:1px solid #d0d7de;border-radius:6px;background:#f6f8fa;color:inherit;"
    "text-align:center;text-decoration:none;font-size:1rem;cursor:pointer}"
    "input{display:block;width:100%;box-sizing:border-box;margin:.3rem 0 1rem;padding:.5rem;"
    "font-size:1rem}.muted{color:#57606a;font-size:.9rem}"
)


def redirect_sources(uris: Iterable[str]) -> list[str]:
    """CSP sources for where a form's answer may redirect: the origin of each web URI, the
    scheme of an app's custom-scheme URI (``com.example.app:``)."""
    sources = set()
    for uri in uris:
        parts = urlsplit(uri)
        if parts.scheme in ("http", "https"):
            sources.add(f"{parts.scheme}://{parts.netloc}")
        elif parts.scheme:
            sources.add(f"{parts.scheme}:")
    return sorted(sources)


def _headers(form_redirects: Iterable[str]) -> dict[str, str]:
    """Chromium applies ``form-action`` to the redirects that answer a form too, so a form
    whose answer sends the browser on to a relying party lists that party's origin."""
    extra = "".join(f" {source}" for source in form_redirects)
    if not extra:
        return PAGE_HEADERS
    policy = PAGE_HEADERS["Content-Security-Policy"].replace(
        "form-action 'self';", f"form-action 'self'{extra};"
    )
    return {**PAGE_HEADERS, "Content-Security-Policy": policy}


def _page(
    title: str, body: str, status_code: int = 200, form_redirects: Iterable[str] = ()
) -> HTMLResponse:
    document = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body>{body}</body></html>"
    )
    return HTMLResponse(document, status_code=status_code, headers=_headers(form_redirects))


def error_page(title: str, description: str, status_code: int = 400) -> HTMLResponse:
    return _page(
        title,
        f"<h1>{escape(title)}</h1><p>{escape(description)}</p>"
        '<p class="muted">Return to the application you came from and try again.</p>',
        status_code,
    )


def chooser_page(client_name: str, choices: Iterable[tuple[str, str]]) -> HTMLResponse:
    """``choices``: (display name, login URL) per provider."""
    links = "".join(
        f'<a class="button" href="{escape(url)}">{escape(name)}</a>' for name, url in choices
    )
    return _page(
        "Sign in",
        f"<h1>Sign in to {escape(client_name)}</h1>{links}",
    )


def link_confirm_page(
    provider_name: str, account: str, continue_url: str, cancel_url: str
) -> HTMLResponse:
    """The last step before a link goes upstream: the person sees which account gets which
    provider and clicks on (docs/security.md "Linking needs a fresh browser sign-in")."""
    return _page(
        "Link an account",
        f"<h1>Link {escape(provider_name)} to your account?</h1>"
        f"<p>You are signed in as <strong>{escape(account)}</strong>. Continuing adds the "
        f"{escape(provider_name)} account you sign in with next as another way into this "
        "account.</p>"
        f'<a class="button" id="link-continue" href="{escape(continue_url)}">'
        f"Continue to {escape(provider_name)}</a>"
        f'<a class="button" id="link-cancel" href="{escape(cancel_url)}">Cancel</a>'
        '<p class="muted">If you did not ask to link an account, cancel.</p>',
    )


def dev_login_page(
    action: str, state: str, provider_name: str, form_redirects: Iterable[str]
) -> HTMLResponse:
    """The dev provider's form; its answer redirects to a client (``form_redirects``)."""
    return _page(
        "Development login",
        f"<h1>{escape(provider_name)}</h1>"
        '<p class="muted">Local development only: type any email and name. '
        "Emails from this provider are never treated as verified.</p>"
        f'<form method="post" action="{escape(action)}">'
        f'<input type="hidden" name="state" value="{escape(state)}">'
        '<label>Email<input name="email" type="email" required autofocus></label>'
        '<label>Name<input name="name" type="text"></label>'
        '<button type="submit">Sign in</button></form>',
        form_redirects=form_redirects,
    )


def logout_confirm_page(
    action: str, fields: dict[str, str], client_name: str | None, form_redirects: Iterable[str]
) -> HTMLResponse:
    """RP-initiated logout without an ``id_token_hint``: the user confirms (docs/security.md "Logout
    needs proof")."""
    hidden = "".join(
        f'<input type="hidden" name="{escape(name)}" value="{escape(value)}">'
        for name, value in fields.items()
    )
    where = f" of {escape(client_name)}" if client_name else ""
    return _page(
        "Sign out",
        f"<h1>Sign out{where}?</h1>"
        "<p>This ends your sign-in in this browser. You will need to sign in again.</p>"
        f'<form method="post" action="{escape(action)}">{hidden}'
        '<button type="submit">Sign out</button></form>',
        form_redirects=form_redirects,
    )


def signed_out_page() -> HTMLResponse:
    return _page(
        "Signed out",
        "<h1>You are signed out</h1>"
        '<p class="muted">You can close this window or return to the application.</p>',
    )


def account_exists_page(
    provider_name: str, explanation: str, return_url: str | None
) -> HTMLResponse:
    """A sign-in whose email belongs to an existing account that it may not join
    (docs/security.md "Auto-linking is off by default").

    Says what to do instead — sign in the usual way, then link — and never which account or
    which provider holds the address.
    """
    back = (
        f'<a class="button" href="{escape(return_url)}">Return to the application</a>'
        if return_url
        else ""
    )
    return _page(
        "Account already exists",
        "<h1>An account with this email address already exists</h1>"
        f"<p>{escape(explanation)}</p>"
        "<p>Sign in the way you signed in before, then link "
        f"{escape(provider_name)} to your account from there.</p>{back}",
        status_code=409,
    )
