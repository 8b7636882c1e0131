"""The alert rules page (a section of company settings) and the alerts page.

Everyone in the company sees both; only Administrators change rules and
channels (they decide who is woken at night and where company events are
sent), and only they send a failed delivery again.
"""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Prefetch
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from alerts import delivery as deliveries
from alerts.forms import THRESHOLDS, AlertRuleForm, EmailChannelForm, WebhookChannelForm
from alerts.models import Alert, AlertChannel, AlertRule, ChannelKind, Delivery, DeliveryAttempt
from patchworks_site.tenancy import company_of

ALERTS_PAGE_SIZE = 25


def _require_administrator(request: HttpRequest) -> None:
    """403 unless the user is an Administrator of their company (who changes alerts, see the module's docstring)."""
    if not request.user.is_company_administrator:
        raise PermissionDenied("Only Administrators can change alert rules and channels, or send an alert again.")


def _rule_for(request: HttpRequest, pk: int) -> AlertRule:
    return get_object_or_404(AlertRule.objects.for_company(company_of(request)), pk=pk)


def _channel_for(request: HttpRequest, pk: int) -> AlertChannel:
    return get_object_or_404(AlertChannel.objects.for_company(company_of(request)), pk=pk)


def _alert_for(request: HttpRequest, pk: int) -> Alert:
    return get_object_or_404(Alert.objects.for_company(company_of(request)).select_related("flow", "run", "instance", "rule"), pk=pk)


def _delivery_for(request: HttpRequest, pk: int) -> Delivery:
    return get_object_or_404(Delivery.objects.for_company(company_of(request)), pk=pk)


def rules(request: HttpRequest, new_secret: str | None = None) -> HttpResponse:
    """Channels and rules; each card is its own form and the POST's `section` says which was sent.

    `new_secret`: a webhook's signing secret just made (channel_new_secret), shown this once.
    """
    company = company_of(request)
    forms = {
        "email": EmailChannelForm(company=company, prefix="email"),
        "webhook": WebhookChannelForm(company=company, prefix="webhook"),
        "rule": AlertRuleForm(company=company, prefix="rule"),
    }
    sent = None
    if request.method == "POST" and new_secret is None:
        _require_administrator(request)
        section = request.POST.get("section")
        form_class = {"email": EmailChannelForm, "webhook": WebhookChannelForm}.get(section, AlertRuleForm)
        section = section if section in ("email", "webhook") else "rule"
        sent = forms[section] = form_class(request.POST, company=company, prefix=section)
        if sent.is_valid():
            if section == "webhook":
                channel = sent.save(commit=False)
                new_secret = channel.new_secret()
                channel.save()
                forms[section] = WebhookChannelForm(company=company, prefix=section)
                messages.success(request, f'Webhook "{channel.name}" added. Copy its signing secret now: it is not shown again.')
            else:
                saved = sent.save()
                messages.success(request, f'{"Rule" if section == "rule" else "Email channel"} "{saved}" added.')
                return redirect("alerts:rules")
    context = {
        **{f"{name}_form": form for name, form in forms.items()},
        "rules": AlertRule.objects.for_company(company).prefetch_related("channels"),
        "channels": AlertChannel.objects.for_company(company),
        "new_secret": new_secret,
        "thresholds": THRESHOLDS,
    }
    status = 422 if sent is not None and sent.errors else 200
    return render(request, "alerts/rules.html", context, status=status)


def rule_edit(request: HttpRequest, pk: int) -> HttpResponse:
    rule = _rule_for(request, pk)
    company = company_of(request)
    form = AlertRuleForm(instance=rule, company=company)
    if request.method == "POST":
        _require_administrator(request)
        form = AlertRuleForm(request.POST, instance=rule, company=company)
        if form.is_valid():
            form.save()
            messages.success(request, f'Rule "{rule}" saved.')
            return redirect("alerts:rules")
    return render(request, "alerts/rule_edit.html", {"rule": rule, "form": form}, status=422 if form.errors else 200)


@require_POST
def rule_delete(request: HttpRequest, pk: int) -> HttpResponse:
    rule = _rule_for(request, pk)
    _require_administrator(request)
    rule.delete()
    messages.success(request, f'Rule "{rule}" removed.')
    return redirect("alerts:rules")


@require_POST
def channel_delete(request: HttpRequest, pk: int) -> HttpResponse:
    channel = _channel_for(request, pk)
    _require_administrator(request)
    orphaned = [str(rule) for rule in channel.rules.all() if rule.channels.count() == 1]
    channel.delete()
    note = f" These rules have no channel left and send nothing: {', '.join(orphaned)}." if orphaned else ""
    messages.success(request, f'Channel "{channel.name}" removed.{note}')
    return redirect("alerts:rules")


@require_POST
def channel_new_secret(request: HttpRequest, pk: int) -> HttpResponse:
    """A new signing secret for a webhook (the old one stops verifying at once), shown this once."""
    channel = _channel_for(request, pk)
    _require_administrator(request)
    if channel.kind != ChannelKind.WEBHOOK:
        return redirect("alerts:rules")
    new_secret = channel.new_secret()
    channel.save(update_fields=["secret_ciphertext"])
    messages.success(request, f'Webhook "{channel.name}" has a new signing secret. Copy it now: it is not shown again.')
    return rules(request, new_secret=new_secret)


def alert_list(request: HttpRequest) -> HttpResponse:
    """The company's alerts, newest first, each with its deliveries' status per channel."""
    company = company_of(request)
    alerts = (
        Alert.objects.for_company(company).select_related("flow", "instance")
        .prefetch_related(Prefetch("deliveries", queryset=Delivery.objects.order_by("channel_kind", "channel_name", "id")))
    )
    page = Paginator(alerts, ALERTS_PAGE_SIZE).get_page(request.GET.get("page"))
    context = {"page": page, "has_rules": AlertRule.objects.for_company(company).exists()}
    return render(request, "alerts/list.html", context)


def alert_detail(request: HttpRequest, pk: int) -> HttpResponse:
    alert = _alert_for(request, pk)
    shown = alert.deliveries.prefetch_related(Prefetch("attempt_log", queryset=DeliveryAttempt.objects.order_by("number", "id")))
    return render(request, "alerts/detail.html", {"alert": alert, "deliveries": shown})


@require_POST
def send_again(request: HttpRequest, pk: int) -> HttpResponse:
    delivery = _delivery_for(request, pk)
    _require_administrator(request)
    if deliveries.send_again(delivery):
        messages.success(request, f"Sending to {delivery.channel_name} again.")
    else:
        messages.info(request, f"The delivery to {delivery.channel_name} has not failed; nothing to send again.")
    return redirect("alerts:detail", delivery.alert_id)
