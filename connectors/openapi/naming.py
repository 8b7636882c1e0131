"""Names for what the importer makes: keys, labels, entity names, clipped text."""

from __future__ import annotations

import re
from typing import Any

# The manifest schema's length limits (connectors.schema).
NAME_MAX, DESCRIPTION_MAX, VERSION_MAX, ENTITY_MAX, LABEL_MAX, DEFAULT_MAX = 120, 5000, 40, 80, 120, 1024


def clip(text: str, limit: int) -> str:
    text = " ".join(str(text).split()) if limit <= NAME_MAX else str(text).strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def split_words(text: str) -> list[str]:
    """`getStoreInformation`, `store_information` and `store-information` all give [get, Store, Information]."""
    text = text.replace("OAuth", "Oauth")
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", text)
    text = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1 \2", text)
    return [w for w in re.split(r"[^A-Za-z0-9]+", text) if w]


def slug(text: str, fallback: str = "item") -> str:
    """A manifest key (`[a-z][a-z0-9_]*`, at most 64 characters) made from `text`."""
    key = "_".join(w.lower() for w in split_words(text))[:64].strip("_")
    if not key:
        return fallback
    if not key[0].isalpha():
        key = f"{fallback}_{key}"[:64].rstrip("_")
    return key


def unique(key: str, taken: set[str]) -> str:
    candidate, n = key, 2
    while candidate in taken:
        suffix = f"_{n}"
        candidate = key[: 64 - len(suffix)].rstrip("_") + suffix
        n += 1
    taken.add(candidate)
    return candidate


def humanise(name: str) -> str:
    words = split_words(name)
    if not words:
        return name
    text = " ".join(w if w.isupper() and len(w) > 1 else w.lower() for w in words)
    return text[0].upper() + text[1:]


def as_text(value: Any) -> str | None:
    """A scalar default as manifest text (booleans the JSON way), None for anything else."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    return None


def singular(word: str) -> str:
    lower = word.lower()
    if lower.endswith("ies") and len(word) > 4:
        return word[:-3] + ("Y" if word[-3].isupper() else "y")
    if re.search(r"(sses|shes|ches|xes|zes)$", lower):
        return word[:-2]
    if looks_plural(word):
        return word[:-1]
    return word


def looks_plural(word: str) -> bool:
    lower = word.lower()
    return len(lower) > 2 and lower.endswith("s") and not re.search(r"(ss|us|is)$", lower)


def entity_name(text: str) -> str:
    """`webhooks-event-types` -> `WebhookEventType`, `Order Shipping Addresses` -> `OrderShippingAddress`."""
    words = [singular(w) for w in split_words(text)]
    return clip("".join(w[0].upper() + w[1:] for w in words), ENTITY_MAX)

