"""``bench.scale``'s sizes as the command line gives them and as its report prints them, and the
seeded tokens it presents (``bench.seeded_tokens``) as the broker would hash them."""

from __future__ import annotations

import argparse
import uuid

import pytest
from shared.crypto.opaque import token_hash

from bench.scale import parse_args, parse_count, parse_sizes, seed_scale
from bench.scale_report import Size, count_label, rounded
from bench.seeded_tokens import current_token, current_token_sql


@pytest.mark.parametrize(
    ("text", "value"),
    [("10k", 10_000), ("1M", 1_000_000), ("1m", 1_000_000), ("2500", 2_500), ("1.5k", 1_500)],
)
def test_counts_take_k_and_m(text: str, value: int) -> None:
    assert parse_count(text) == value
    assert parse_count(count_label(value)) == value


@pytest.mark.parametrize("text", ["", "k", "10x", "-5", "0", "1e6"])
def test_a_count_that_is_not_one_is_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_count(text)


def test_audit_rows_are_one_for_all_sizes_or_one_each() -> None:
    assert parse_sizes("10k,100k", "1M") == (Size(10_000, 1_000_000), Size(100_000, 1_000_000))
    assert parse_sizes("10k,1M", "1M,10M") == (Size(10_000, 1_000_000), Size(1_000_000, 10_000_000))
    with pytest.raises(argparse.ArgumentTypeError, match="one per size"):
        parse_sizes("10k,100k,1M", "1M,10M")


def test_the_default_run_is_the_three_sizes_and_two_audit_tables() -> None:
    options = parse_args([])
    assert options.sizes == (
        Size(10_000, 1_000_000),
        Size(100_000, 1_000_000),
        Size(1_000_000, 10_000_000),
    )
    assert options.json_path is None


def test_bad_sizes_exit_with_a_usage_error() -> None:
    with pytest.raises(SystemExit):
        parse_args(["--sizes", "10k,100k", "--audit-rows", "1,2,3"])


def test_a_size_seeds_two_users_for_three_sessions() -> None:
    scale = seed_scale(Size(150_000, 1_000_000), tokens_per_session=8)
    assert (scale.users, scale.sessions, scale.audit_rows) == (100_000, 150_000, 1_000_000)
    assert scale.tokens_per_session == 8


def test_the_report_rounds_measured_counts() -> None:
    assert [rounded(n) for n in (950, 26_610, 4_512_345)] == ["950", "27k", "4.5M"]


def test_a_seeded_token_looks_like_the_brokers_own() -> None:
    session = uuid.UUID("9a1f6e52-5d0b-4f3e-8a66-0b7d3c2f1e00")
    token = current_token("abc123", session)
    assert len(token) == 43 and "=" not in token and "+" not in token and "/" not in token
    assert token != current_token("abc124", session)
    assert len(token_hash(token)) == 32


def test_the_token_seed_is_only_letters_and_digits() -> None:
    """It is inlined in the seed's SQL."""
    with pytest.raises(ValueError, match="letters and digits"):
        current_token_sql("x'; DROP TABLE users; --", "t.id")
