"""`{{ values|datalist_options }}`: the <option>s of a long, fixed <datalist> (e.g. every IANA time zone)."""

from __future__ import annotations

import functools

from django import template
from django.utils.html import format_html_join
from django.utils.safestring import SafeString

register = template.Library()


@functools.lru_cache(maxsize=8)
def _options(values: tuple[str, ...]) -> SafeString:
    return format_html_join("", '<option value="{}">', ((value,) for value in values))


@register.filter
def datalist_options(values) -> SafeString:
    """Rendered once per distinct list, not looped over on every request (600 time zones)."""
    return _options(tuple(values))
