"""Secret placeholders in the parameters a User sets on a connection shape.

A connector's secrets (its secret variables, and what OAuth obtains or signs
with: tokens, token secrets, client and consumer secrets, passwords) are sent
only where its authentication method puts them, and the endpoint definitions
(fixed parameters, defaults of declared parameters) may use them too: both are
defined by whoever may modify the connector. A value typed into a shape's
parameter is chosen by any User of the flow, so it may use the run's
placeholders and the public variables, never a secret one: otherwise a User
could aim a stored secret at a parameter the API echoes back into flow data.
"""

from __future__ import annotations

from collections.abc import Iterable

from connectors.manifest import PLACEHOLDER_RE
from connectors.models import Variable

# Secret whatever the connector's variables say: what OAuth obtains, and what it or basic auth signs with.
ALWAYS_SECRET = frozenset({
    "access_token", "refresh_token", "id_token", "code_verifier",
    "client_secret", "consumer_secret", "token_secret", "password",
})


def secret_keys(connector_id: int | None, stored: Iterable[str] = ()) -> frozenset[str]:
    """The placeholders that stand for a secret of the connector (plus `stored`: an instance's stored secret keys)."""
    keys = Variable.objects.filter(connector_id=connector_id, secret=True).values_list("key", flat=True)
    return ALWAYS_SECRET | frozenset(keys) | frozenset(stored)


def secrets_used(value: str, secrets: frozenset[str]) -> list[str]:
    """The secret placeholders in `value`, sorted."""
    return sorted({name.strip() for name in PLACEHOLDER_RE.findall(value)} & secrets)


def refusal(location: str, name: str, used: list[str]) -> str:
    """Why a User's parameter value may not be sent (one sentence naming the parameter and the secrets)."""
    placeholders = ", ".join(f"{{{{{key}}}}}" for key in used)
    what = "it is a secret" if len(used) == 1 else "they are secrets"
    return (f"The {location or 'query'} parameter {name} may not use {placeholders}: {what} of the connector; "
            "secrets are sent only where its authentication method puts them.")
