"""Dates as third-party APIs write them: parsed with an instance's date format and time zone, and written back.

An instance says how its API writes dates (a strftime format such as
``%d/%m/%Y %H:%M``) and in which time zone (e.g. ``Europe/London``). A value
without an offset is a wall-clock time in that zone; a value with one (``%z``,
or ISO 8601 with ``Z``/``+01:00``) keeps it. ISO 8601 is accepted as a fallback
for values that do not match the format.

When the format is itself ISO 8601 (``%Y-%m-%dT%H:%M:%S%z`` and its shorter or
longer forms), a value is read with ``datetime.fromisoformat`` first, several
times faster than ``strptime``; it falls back to the format, then ISO 8601, as
for any other format. For such formats a value both accept reads the same
(fields, offset, naive or aware; tests/test_flow_dates.py compares them over
generated values), and a value only ``fromisoformat`` accepts was read by the
ISO fallback already, so the order changes nothing but the time. A literal
``Z`` in a format is not ISO here: strptime reads it as plain text, so the
value is a wall-clock time in the instance's zone, not UTC.

Wall-clock times that happen twice (the hour after clocks go back) are taken
as the first of the two (fold 0); times that do not exist (the hour skipped
when clocks go forward) are taken as the moment the same number of minutes
after the last valid time before the gap (zoneinfo's reading, e.g. 01:30 in a
01:00 -> 02:00 gap is 02:30 local time).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from connectors.manifest import DATE_DIRECTIVES

MAX_VALUE_CHARS = 100
# The ISO 8601 formats read with datetime.fromisoformat first: date, optional time to the minute, second or
# fraction, an optional offset (%z, with or without a space before it).
ISO_FORMAT_RE = re.compile(r"%Y-%m-%d(?:[T ]%H:%M(?::%S(?:\.%f)?)?(?: ?%z)?)?")


class DateError(ValueError):
    """A value that is not a date in the expected format, or an unusable format or time zone."""


@lru_cache(maxsize=256)
def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise DateError(f'unknown time zone "{name}"') from exc


@lru_cache(maxsize=256)
def is_iso_format(fmt: str) -> bool:
    """Whether `fmt` is one of the ISO 8601 layouts datetime.fromisoformat reads as strptime would."""
    return ISO_FORMAT_RE.fullmatch(fmt) is not None


@lru_cache(maxsize=256)
def check_format(fmt: str) -> None:
    """Refuse a format with a directive other than those a connector may declare."""
    if not fmt or "%" not in fmt:
        raise DateError(f'"{fmt}" is not a date format (it needs directives such as %Y or %d)')
    for directive in re.findall(r"%(.?)", fmt):
        if directive not in DATE_DIRECTIVES:
            raise DateError(f'unknown directive "%{directive}" in the date format "{fmt}"')


def _aware(moment: datetime, tz: ZoneInfo) -> datetime:
    if moment.tzinfo is not None:
        return moment
    # Through UTC and back: a wall-clock time in a skipped hour becomes the real one after the gap.
    return moment.replace(tzinfo=tz, fold=0).astimezone(UTC).astimezone(tz)


def _strptime(text: str, fmt: str) -> datetime:
    if fmt.endswith("%Z") and " " in text:
        # strptime knows only UTC, GMT and the host's own zone names for %Z: a
        # trailing IANA name (Europe/London) is read as that zone.
        rest, name = text.rsplit(" ", 1)
        if "/" in name:
            try:
                tz = zone(name)
            except DateError:
                raise ValueError(name) from None
            return _aware(datetime.strptime(rest, fmt[:-2].rstrip()), tz)
    moment = datetime.strptime(text, fmt)
    if moment.tzinfo is None and "%Z" in fmt and re.search(r"\b(UTC|GMT)\b", text):
        moment = moment.replace(tzinfo=UTC)
    return moment


def parse(value: object, fmt: str, zone_name: str) -> datetime:
    """`value` as an aware datetime: read with `fmt` (naive values are in `zone_name`), else as ISO 8601.

    Raises DateError with a sentence naming the value and the expected format.
    """
    tz = zone(zone_name)
    if isinstance(value, datetime):
        return _aware(value, tz)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=tz)
    if not isinstance(value, str) or not value.strip():
        shown = "an empty value" if value in (None, "") else f"{type(value).__name__} {value!r}"[:MAX_VALUE_CHARS]
        raise DateError(f"{shown} is not a date (expected the format {fmt} or ISO 8601)")
    text = value.strip()
    iso_first = bool(fmt) and is_iso_format(fmt)
    if iso_first:
        try:
            return _aware(datetime.fromisoformat(text), tz)
        except ValueError:
            pass
    if fmt:
        try:
            return _aware(_strptime(text, fmt), tz)
        except ValueError:
            pass
    if not iso_first:
        try:
            return _aware(datetime.fromisoformat(text), tz)
        except ValueError:
            pass
    raise DateError(f'"{text[:MAX_VALUE_CHARS]}" is not a date in the format {fmt} or ISO 8601')


def format(moment: datetime, fmt: str, zone_name: str) -> str:  # noqa: A001 - the module's verb
    """`moment` written in the zone `zone_name` with `fmt` (%z gives +0100, %Z the zone's abbreviation)."""
    check_format(fmt)
    if moment.tzinfo is None:
        raise DateError("a moment without a time zone cannot be converted")
    return moment.astimezone(UTC).astimezone(zone(zone_name)).strftime(fmt)


def utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)
