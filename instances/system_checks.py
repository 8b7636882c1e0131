"""System checks of the credential keys: a malformed CREDENTIAL_KEYS fails `manage.py check` (run by serve-prod before
it starts anything), not the first credential saved or read."""

from __future__ import annotations

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from instances import crypto


@checks.register(checks.Tags.security)
def credential_keys(app_configs, **kwargs) -> list[checks.CheckMessage]:
    if not settings.CREDENTIAL_KEYS:
        # Allowed only with DEBUG on (the settings refuse to load otherwise); saving a credential then says so.
        return []
    try:
        crypto.parse_keys(settings.CREDENTIAL_KEYS)
    except ImproperlyConfigured as exc:
        return [checks.Error(str(exc), hint='Each key is "key-id:" and 32 random bytes in base64.', id="instances.E001")]
    return []
