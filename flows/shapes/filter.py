"""Filter shapes: pass on the items that match the rules (all of them, or any).

Config: ``{"match": "all" | "any", "rules": [{"field", "comparison", "value", "unit"}]}``.
`field` is a dotted path in the item. Comparisons compare numbers when both
sides read as numbers, else text; ``in_last`` and ``since_last_success``
compare dates, read in the source instance's date format and time zone (the
instance of the nearest connection shape before the filter; ISO 8601 as a
fallback) against the run's reference time (a retry keeps the original's).
``since_last_success`` lets everything through while the flow has no
successful run yet. An item whose date cannot be read does not match (one
warning per shape says how many).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import datetime, timedelta

from flows import dates
from flows.shapes import MISSING, Context, Stage, value_at

COMPARISONS = (
    "equals", "not_equals", "contains", "greater_than", "less_than", "is_empty", "in_last", "since_last_success",
)
UNITS = {"minutes": 60, "hours": 3600, "days": 86400}
MAX_IN_LAST = 100_000  # of any unit (the rule form's bound); more would overflow a date
MATCHES = ("all", "any")


def rules_of(config: object) -> tuple[str, list[dict], list[str]]:
    """The match mode and rules, and what is wrong with them."""
    config = config if isinstance(config, dict) else {}
    problems = []
    match = config.get("match") or "all"
    if match not in MATCHES:
        problems.append(f'match must be "all" or "any", not "{match}".')
    rules = config.get("rules")
    if not isinstance(rules, list) or not rules:
        problems.append("it has no rules. Add a rule or remove the shape.")
        return match, [], problems
    clean = []
    for number, rule in enumerate(rules, start=1):
        if not isinstance(rule, dict):
            problems.append(f"rule {number} is not a rule.")
            continue
        field = str(rule.get("field") or "").strip()
        comparison = str(rule.get("comparison") or "")
        value = "" if rule.get("value") is None else str(rule.get("value"))
        unit = str(rule.get("unit") or "")
        if not field or any(not part for part in field.split(".")):
            problems.append(f"rule {number}: the field path is empty or has an empty part.")
        if comparison not in COMPARISONS:
            problems.append(f'rule {number}: unknown comparison "{comparison}".')
        if comparison == "in_last":
            amount = _number(value)
            if amount is None or amount <= 0:
                problems.append(f"rule {number}: in_last needs a positive number, not \"{value}\".")
            elif amount > MAX_IN_LAST:
                problems.append(f"rule {number}: in_last may go back at most {MAX_IN_LAST:,} {unit or 'units'}, not {value}.")
            if unit not in UNITS:
                problems.append(f"rule {number}: in_last needs a unit (minutes, hours or days).")
        clean.append({"field": field, "comparison": comparison, "value": value, "unit": unit})
    return match, clean, problems


def earliest(config: object, reference_time: datetime, last_success: datetime | None) -> datetime | None:
    """The earliest moment the filter's date rules accept (None when it has none that bound it)."""
    _, rules, problems = rules_of(config)
    if problems:
        return None
    moments = []
    for rule in rules:
        if rule["comparison"] == "in_last":
            moments.append(reference_time - timedelta(seconds=_number(rule["value"]) * UNITS[rule["unit"]]))
        elif rule["comparison"] == "since_last_success" and last_success is not None:
            moments.append(last_success)
    return min(moments) if moments else None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    try:
        number = float(str(value).strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _text(value: object) -> str:
    if value is None or value is MISSING:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class Filter(Stage):
    RESUMED = (*Stage.RESUMED, "unreadable")

    def __init__(self, shape, position: int, ctx: Context, source=None):
        super().__init__(shape, position, ctx)
        self.source = source  # the instance whose dates the items carry
        self.match, self.rules, self.config_problems = rules_of(shape.config)
        if not self.config_problems:
            # The earliest moment an in_last rule accepts: worked out once, not for every item.
            for rule in self.rules:
                if rule["comparison"] == "in_last":
                    rule["since"] = ctx.reference_time - timedelta(seconds=_number(rule["value"]) * UNITS[rule["unit"]])
        self.unreadable = 0
        self.unreadable_example = ""

    def problems(self) -> list[str]:
        problems = list(self.config_problems)
        if self.source is None and any(r["comparison"] in ("in_last", "since_last_success") for r in self.rules):
            problems.append("it compares dates but no connection shape comes before it to say how they are written.")
        return problems

    def moment(self, value: object) -> datetime | None:
        try:
            return dates.parse(value, self.source.date_format, self.source.time_zone)
        except dates.DateError as exc:
            self.unreadable += 1
            self.unreadable_example = self.unreadable_example or str(exc)
            return None

    def test(self, rule: dict, item: object) -> bool:
        found = value_at(item, rule["field"])
        comparison, expected = rule["comparison"], rule["value"]
        if comparison == "is_empty":
            return found is MISSING or found in (None, "", [], {})
        if comparison == "in_last":
            if found is MISSING or found is None:
                return False
            moment = self.moment(found)
            since = rule.get("since") or self.ctx.reference_time - timedelta(
                seconds=_number(expected) * UNITS[rule["unit"]])
            return moment is not None and moment >= since
        if comparison == "since_last_success":
            if self.ctx.last_success is None:
                return True
            if found is MISSING or found is None:
                return False
            moment = self.moment(found)
            return moment is not None and moment >= self.ctx.last_success
        if comparison == "contains":
            if isinstance(found, list):
                return any(_text(element) == expected for element in found)
            return found is not MISSING and expected in _text(found)
        if found is MISSING:
            return comparison == "not_equals"
        left, right = _number(found), _number(expected)
        numeric = left is not None and right is not None
        if comparison == "equals":
            return left == right if numeric else _text(found) == expected
        if comparison == "not_equals":
            return left != right if numeric else _text(found) != expected
        if comparison == "greater_than":
            return left > right if numeric else _text(found) > expected
        if comparison == "less_than":
            return left < right if numeric else _text(found) < expected
        return False

    def matches(self, item: object) -> bool:
        results = (self.test(rule, item) for rule in self.rules)
        return all(results) if self.match == "all" else any(results)

    def process(self, page: list) -> Iterator[list]:
        self.count_in(page)
        out = [item for item in page if self.matches(item)]
        if out:
            self.count_out(out)
            yield out

    def finish(self) -> None:
        self.open()
        if self.unreadable:
            self.warn(
                f"{self.unreadable} date value(s) could not be read and did not match, e.g. {self.unreadable_example}."
            )
