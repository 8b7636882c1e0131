"""`{% connector_cards page.object_list %}`: the connector cards of the manage connectors page.

The page shows up to 20 cards; rendered through the template engine (the card,
the icon include, the instance table include) they cost more than the instance
rows they hold. Built here, with the same markup, they cost a fraction of that.
Every value is escaped with `esc`; the literal markup is ours. Nothing is cached
across requests: relative times and the user's role are read on every call.
"""

from __future__ import annotations

from django import template
from django.template.defaultfilters import date as date_filter
from django.utils import timezone
from django.utils.safestring import SafeString, mark_safe

from instances.templatetags.instance_rows import _row, esc
from patchworks_site.templatetags.pk_urls import pk_url

register = template.Library()

_TABLE_HEAD = (
    '\n<div class="table-responsive">'
    '\n  <table class="table table-sm table-hover mb-0 table-instances">'
    '\n    <thead class="table-light"><tr><th scope="col" class="ps-3">Instance</th><th scope="col">Authentication</th>'
    '<th scope="col">Last run</th><th scope="col">Rate limit</th><th scope="col">Connection pool</th>'
    '<th scope="col" class="text-end pe-3"><span class="visually-hidden">Settings</span></th></tr></thead>'
    '\n    <tbody>'
)
_TABLE_TAIL = '\n    </tbody>\n  </table>\n</div>'


def _icon(connector) -> str:
    """includes/connector_icon.html."""
    if connector.icon_content_type:
        return (f'<img class="connector-icon connector-icon-img" src="{esc(pk_url("connectors:icon", connector.pk))}" '
                'alt="" width="44" height="44">')
    return (f'<span class="connector-icon connector-{esc(connector.colour)}" aria-hidden="true">'
            f'{esc(connector.initials)}</span>')


def _modified_info(connector, installation) -> str:
    changed_by = ""
    if connector.updated_by:
        who = connector.updated_by.get_full_name() or connector.updated_by.username
        changed_by = f" · last changed by {esc(who)}"
    when = date_filter(timezone.localtime(connector.updated_at), "j M Y, H:i")
    return ('\n          <div class="text-warning-emphasis" data-testid="modified-info">'
            '<i class="bi bi-pencil-square"></i> '
            f'modified from version {esc(installation.listing_version.version)}{changed_by} on {esc(when)}</div>')


def _actions(connector, installation, user) -> str:
    parts = []
    if installation and installation.update_available:
        copy = connector.alongside_copy
        if copy:
            parts.append(
                f'<span class="small text-body-secondary" data-testid="alongside-note"><i class="bi bi-layers"></i> '
                f'version {esc(installation.latest_version.version)} is installed alongside as '
                f'<a href="{esc(pk_url("connectors:detail", copy.pk))}">{esc(copy.name)}</a></span>')
        elif user.can_manage_connectors:
            parts.append(
                f'<a class="btn btn-sm btn-warning" href="{esc(pk_url("marketplace:update", connector.pk))}" '
                'data-testid="update-available"><i class="bi bi-arrow-up-circle"></i> update available</a>')
        else:
            parts.append(
                '<span class="small text-body-secondary" data-testid="update-available">'
                '<i class="bi bi-info-circle"></i> '
                f'update available: version {esc(installation.latest_version.version)} · an Administrator or Manager '
                'applies updates</span>')
    detail_url = esc(pk_url("connectors:detail", connector.pk))
    if not connector.ready:
        parts.append(f'<a class="badge text-bg-warning text-decoration-none" href="{detail_url}" '
                     'data-testid="not-ready">'
                     'draft: needs an authentication method and an endpoint</a>')
    elif user.can_manage_instances:
        parts.append(f'<a class="btn btn-sm btn-outline-primary" href="{esc(pk_url("instances:new", connector.pk))}">'
                     '<i class="bi bi-plus-lg"></i> add new instance</a>')
    parts.append(f'<a class="btn btn-sm btn-outline-secondary" href="{detail_url}" title="Connector settings" '
                 f'aria-label="Settings for connector {esc(connector.name)}"><i class="bi bi-gear"></i></a>')
    return "\n      ".join(parts)


