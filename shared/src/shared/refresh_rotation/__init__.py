"""Refresh-token rotation: exchange the family's newest token for its successor (RFC 9700 §4.14.2).

A rotation also needs a live session of the same client, an active user, and an upstream link
that is neither revoked nor waiting for re-authentication (``oauth2_tokens.state``).

On PostgreSQL the rotation is one statement on the hot-path pool (``hot_path``), and the
rotations that arrive together share one (``groups``). SQLite (the embedded default) and
refreshes that narrow the scope run the same steps as separate statements inside the caller's
transaction (``portable``). When any of them finds nothing to rotate,
``replays.resolve_failed_rotation`` says why (for each request on its own), or answers the
reuse interval's grant.

Layers, each importing only those below it (an import-linter contract):

* ``groups``: group commit, concurrent rotations of one process in one statement.
* ``hot_path``: the PostgreSQL statements, single and group, and their connection-failure
  paths; ``portable``: the rotation inside the caller's transaction.
* ``replays``: a rotation that found nothing: the reason, the reuse interval's grant, a
  replay's revocations.
* ``outcomes``: what a rotation answers, its grant or ``RotationError``; ``policy``: the
  lifetimes, the reuse interval, and the successor a token derives.

Import from the module that defines a name; the package itself exports nothing.
"""
