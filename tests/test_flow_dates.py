"""Reading and writing dates with an instance's date format and time zone (flows.dates)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


# --- ISO 8601 formats: datetime.fromisoformat first, the same result as strptime -----------------

ISO_FORMATS = [
    "%Y-%m-%d", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S.%f",
    "%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M %z", "%Y-%m-%d %H:%M:%S %z",
    "%Y-%m-%dT%H:%M%z",
]
OTHER_FORMATS = ["%m/%d/%Y %H:%M", "%d/%m/%Y", "%Y-%m-%dT%H:%M:%SZ", "%Y-%d-%m", "%Y%m%d", "%Y-%m-%d %H:%M %Z"]


def _reference(text: str, fmt: str, zone_name: str) -> datetime:
    """How values were read before the ISO fast path: the format with strptime, else ISO 8601."""
    tz = dates.zone(zone_name)
    try:
        return dates._aware(dates._strptime(text.strip(), fmt), tz)
    except ValueError:
        pass
    try:
        return dates._aware(datetime.fromisoformat(text.strip()), tz)
    except ValueError:
        raise dates.DateError(text) from None


def _identity(moment: datetime) -> tuple:
    """Everything a reader of the moment could tell apart: fields, naive or aware, offset, zone name, fold."""
    return (moment.replace(tzinfo=None), moment.tzinfo is None, moment.utcoffset(), moment.tzname(), moment.fold,
            type(moment.tzinfo))


def _outcome(parse, *args):
    try:
        return _identity(parse(*args))
    except (dates.DateError, ValueError):
        return "error"


def _spellings(moment: datetime) -> list[str]:
    """`moment` written as APIs write ISO 8601 dates (and a few near misses)."""
    out = [moment.strftime(fmt) for fmt in ISO_FORMATS + OTHER_FORMATS]
    for sep in ("T", " ", "t"):
        for spec in ("minutes", "seconds", "milliseconds", "microseconds"):
            out.append(moment.isoformat(sep, spec))
    if moment.utcoffset() == timedelta(0):
        out += [moment.replace(tzinfo=None).isoformat() + "Z", moment.replace(tzinfo=None).isoformat("T", "seconds") + "Z",
                moment.replace(tzinfo=None).isoformat("T", "seconds") + "z"]
    out.append(moment.date().isoformat())
    out.append(moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{moment.microsecond:06d}"[:4])  # 3 fraction digits
    out.append(" " + moment.isoformat() + " ")
    return out


offsets = st.one_of(
    st.none(),
    st.just(UTC),
    st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda minutes: timezone(timedelta(minutes=minutes))),
    st.integers(-86399, 86399).map(lambda seconds: timezone(timedelta(seconds=seconds))),
)
moments = st.builds(
    lambda naive, tz: naive.replace(tzinfo=tz),
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 30)),
    offsets,
)


@settings(max_examples=300, deadline=None)
@given(moment=moments, zone_name=st.sampled_from(["UTC", "Europe/London", "America/New_York", "Asia/Kolkata"]))
def test_iso_formats_read_every_value_as_strptime_then_the_iso_fallback_did(moment, zone_name):
    for text in _spellings(moment):
        for fmt in ISO_FORMATS + OTHER_FORMATS:
            assert _outcome(dates.parse, text, fmt, zone_name) == _outcome(_reference, text, fmt, zone_name), (text, fmt)


@settings(max_examples=300, deadline=None)
@given(moment=moments)
def test_where_fromisoformat_and_strptime_both_read_a_value_they_agree(moment):
    for text in _spellings(moment):
        for fmt in ISO_FORMATS:
            try:
                by_format = datetime.strptime(text.strip(), fmt)
                by_iso = datetime.fromisoformat(text.strip())
            except ValueError:
                continue
            assert _identity(by_iso) == _identity(by_format), (text, fmt)


@settings(max_examples=200, deadline=None)
@given(moment=moments)
def test_values_written_in_an_iso_format_take_the_fast_path(moment):
    """What an ISO format writes, fromisoformat reads (so strptime is not called), to the same moment."""
    for fmt in ISO_FORMATS:
        text = moment.strftime(fmt)
        if len(text.split("-")[0]) != 4 or ("%z" in fmt and moment.tzinfo is None):
            continue  # years before 1000 (fewer than 4 digits, not ISO 8601); %z of a naive moment writes nothing
        assert dates.is_iso_format(fmt)
        assert _identity(datetime.fromisoformat(text)) == _identity(datetime.strptime(text, fmt)), (text, fmt)


def test_only_iso_layouts_are_read_with_fromisoformat_first():
    assert not any(dates.is_iso_format(fmt) for fmt in OTHER_FORMATS)
    # A literal Z in the format is text to strptime: the value is a wall-clock time in the instance's zone.
    moment = dates.parse("2026-07-01T12:00:00Z", "%Y-%m-%dT%H:%M:%SZ", "Europe/London")
    assert moment.astimezone(UTC) == datetime(2026, 7, 1, 11, 0, tzinfo=UTC)
    # With %z it is UTC, read by the fast path; fractions, offsets and dates alone as before.
    assert dates.parse("2026-07-01T12:00:00Z", "%Y-%m-%dT%H:%M:%S%z", "Europe/London") == datetime(
        2026, 7, 1, 12, 0, tzinfo=UTC)
    assert dates.parse("2026-07-01T12:00:00.250+02:00", "%Y-%m-%dT%H:%M:%S.%f%z", "UTC").utcoffset() == timedelta(hours=2)
    assert dates.parse("2026-07-01", "%Y-%m-%dT%H:%M:%S%z", "Europe/London") == datetime(
        2026, 7, 1, tzinfo=dates.zone("Europe/London"))


def test_an_iso_format_still_reads_what_only_strptime_reads():
    # strptime takes one-digit months and days and any run of spaces; fromisoformat does not.
    assert dates.parse("2026-7-1 9:05", "%Y-%m-%d %H:%M", "UTC") == datetime(2026, 7, 1, 9, 5, tzinfo=UTC)
    assert dates.parse("2026-07-01   09:05", "%Y-%m-%d %H:%M", "UTC") == datetime(2026, 7, 1, 9, 5, tzinfo=UTC)
