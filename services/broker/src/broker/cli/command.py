"""What the operator commands share: who runs them (the audit actor), and how one ends.

A command's work is a coroutine that returns what to print. ``run_command`` runs it and maps
the outcome to the exit status: 0 with the outcome on stdout; 1 with the reason on stderr when
the work raised ``CommandError`` (nothing written) or the database refused.
"""

from __future__ import annotations

import asyncio
import getpass
import sys
from collections.abc import Coroutine
from typing import Any

from sqlalchemy.exc import DBAPIError


class CommandError(Exception):
    """The command cannot do what was asked: it writes nothing and exits 1."""


def cli_actor() -> str:
    """The audit actor of a CLI change: ``cli:<login name>``, ``cli:unknown`` when there is none."""
    try:
        login = getpass.getuser()
    except (OSError, KeyError):  # no LOGNAME/USER and no passwd entry (containers)
        login = ""
    return f"cli:{login or 'unknown'}"


def run_command(work: Coroutine[Any, Any, str]) -> int:
    """Run ``work`` and print its outcome; the exit status (errors on stderr)."""
    try:
        print(asyncio.run(work))
    except CommandError as exc:
        print(f"broker: {exc}", file=sys.stderr)
        return 1
    except DBAPIError as exc:
        print(f"broker: the database refused: {exc.orig}", file=sys.stderr)
        return 1
    return 0
