"""How long something took, in words a person reads at a glance: "0.4 s", "42 s", "3 min 5 s", "2 h 3 min"."""

from datetime import timedelta

from django import template
from django.utils import timezone

register = template.Library()


@register.filter
def natural_duration(value: timedelta | float | None) -> str:
    if value is None or value == "":
        return ""
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    seconds = max(seconds, 0.0)
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{int(seconds)} s"
    minutes, rest = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


@register.filter
def since(moment) -> str:
    """How long ago `moment` was, as natural_duration says it ("42 s", "3 min 5 s")."""
    return natural_duration(timezone.now() - moment) if moment else ""


@register.filter
def natural_ms(value: int | float | None) -> str:
    """Milliseconds as natural_duration says them, below a second in ms ("340 ms", "1 min 2 s")."""
    if value is None or value == "":
        return ""
    milliseconds = max(float(value), 0.0)
    if milliseconds < 1000:
        return f"{int(milliseconds)} ms"
    return natural_duration(milliseconds / 1000)