def _instances(connector, user, csrf: str, highlighted_instance, tz) -> str:
    pk = int(connector.pk)
    shown = connector.first_instances
    if not shown:
        hint = (f' Use <strong>add new instance</strong> to add your credentials for {esc(connector.name)}.'
                if user.can_manage_instances else "")
        return f'\n    <div class="card-body py-3 small text-body-secondary">No instances yet.{hint}</div>'
    can_manage = user.can_manage_instances
    form_id = f"check-form-{pk}"
    form = (f'<form id="{form_id}" method="post" hidden>{csrf}<input type="hidden" name="next" value="manage"></form>'
            if can_manage else "")
    rows = "".join(_row(instance, form_id, can_manage, instance.pk == highlighted_instance, tz) for instance in shown)
    footer = ""
    if connector.instance_count > len(shown):
        url = esc(pk_url("connectors:instances", pk))
        footer = (f'\n      <div class="card-footer bg-body small">\n        <a href="{url}" hx-get="{url}" '
                  f'hx-target="#instances-of-{pk}" hx-swap="outerHTML" data-testid="show-all-instances">'
                  f'show all {int(connector.instance_count)} instances<span class="visually-hidden"> of '
                  f'{esc(connector.name)}</span></a>\n      </div>')
    return (f'\n    <div id="instances-of-{pk}">\n      {form}{_TABLE_HEAD}{rows}{_TABLE_TAIL}{footer}\n    </div>')


def _card(connector, user, csrf: str, highlight: dict, tz) -> str:
    pk = int(connector.pk)
    installation = getattr(connector, "installation", None)
    kind = ('<span class="badge bg-info-subtle border border-info-subtle text-info-emphasis">prebuilt</span>'
            if installation else '<span class="badge bg-secondary-subtle border text-secondary-emphasis">custom</span>')
    version_name = f" · {esc(connector.version_name)}" if connector.version_name else ""
    modified = _modified_info(connector, installation) if installation and installation.is_modified else ""
    return (
        f'\n  <section class="card mb-3 connector-card {"highlight" if highlight.get("connector") == pk else ""}" '
        f'id="connector-{pk}" aria-labelledby="connector-{pk}-name" data-testid="connector">'
        '\n    <div class="card-header bg-body d-flex flex-wrap align-items-center gap-3">'
        '\n      <div class="d-flex align-items-center gap-3 flex-grow-1" style="min-width:16rem;flex-basis:24rem">'
        f'\n      {_icon(connector)}'
        '\n      <div>'
        f'\n        <h2 class="h5 mb-0" id="connector-{pk}-name">{esc(connector.name)}</h2>'
        '\n        <div class="small text-body-secondary">'
        f'\n          <span class="badge text-bg-light border">{esc(connector.system_type)}</span>'
        f'\n          {kind}'
        f'\n          version {esc(connector.version)}{version_name}{modified}'
        '\n        </div>\n      </div>\n      </div>'
        '\n      <div class="d-flex flex-wrap align-items-center gap-2">'
        f'\n      {_actions(connector, installation, user)}'
        '\n      </div>\n    </div>'
        f'{_instances(connector, user, csrf, highlight.get("instance"), tz)}'
        '\n  </section>'
    )


def _csrf_input(context) -> str:
    """What `{% csrf_token %}` renders."""
    token = context.get("csrf_token")
    if not token or str(token) == "NOTPROVIDED":
        return ""
    return f'<input type="hidden" name="csrfmiddlewaretoken" value="{esc(token)}">'


@register.simple_tag(takes_context=True)
def connector_cards(context, connectors) -> SafeString:
    """One <section class="card"> per connector of the page, for the signed-in user."""
    user = context["user"]
    csrf = _csrf_input(context) if user.can_manage_instances else ""
    highlight = context.get("highlight") or {}
    tz = timezone.get_current_timezone()
    return mark_safe("".join(_card(connector, user, csrf, highlight, tz) for connector in connectors))
