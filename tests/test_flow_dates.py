"""Reading and writing dates with an instance's date format and time zone (flows.dates)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from flows import dates


def test_a_naive_value_is_read_in_the_instance_time_zone():
    moment = dates.parse("25/12/2026 09:30", "%d/%m/%Y %H:%M", "America/New_York")
    assert moment.astimezone(UTC) == datetime(2026, 12, 25, 14, 30, tzinfo=UTC)


def test_a_value_with_an_offset_keeps_it_whatever_the_instance_zone():
    moment = dates.parse("25/12/2026 09:30 +0200", "%d/%m/%Y %H:%M %z", "America/New_York")
    assert moment.astimezone(UTC) == datetime(2026, 12, 25, 7, 30, tzinfo=UTC)


def test_iso_8601_is_the_fallback_when_the_format_does_not_match():
    assert dates.parse("2026-12-25T09:30:00Z", "%d/%m/%Y", "Europe/London") == datetime(2026, 12, 25, 9, 30, tzinfo=UTC)
    # Naive ISO values are in the instance zone too.
    moment = dates.parse("2026-07-01T12:00:00", "%d/%m/%Y", "Europe/London")
    assert moment.astimezone(UTC) == datetime(2026, 7, 1, 11, 0, tzinfo=UTC)


def test_zone_names_after_the_value_are_read():
    moment = dates.parse("2026-07-01 12:00 Europe/Paris", "%Y-%m-%d %H:%M %Z", "UTC")
    assert moment.astimezone(UTC) == datetime(2026, 7, 1, 10, 0, tzinfo=UTC)
    assert dates.parse("2026-07-01 12:00 UTC", "%Y-%m-%d %H:%M %Z", "Europe/Paris").astimezone(UTC).hour == 12


def test_the_hour_after_clocks_go_back_is_read_as_the_first_of_the_two():
    # Europe/London, 25 October 2026: 01:00-02:00 BST happens, then 01:00-02:00 GMT.
    moment = dates.parse("2026-10-25 01:30", "%Y-%m-%d %H:%M", "Europe/London")
    assert moment.astimezone(UTC) == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)


def test_a_time_in_the_skipped_hour_is_read_as_the_same_minutes_after_the_gap():
    # 29 March 2026: clocks go from 01:00 GMT to 02:00 BST; 01:30 does not exist.
    moment = dates.parse("2026-03-29 01:30", "%Y-%m-%d %H:%M", "Europe/London")
    assert moment.astimezone(UTC) == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    assert dates.format(moment, "%H:%M %Z", "Europe/London") == "02:30 BST"


def test_formatting_writes_the_moment_in_the_zone_with_the_format():
    moment = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
    assert dates.format(moment, "%d/%m/%Y %H:%M %Z %z", "Europe/London") == "01/07/2026 13:00 BST +0100"
    assert dates.format(moment, "%Y-%m-%dT%H:%M:%S%z", "Asia/Tokyo") == "2026-07-01T21:00:00+0900"
    winter = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
    assert dates.format(winter, "%H:%M %Z", "Europe/London") == "12:00 GMT"


def test_dates_and_datetimes_are_accepted_as_they_are():
    assert dates.parse(date(2026, 1, 2), "%Y", "UTC") == datetime(2026, 1, 2, tzinfo=UTC)
    aware = datetime(2026, 1, 2, 3, 4, tzinfo=UTC)
    assert dates.parse(aware, "%Y", "Europe/Paris") is aware


@pytest.mark.parametrize("value, fragment", [
    ("yesterday", '"yesterday" is not a date in the format %d/%m/%Y or ISO 8601'),
    ("", "an empty value is not a date"),
    (None, "an empty value is not a date"),
    (12345, "int 12345 is not a date"),
    ("31/02/2026", '"31/02/2026" is not a date'),
])
def test_bad_values_are_a_clear_error(value, fragment):
    with pytest.raises(dates.DateError) as caught:
        dates.parse(value, "%d/%m/%Y", "UTC")
    assert fragment in str(caught.value)


def test_bad_zones_and_formats_are_a_clear_error():
    with pytest.raises(dates.DateError, match='unknown time zone "Mars/Olympus"'):
        dates.parse("2026-01-01", "%Y-%m-%d", "Mars/Olympus")
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(dates.DateError, match='unknown directive "%Q"'):
        dates.format(moment, "%Y %Q", "UTC")
    with pytest.raises(dates.DateError, match="is not a date format"):
        dates.format(moment, "YYYY", "UTC")
    with pytest.raises(dates.DateError, match="without a time zone"):
        dates.format(datetime(2026, 1, 1), "%Y", "UTC")
