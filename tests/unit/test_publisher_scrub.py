"""Credential scrubbing and truncation of error texts (pure functions)."""

from __future__ import annotations

import pytest

from publishers.scrub import MASK, clean_error, scrub, truncate_utf8

pytestmark = pytest.mark.fault


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("redis://user:s3cret@host:6379/0 down", "redis://user:***@host:6379/0 down"),
        ("redis://:s3cret@host", "redis://:***@host"),
        ("postgresql://u:p@ss@db:5432/x", "postgresql://u:***@db:5432/x"),
        ("clone https://ghp_abc123@github.com/o/r", "clone https://***@github.com/o/r"),
        ("password=hunter2 next", "password=*** next"),
        ("PGPASSWORD=abc; rest", "PGPASSWORD=***; rest"),
        ('{"password": "hunter2", "x": 1}', '{"password": "***", "x": 1}'),
        ("GET /x?access_token=abc&y=1", "GET /x?access_token=***&y=1"),
        ("api_key: 'k1' used", "api_key: '***' used"),
        ("client_secret=zzz", "client_secret=***"),
        ("Authorization: Bearer eyJhbGciOi.abc.def", "Authorization: Bearer ***"),
        ("sent bearer abc.def-123", "sent bearer ***"),
        ("Authorization: Basic dXNlcjpwYXNz==", "Authorization: Basic ***"),
        ('{"Authorization": "Token abc"}', '{"Authorization": "Token ***"}'),
    ],
)
def test_secrets_are_masked(text: str, expected: str) -> None:
    assert scrub(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "plain message",
        "token expired",
        "invalid password for user x",
        "Authorization failed",
        "http://example.com/path?q=1",
        "ValueError: a@b is not an email",
    ],
)
def test_harmless_text_is_kept(text: str) -> None:
    assert scrub(text) == text


def test_secret_is_gone_wherever_it_appears() -> None:
    text = "retry 3/5: redis://app:Xy9-secret@cache:6379 (password=Xy9-secret)"
    assert "Xy9-secret" not in scrub(text) and MASK in scrub(text)


def test_truncates_to_1_kib_of_utf8_without_splitting_characters() -> None:
    out = clean_error("é" * 2000)
    assert len(out.encode()) <= 1024 and out.endswith("…")
    out.encode("utf-8")  # still valid text
    assert truncate_utf8("short", 1024) == "short"


def test_scrubs_before_cutting() -> None:
    out = clean_error("x" * 1000 + " password=" + "s" * 5000)
    assert "ssss" not in out and len(out.encode()) <= 1024


def test_huge_input_is_bounded() -> None:
    assert len(clean_error("a" * 10_000_000).encode()) <= 1024
