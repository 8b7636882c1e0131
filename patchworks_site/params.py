"""Typed reading of query-string and form parameters shared by every app's views.

A parameter a page merely uses to filter or highlight falls back to its
default when it is malformed; one that cannot mean anything (text with a NUL
character, which PostgreSQL refuses to compare) is a 400 with the reason.
Never a 500.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from django.core.exceptions import BadRequest
from django.http import HttpRequest, QueryDict

SEARCH_MAX_LENGTH = 120
_ID_RE = re.compile(r"[0-9]{1,18}")  # ASCII digits only ("²".isdigit() is True); fits a 64-bit id


def text(params: QueryDict, name: str, *, default: str = "", max_length: int = SEARCH_MAX_LENGTH) -> str:
    """The stripped value of `name`, cut to `max_length`; BadRequest when it holds a NUL character."""
    value = params.get(name, default)
    if "\x00" in value:
        raise BadRequest(f'The "{name}" parameter contains a NUL character.')
    return value.strip()[:max_length]


def search_query(request: HttpRequest) -> str:
    """`?q=` of a list page's search bar (includes/search_form.html)."""
    return text(request.GET, "q")


def choice(params: QueryDict, name: str, choices: Iterable[str], default: str = "") -> str:
    """`name` when it is one of `choices`, else `default`."""
    value = params.get(name, default)
    return value if value in set(choices) else default


def object_id(value: str | None) -> int | None:
    """A database id written in ASCII digits (at most 18 of them), else None."""
    if value is None or not _ID_RE.fullmatch(value):
        return None
    return int(value)


def id_param(params: QueryDict, name: str) -> int | None:
    return object_id(params.get(name))

