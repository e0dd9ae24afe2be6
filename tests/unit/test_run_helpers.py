"""The pure parts of `healthbus run`: exit statuses, the failure text, the stderr tail."""

from __future__ import annotations

import signal

from hypothesis import given
from hypothesis import strategies as st

from healthbus.schema import ERROR_MAX_BYTES
from publishers.run import StderrTail, default_service, describe_exit, exit_code, failure_text


def test_exit_statuses_follow_the_shell() -> None:
    assert (exit_code(0), exit_code(3), exit_code(-signal.SIGKILL)) == (0, 3, 137)
    assert describe_exit(1) == "exit code 1"
    assert describe_exit(-signal.SIGTERM) == "killed by SIGTERM (exit code 143)"


def test_the_failure_text_ends_with_the_last_stderr_lines_scrubbed() -> None:
    stderr = "starting\n\nconnecting to postgres://app:hunter2@db\nERROR: relation missing\n"
    text = failure_text(2, stderr)
    assert text == (
        "exit code 2: starting | connecting to postgres://app:***@db | ERROR: relation missing"
    )
    assert failure_text(1, "") == "exit code 1"


@given(st.integers(1, 255), st.text(max_size=5000))
def test_the_failure_text_fits_the_error_limit_and_keeps_the_end(code: int, stderr: str) -> None:
    text = failure_text(code, stderr)
    assert text.startswith(f"exit code {code}")
    assert len(text.encode("utf-8", "surrogatepass")) <= ERROR_MAX_BYTES


def test_a_long_last_line_keeps_its_end() -> None:
    text = failure_text(1, "a" * 3000 + "THE END")
    assert text.startswith("exit code 1: …") and text.endswith("THE END")


def test_the_tail_keeps_the_last_bytes_and_drops_a_cut_line() -> None:
    tail = StderrTail(limit=16)
    tail.add(b"password=hunter2 first\n")
    tail.add(b"second\n")
    assert tail.cut and tail.text() == "second\n"  # "…ter2 first" could leak half a secret
    whole = StderrTail(limit=64)
    whole.add(b"only line")
    assert whole.text() == "only line"


def test_the_service_defaults_to_the_program_name() -> None:
    assert default_service(["/usr/local/bin/nightly backup.sh", "-v"]) == "nightly-backup.sh"
    assert default_service([]) == "job"
