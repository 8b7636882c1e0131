"""The Jinja2 environment of the one fragment rendered with Jinja2: the connector cards and instance rows.

The manage connectors page shows 20 connector cards with 100 instance rows;
through Django's template engine they cost twice the page's CPU, through
Jinja2 (compiled to Python) about what the rest of the page costs. Every other
template, the page around the cards included, is a Django template. Values are
autoescaped; the helpers here are the Django template tags and filters the
fragment uses.
"""

from __future__ import annotations

from django.contrib.humanize.templatetags.humanize import naturaltime
from django.utils import timezone
from django.utils.dateformat import format as date_format
from django.utils.dateformat import time_format
from django.utils.dates import MONTHS_3
from jinja2 import Environment

from patchworks_site.templatetags.pk_urls import pk_url


def exact_time(local) -> str:
    """`date_format(local, "j M Y, H:i:s T")`, built directly when the time is in UTC (no DST: "T" is always UTC).

    A page has up to 200 of these; DateFormat costs ten times as much.
    """
    if getattr(local.tzinfo, "key", None) != "UTC":
        return date_format(local, "j M Y, H:i:s T")
    return (f"{local.day} {MONTHS_3[local.month].title()} {local.year:04d}, "
            f"{local.hour:02d}:{local.minute:02d}:{local.second:02d} UTC")


def _exact(value, tz=None) -> str:
    """Django's `date:"j M Y, H:i:s T"`: in the current time zone (`tz`, when the template has it at hand)."""
    return exact_time(timezone.localtime(value, tz))


def _iso(value, tz=None) -> str:
    """Django's `date:"c"` (what it returns, without building a DateFormat): in the current time zone."""
    return timezone.localtime(value, tz).isoformat()


def _date(value, format_string: str) -> str:
    """Django's `date` filter: in the current time zone."""
    return date_format(timezone.localtime(value), format_string)


def _time(value, format_string: str) -> str:
    """Django's `time` filter: in the current time zone."""
    return time_format(timezone.localtime(value), format_string)


def environment(**options) -> Environment:
    env = Environment(**options)
    env.globals["pk_url"] = pk_url
    env.filters.update(date=_date, time=_time, naturaltime=naturaltime, isoformat=_iso, exact_time=_exact)
    return env
