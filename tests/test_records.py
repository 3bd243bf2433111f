"""Row helpers the hot path leans on, held to what they replace."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from storage.records import timestamp


def stamped_by_datetime(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@given(st.floats(min_value=0, max_value=32503680000, allow_nan=False))  # 1970 to 3000
def test_timestamp_says_what_datetime_says(epoch: float) -> None:
    assert timestamp(epoch) == stamped_by_datetime(epoch)


def test_timestamp_at_the_edges_of_a_second_and_across_seconds() -> None:
    for epoch in (0.0, 1.9995, 1.9999994, 1.9999995, 1_764_000_000.9999996, 1_764_000_001.0, 1.0004999):
        assert timestamp(epoch) == stamped_by_datetime(epoch)
    stamps = [timestamp(1_764_000_000 + i * 0.37) for i in range(20)]  # the kept second moves on
    assert stamps == [stamped_by_datetime(1_764_000_000 + i * 0.37) for i in range(20)]
