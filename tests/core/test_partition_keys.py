"""One partition key format everywhere: what Run now and the API take, what rows store, what
pages and the health API show."""

from __future__ import annotations

from datetime import UTC, datetime

from pipelines.core import schedule
from pipelines.templatetags.portal import partition


def test_pages_show_partitions_as_the_keys_run_now_takes():
    assert partition(datetime(2026, 11, 10, tzinfo=UTC)) == "2026-11-10"
    assert partition(datetime(2026, 11, 10, 13, tzinfo=UTC)) == "2026-11-10T13:00"
    assert partition(datetime(999, 1, 2, tzinfo=UTC)) == "0999-01-02"
    assert partition(None) == "—"


def test_a_shown_key_parses_back_to_the_same_partition():
    for moment, grain in (
        (datetime(2026, 11, 10, 13, tzinfo=UTC), "hour"),
        (datetime(2026, 11, 10, tzinfo=UTC), "day"),
    ):
        # Partitions are naive wall-clock times; stored rows label them UTC.
        assert schedule.parse_partition(partition(moment), grain) == moment.replace(tzinfo=None)
