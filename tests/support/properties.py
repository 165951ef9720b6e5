"""Hypothesis for the property tests: the profiles, each test's example budget, and strategies
for hostile request input.

A test states its budget for the default ``ci`` profile, ``@budget(50)``, sized so that every
property test together stays well under a minute on a shared two-core machine. The ``fuzz``
profile (``HYPOTHESIS_PROFILE=fuzz t tests/unit/test_properties_*.py``) multiplies each budget
for a long local run. tests/conftest.py loads the profile.
"""

from __future__ import annotations

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st

# Each profile's multiplier of a test's budget.
SCALES = {"ci": 1, "fuzz": 50}


def register_profiles(selected: str | None) -> None:
    """Register ``ci`` and ``fuzz`` and load ``selected`` (``ci`` when None)."""
    # No deadline: the machine is shared, and a slow example is not a failure of the parser.
    settings.register_profile("ci", deadline=None, print_blob=True)
    settings.register_profile(
        "fuzz", deadline=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow]
    )
    settings.load_profile(selected or "ci")


def budget(examples: int, *, shrink: bool = True) -> settings:
    """``@budget(n)``: n examples under ``ci``, more under ``fuzz``.

    ``shrink=False`` for properties that drive the app: a 500 there costs a second or two (the
    logged traceback), and shrinking would run a few hundred of them; their examples are small
    enough to read as found.
    """
    scale = SCALES.get(settings.get_current_profile_name(), 1)
    if shrink:
        return settings(max_examples=examples * scale)
    return settings(
        max_examples=examples * scale, phases=[phase for phase in Phase if phase != Phase.shrink]
    )


# Text as it reaches a handler after percent-decoding: any code point but a lone surrogate
# (Starlette and parse_qsl decode with errors="replace", so none survives).
decoded_text = st.text(st.characters(exclude_categories=["Cs"]))

# Any text, lone surrogates included (JSON bodies may carry "\ud800").
any_text = st.text()

# A header value as Starlette hands it over: bytes decoded as Latin-1.
header_text = st.binary(max_size=300).map(lambda raw: raw.decode("latin-1"))

# How deep to nest JSON: shallow, or past the ~1,000 levels where json.loads gives up with a
# RecursionError (and still within the 8 KiB a token may have).
nesting_depths = st.integers(1, 20) | st.integers(900, 5000)

# Strings that look like the usual suspects: digits of other scripts, signs, whitespace, NUL,
# very long runs, percent escapes, base64 alphabets.
tricky_text = st.one_of(
    decoded_text,
    # ASCII digits among superscripts, Arabic-Indic, Devanagari and fullwidth ones (str.isdigit()
    # is true for all of them; int() takes some and refuses others).
    st.text("0123456789 +-_.eE\u00b2\u00b3\u00b9\u0660\u0661\u0969\u096a\uff15", max_size=12),
    st.sampled_from(["", " ", "\x00", "\n", "%00", "%ff", "%", "%zz", "+", "=", "null", "[]"]),
    st.integers(min_value=5000, max_value=6000).map(lambda n: "9" * n),
    nesting_depths.map(lambda depth: "[" * depth),
)
