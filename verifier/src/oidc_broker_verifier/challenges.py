"""``WWW-Authenticate`` challenges whose values are safe to send, whatever text they carry.

docs/security.md "Header values from input": a challenge's parameters may quote a request (an error
description naming a token's ``alg``, say), and a header value that is not Latin-1 cannot be
sent at all (Starlette raises, a 401 becomes a 500), while quotes, backslashes and control
characters break the header's syntax. RFC 6750 §3 allows only %x20-21 / %x23-5B / %x5D-7E in
its quoted values (no ``"``, no ``\\``), which RFC 7235 §2.1's ``auth-param`` accepts as a
quoted-string: every other character is replaced with ``?``, and a value is cut at
``MAX_VALUE_LENGTH`` characters so that no request makes a header a proxy refuses. The JSON
body of the same error carries the full text. Stdlib only: the verifier's middleware and the
broker's errors both build their challenges here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

MAX_VALUE_LENGTH = 200
_OUTSIDE_QUOTED_VALUE = re.compile(r"[^\x20\x21\x23-\x5b\x5d-\x7e]")


def challenge(scheme: str, params: Mapping[str, str]) -> str:
    """``scheme name="value", ...``: every value made printable ASCII without quotes or
    backslashes. ``scheme`` and the parameter names are the caller's constants."""
    quoted = (
        f'{name}="{_OUTSIDE_QUOTED_VALUE.sub("?", value[:MAX_VALUE_LENGTH])}"'
        for name, value in params.items()
    )
    return f"{scheme} {', '.join(quoted)}"
