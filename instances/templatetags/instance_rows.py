"""`{% instance_rows instances connector.pk %}`: the rows of instances/_instance_table.html.

The manage connectors page shows 100 instance rows; rendered through the
template engine they were a third of the page's time, built here they cost a
few milliseconds. The markup is the table's (the authentication status is
includes/auth_status.html's). Every value is escaped with `esc` (what Django's
escape does, without its lazy-string wrapper); the literal markup is ours.
"""

from __future__ import annotations

from html import escape

from django import template
from django.contrib.humanize.templatetags.humanize import naturaltime
from django.utils import timezone
from django.utils.dateformat import format as date_format
from django.utils.dates import MONTHS_3
from django.utils.safestring import SafeString, mark_safe

from patchworks_site.templatetags.pk_urls import pk_url

register = template.Library()


def esc(value) -> str:
    return escape(str(value))


def exact_time(local) -> str:
    """`date_format(local, "j M Y, H:i:s T")`, built directly when the time is in UTC (no DST: "T" is always UTC)."""
    if getattr(local.tzinfo, "key", None) != "UTC":
        return date_format(local, "j M Y, H:i:s T")
    return (f"{local.day} {MONTHS_3[local.month].title()} {local.year:04d}, "
            f"{local.hour:02d}:{local.minute:02d}:{local.second:02d} UTC")


def _time(value, tz, title: bool = False) -> str:
    """<time> with the ISO date, the relative time as text and (optionally) the exact time as its title.

    `tz` is the current time zone, looked up once for all the rows.
    """
    local = value.astimezone(tz) if timezone.is_aware(value) else value
    exact = f' title="{esc(exact_time(local))}"' if title else ""
    # isoformat() is what the "c" date format returns, without building a DateFormat.
    return f'<time datetime="{esc(local.isoformat())}"{exact}>{esc(naturaltime(value))}</time>'


def _clock(value, tz) -> str:
    """<time> with the time of day (and zone) as text and the exact time as its title."""
    local = value.astimezone(tz)
    return (f'<time datetime="{esc(local.isoformat())}" title="{esc(exact_time(local))}">'
            f'{local:%H:%M:%S} {esc(local.tzname() or "")}</time>')


def _auth_status(instance, settings_url: str, can_manage: bool, tz) -> str:
    if instance.reauth_reason:
        status = (f'<span class="badge text-bg-warning" data-testid="auth-status" title="{esc(instance.reauth_reason)}">'
                  '<i class="bi bi-exclamation-triangle"></i> Re-authentication needed</span>')
        if can_manage:
            status += (f' <a class="btn btn-sm btn-outline-warning py-0" href="{esc(settings_url)}?tab=authentication" '
                       'data-testid="reconnect-link">reconnect</a>')
    elif instance.last_check_ok is None:
        status = '<span class="badge text-bg-secondary" data-testid="auth-status">Not checked</span>'
    elif instance.last_check_ok:
        status = ('<span class="badge text-bg-success" data-testid="auth-status"><i class="bi bi-check-circle"></i> '
                  'Authenticated</span>')
    else:
        status = (f'<span class="badge text-bg-danger" data-testid="auth-status" title="{esc(instance.last_check_message)}">'
                  '<i class="bi bi-x-circle"></i> Failed</span>')
    if instance.last_checked_at:
        status += ('\n<span class="small text-body-secondary ms-1" data-testid="last-checked">checked '
                   f'{_time(instance.last_checked_at, tz)}</span>')
    return status


def _row(instance, form_id: str, can_manage: bool, highlighted: bool, tz) -> str:
    settings_url = esc(pk_url("instances:settings", instance.pk))
    name = esc(instance.name)
    last_run = (_time(instance.last_used_by_run_at, tz, title=True) if instance.last_used_by_run_at
                else '<span class="text-body-secondary">never</span>')
    shared = (f'<div class="small text-body-secondary" data-testid="shared-rate-limit" title="Shared rate limit">'
              f'<i class="bi bi-share"></i> shared: {esc(instance.rate_limit_group)}</div>'
              if instance.rate_limit_group else "")
    paused_until = getattr(instance, "rate_limit_paused_until", None)
    paused = (f'<div class="small text-warning-emphasis" data-testid="rate-limit-paused">'
              f'<i class="bi bi-pause-circle" aria-hidden="true"></i> <a class="link-warning" href="{settings_url}" '
              f'title="The API answered 429 Too Many Requests">paused by the API until {_clock(paused_until, tz)}</a></div>'
              if paused_until else "")
    pool = instance.connection_pool
    pool_cell = (f'{esc(pool.name)} <span class="text-body-secondary small">({esc(pool.limit)} concurrent)</span>'
                 if pool else '<span class="text-body-secondary">—</span>')
    check = (f'<button class="btn btn-sm btn-outline-secondary" type="submit" form="{esc(form_id)}" '
             f'formaction="{esc(pk_url("instances:check", instance.pk))}" data-testid="check-now">'
             '<i class="bi bi-arrow-repeat" aria-hidden="true"></i> check now'
             f'<span class="visually-hidden"> the credentials of {name}</span></button>' if can_manage else "")
    return (
        f'\n      <tr class="instance-row {"highlight" if highlighted else ""}" id="instance-{int(instance.pk)}" '
        'data-testid="instance">'
        f'\n        <td class="ps-3 fw-medium">{name}</td>'
        f'\n        <td>{_auth_status(instance, settings_url, can_manage, tz)}</td>'
        f'\n        <td data-testid="last-run">{last_run}</td>'
        f'\n        <td>{esc(instance.rate_limit_display)}{shared}{paused}</td>'
        f'\n        <td>{pool_cell}</td>'
        f'\n        <td class="text-end pe-3 text-nowrap">{check}<a class="btn btn-sm btn-link" href="{settings_url}" '
        f'title="Instance settings" aria-label="Settings for instance {name}"><i class="bi bi-gear"></i></a></td>'
        '\n      </tr>'
    )


@register.simple_tag(takes_context=True)
def instance_rows(context, instances, connector_pk: int) -> SafeString:
    """The <tr>s of `instances` for the signed-in user; "check now" submits the table's form."""
    form_id = f"check-form-{int(connector_pk)}"
    can_manage = context["user"].can_manage_instances
    highlight = (context.get("highlight") or {}).get("instance")
    tz = timezone.get_current_timezone()
    return mark_safe("".join(_row(instance, form_id, can_manage, instance.pk == highlight, tz) for instance in instances))
