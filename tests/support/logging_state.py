"""``configure_logging`` changes process-wide state: the ``restore_logging`` fixture resets it,
and ``logging_kept`` puts back what was there before."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import structlog

# The loggers configure_logging sets a level on, besides the root logger.
_NAMED = ("authlib", "httpx", "httpx2", "httpcore", "uvicorn.access")


@contextmanager
def logging_kept() -> Iterator[None]:
    """The root logger's handlers and level, the named loggers' levels and structlog's
    configuration as they were before the block, whatever it configured."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    saved_levels = {name: logging.getLogger(name).level for name in _NAMED}
    saved_structlog = structlog.get_config()
    try:
        yield
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        for name, level in saved_levels.items():
            logging.getLogger(name).setLevel(level)
        structlog.configure(**saved_structlog)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """configure_logging changes process-wide state: put it back afterwards."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    saved_levels = {name: logging.getLogger(name).level for name in _NAMED}
    yield
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)
    for name, level in saved_levels.items():
        logging.getLogger(name).setLevel(level)
    structlog.reset_defaults()
