"""Reading uploaded YAML and JSON documents (manifests, OpenAPI documents) within limits.

The YAML composers recurse once per nesting level (libyaml's deeply enough to
overflow the C stack) and aliases can expand a 2 KB file into billions of
nodes, so every limit is checked on the event stream first: the parser is a
state machine that does not recurse, and its events cost little. Only a
document within the limits is composed and constructed. JSON gets the same
depth check with a scan of its brackets before `json.loads`.

The loaders also keep YAML dates as text (a manifest's `version: 2024-07-01`
is text, and `2024-13-45` must not crash the constructor) and keep integers
longer than `MAX_INT_DIGITS` digits as their text, so the schema can say which
field is out of range instead of Python refusing to convert them.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any

import yaml
from django.conf import settings

MAX_INT_DIGITS = 30
# The default time budget of one import; settings.UPLOAD_TIME_BUDGET overrides it.
TIME_BUDGET_SECONDS = 10.0
_CHECK_EVERY = 1024  # events between two looks at the clock

_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class DocumentError(ValueError):
    """The document cannot be read; `problem` is the reason and `line`/`column` (1-based) where, when known."""

    def __init__(self, problem: str, line: int | None = None, column: int | None = None, *, syntax: bool = False):
        self.problem = problem
        self.line = line
        self.column = column
        self.syntax = syntax  # the text is not YAML/JSON at all (or uses what the format forbids)
        super().__init__(self.describe())

    def where(self) -> str:
        return f" at line {self.line}, column {self.column}" if self.line else ""

    def describe(self) -> str:
        if self.syntax:
            return f"not valid YAML{self.where()}" + (f" ({self.problem})" if self.problem else "")
        return f"{self.problem}{self.where()}"


@dataclass(frozen=True)
class Limits:
    """What an uploaded document may be: bytes, nesting depth, nodes (aliases expanded), aliases at all."""

    max_bytes: int
    max_depth: int
    max_nodes: int
    allow_aliases: bool
    what: str = "document"  # for messages: "aliases are not allowed in a manifest"


class Deadline:
    """A time budget shared by the stages of one import; `check()` raises DocumentError once it is spent."""

    def __init__(self, seconds: float | None = None):
        self.seconds = float(seconds if seconds is not None else getattr(settings, "UPLOAD_TIME_BUDGET", TIME_BUDGET_SECONDS))
        self.ends = time.monotonic() + self.seconds

    def check(self) -> None:
        if time.monotonic() > self.ends:
            raise DocumentError(
                f"reading it took longer than the {self.seconds:g} s allowed; upload a smaller document"
            )


def _text_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
    if len(node.value) > MAX_INT_DIGITS and sum(ch.isdigit() for ch in node.value) > MAX_INT_DIGITS:
        return node.value  # a number nobody means; the schema reports it by path
    return yaml.SafeLoader.construct_yaml_int(loader, node)


def _text_timestamp(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> str:
    return str(node.value)


class DocumentLoader(_BaseLoader):  # type: ignore[misc, valid-type]
    """SafeLoader (libyaml when available) that keeps dates and huge integers as text."""


DocumentLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in _BaseLoader.yaml_implicit_resolvers.items()
}
DocumentLoader.add_constructor("tag:yaml.org,2002:int", _text_int)
DocumentLoader.add_constructor("tag:yaml.org,2002:timestamp", _text_timestamp)


def _mark(event: Any) -> tuple[int | None, int | None]:
    mark = getattr(event, "start_mark", None)
    return (mark.line + 1, mark.column + 1) if mark is not None else (None, None)


def check_yaml_events(text: str, limits: Limits, deadline: Deadline) -> None:
    """Walk the YAML event stream once: nesting depth, node count with aliases expanded, aliases at all.

    Raises DocumentError naming the first position over a limit, or the
    position of a syntax error.
    """
    depth = 0
    nodes = 0
    anchor_sizes: dict[str, int] = {}
    open_collections: list[tuple[str | None, int]] = []
    try:
        for count, event in enumerate(yaml.parse(text, Loader=DocumentLoader)):
            if count % _CHECK_EVERY == 0:
                deadline.check()
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                nodes += 1
                if depth > limits.max_depth:
                    raise DocumentError(f"nested more than {limits.max_depth} levels deep", *_mark(event))
                open_collections.append((event.anchor, nodes))
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
                anchor, started = open_collections.pop()
                if anchor:
                    anchor_sizes[anchor] = nodes - started + 1
            elif isinstance(event, yaml.ScalarEvent):
                nodes += 1
                if event.anchor:
                    anchor_sizes[event.anchor] = 1
            elif isinstance(event, yaml.AliasEvent):
                if not limits.allow_aliases:
                    raise DocumentError(f"aliases are not allowed in a {limits.what}", *_mark(event), syntax=True)
                if event.anchor not in anchor_sizes:
                    if any(anchor == event.anchor for anchor, _ in open_collections):
                        raise DocumentError("an alias refers to the collection it is in", *_mark(event))
                    raise DocumentError(f'the alias "*{event.anchor}" has no anchor before it', *_mark(event))
                nodes += anchor_sizes[event.anchor]
            if nodes > limits.max_nodes:
                raise DocumentError(
                    f"it has more than {limits.max_nodes:,} values (aliases counted where they are used)", *_mark(event)
                )
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise DocumentError(
            exc.problem or "", mark.line + 1 if mark else None, mark.column + 1 if mark else None, syntax=True
        ) from None
    except yaml.YAMLError as exc:
        raise DocumentError(str(exc)[:200], syntax=True) from None


def load_yaml(text: str, limits: Limits, deadline: Deadline) -> Any:
    """The YAML text as data, after the event stream passed `limits`; DocumentError otherwise."""
    check_yaml_events(text, limits, deadline)
    try:
        data = yaml.load(text, Loader=DocumentLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        raise DocumentError(
            exc.problem or "", mark.line + 1 if mark else None, mark.column + 1 if mark else None, syntax=True
        ) from None
    except (yaml.YAMLError, ValueError, TypeError, OverflowError) as exc:
        # Explicit tags with unreadable values (`!!int abc`, `!!binary %`) end up here.
        raise DocumentError(f"a value could not be read: {str(exc)[:120]}", syntax=True) from None
    deadline.check()
    return data


_JSON_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def check_json_depth(text: str, max_depth: int) -> None:
    """DocumentError when brackets outside strings nest deeper than `max_depth` (before any recursion)."""
    depth = 0
    for match in _JSON_TOKENS.finditer(text):
        char = text[match.start()]
        if char in "[{":
            depth += 1
            if depth > max_depth:
                line = text.count("\n", 0, match.start()) + 1
                column = match.start() - (text.rfind("\n", 0, match.start()) + 1) + 1
                raise DocumentError(f"nested more than {max_depth} levels deep", line, column)
        elif char in "]}":
            depth -= 1


def _json_int(text: str) -> int | str:
    return int(text) if len(text.lstrip("-")) <= MAX_INT_DIGITS else text


def load_json(text: str, limits: Limits, deadline: Deadline) -> Any:
    """The JSON text as data (ValueError when it is not JSON), after a depth check; huge integers stay text."""
    check_json_depth(text, limits.max_depth)
    data = json.loads(text, parse_int=_json_int)
    deadline.check()
    return data
