"""Live credential checks, recorded (redacted) every time."""

from __future__ import annotations

from connectors.models import AuthMethod, Connector
from instances import signals
from instances.models import CredentialCheck, Instance
from instances.outbound import CheckResult, InstanceClient
from instances.status import note_status_change, status_text
from patchworks_site import metrics


def check_and_record(
    *,
    connector: Connector,
    auth_method: AuthMethod,
    values: dict[str, str],
    secrets: dict[str, str],
    instance: Instance | None = None,
    user=None,
    approved_destinations: list[str] | None = None,
) -> tuple[CheckResult, CredentialCheck]:
    """Run the auth method's test request with these credentials and store the redacted exchange.

    `approved_destinations`: where stored secrets may go (None for credentials the
    user has just entered, or whose new destination the caller has approved).
    """
    client = InstanceClient(
        connector, auth_method, values, secrets, use_token_cache=False, instance=instance,
        approved_destinations=approved_destinations,
    )
    result = client.check_credentials()
    metrics.count_check("ok" if result.ok else "error" if result.exchange.error else "failed")
    record = client.record_of(result.exchange, result.message)
    # What the user is shown is what was stored: redacted (client.check_credentials
    # already redacts; this also covers tokens obtained during the check).
    result.message = record["message"]
    check = CredentialCheck.objects.create(
        company=connector.company,
        connector=connector,
        instance=instance,
        auth_method=auth_method,
        created_by=user if getattr(user, "pk", None) else None,
        ok=result.ok,
        message=client.redact(record.pop("message"), limit=300),
        **record,
    )
    if instance is not None:
        note_check(instance, check)
    return result, check


def note_check(instance: Instance, check: CredentialCheck) -> None:
    """Remember the latest check on the instance (shown on the manage connectors page)."""
    if check.instance_id != instance.pk:
        check.instance = instance
        check.save(update_fields=["instance"])
    previous = Instance.objects.filter(pk=instance.pk).values("last_check_ok", "reauth_reason").first() or {}
    reauth = previous.get("reauth_reason", "")
    before, after = status_text(previous.get("last_check_ok"), reauth), status_text(check.ok, reauth)
    note_status_change(instance, before, after, check.message)
    Instance.objects.filter(pk=instance.pk).update(
        last_checked_at=check.created_at, last_check_ok=check.ok, last_check_message=check.message[:300]
    )
    instance.last_checked_at, instance.last_check_ok, instance.last_check_message = (
        check.created_at, check.ok, check.message[:300],
    )


def recheck(instance: Instance, user=None) -> tuple[CheckResult, CredentialCheck]:
    """Check the stored credentials again (after noting whether their destination is still approved).

    Scheduled or a user's **check now**, the result is announced (signals.credentials_rechecked): a
    credential alert hears of a failure, and of the check that passes again, however it was found.
    """
    instance.refresh_reauth_status()
    result, check = check_and_record(
        connector=instance.connector,
        auth_method=instance.auth_method,
        values=instance.values,
        secrets=instance.get_secrets(),
        instance=instance,
        user=user,
        approved_destinations=instance.credentials_approved_for,
    )
    signals.announce_rechecked(instance.pk, ok=result.ok, reauth_needed=instance.needs_reauth)
    return result, check


