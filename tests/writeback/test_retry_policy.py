"""The retry policy: exponential backoff with jitter, capped, never sooner than the EHR's Retry-After."""

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from service.ehr.client import retry_after_seconds
from service.writeback import retry_delay


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    rng = random.Random(1)
    for attempt, (low, high) in enumerate([(0.5, 1), (1, 2), (2, 4), (4, 8), (5, 10), (5, 10)], start=1):
        delays = [retry_delay(attempt, base_s=1, max_s=10, rng=rng) for _ in range(200)]
        assert low <= min(delays) and max(delays) <= high
        assert max(delays) - min(delays) > (high - low) / 2  # jittered, not one fixed value


def test_retry_after_is_a_floor_not_a_ceiling() -> None:
    assert retry_delay(1, base_s=1, max_s=10, retry_after_s=7, rng=random.Random(2)) == 7
    assert retry_delay(6, base_s=1, max_s=100, retry_after_s=1, rng=random.Random(2)) >= 16


@pytest.mark.parametrize("header,expected", [
    ("5", 5.0), (" 12 ", 12.0), (None, None), ("", None), ("soon", None), ("-3", None),
], ids=["seconds", "padded", "absent", "empty", "junk", "negative"])
def test_retry_after_header_values(header: str | None, expected: float | None) -> None:
    assert retry_after_seconds(header) == expected


def test_retry_after_as_an_http_date() -> None:
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 27 <= retry_after_seconds(later) <= 30
    earlier = format_datetime(datetime.now(UTC) - timedelta(seconds=30), usegmt=True)
    assert retry_after_seconds(earlier) == 0.0
