from __future__ import annotations

import functools
import zoneinfo
from datetime import datetime
from urllib.parse import urlencode

from django.contrib import messages
from django.core import signing
from django.db import IntegrityError, transaction
from django.db.models import ProtectedError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseClientRedirect

from connectors.manifest import date_format_error, is_time_zone
from connectors.models import Connector
from instances import checks, oauth, rechecks
from instances.destinations import describe
from instances.forms import (
    AuthMethodForm,
    CheckScheduleForm,
    CredentialsForm,
    DetailsForm,
    NameForm,
    SettingsForm,
    earlier_steps,
)
from instances.models import CheckSchedule, CredentialCheck, Instance, OAuthAuthorization, destination_changed_message
from instances.outbound import limits
from patchworks_site import audit, params
from patchworks_site.models import Company
from patchworks_site.tenancy import company_of, require

WIZARD_SALT = "instances.new-instance-wizard"
WIZARD_MAX_AGE = 60 * 60  # an abandoned wizard's state expires after an hour
STEPS = ["name", "settings", "auth", "credentials"]
STEP_TITLES = {"name": "Name", "settings": "Settings", "auth": "Authentication method", "credentials": "Credentials"}
CHECK_HISTORY = 20


def _get_instance_for_user(request: HttpRequest, pk: int) -> tuple[Company, Instance]:
    company = company_of(request)
    instance = get_object_or_404(
        Instance.objects.for_company(company).select_related("connector", "auth_method", "connection_pool"),
        pk=pk,
    )
    # The company is already loaded: the forms' lookups (pools, shared rate limits) reuse it.
    instance.company = company
    if instance.connector.company_id == company.pk:
        instance.connector.company = company
    return company, instance


@functools.cache
def _time_zones() -> tuple[str, ...]:
    """The IANA time zones, sorted: read from disk and sorted once per process, not per request."""
    return tuple(sorted(zoneinfo.available_timezones()))


def _manage_url(instance: Instance) -> str:
    return f"{reverse('connectors:manage')}?highlight=instance-{instance.pk}#instance-{instance.pk}"


def _redirect(request: HttpRequest, url: str) -> HttpResponse:
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)


# --- the new instance wizard ----------------------------------------------------


class WizardStateError(Exception):
    pass


def _load_state(raw: str, connector: Connector) -> dict:
    if not raw:
        return {"connector": connector.pk}
    try:
        state = signing.loads(raw, salt=WIZARD_SALT, max_age=WIZARD_MAX_AGE)
    except signing.SignatureExpired:
        raise WizardStateError("This wizard was left open too long and has expired. Please start again.") from None
    except signing.BadSignature:
        raise WizardStateError("The wizard's saved progress was changed or damaged. Please start again.") from None
    if not isinstance(state, dict) or state.get("connector") != connector.pk:
        raise WizardStateError("The wizard's saved progress belongs to another connector. Please start again.")
    return state


def _dump_state(state: dict) -> str:
    return signing.dumps(state, salt=WIZARD_SALT, compress=True)


def _steps_for(connector: Connector) -> list[str]:
    methods = list(connector.auth_methods.all())
    return [s for s in STEPS if s != "auth" or len(methods) > 1]


def _step_url(connector: Connector, step: str, state: dict) -> str:
    query = urlencode({"step": step, "state": _dump_state(state)})
    return f"{reverse('instances:new', args=[connector.pk])}?{query}"


def _chosen_method(connector: Connector, state: dict):
    methods = list(connector.auth_methods.all())
    if len(methods) == 1:
        return methods[0]
    return next((m for m in methods if m.pk == state.get("auth_method")), None)


def _wizard_forms(connector: Connector, step: str, state: dict, data=None, request: HttpRequest | None = None):
    if step == "name":
        return NameForm(data, connector=connector, initial={"name": state.get("name", "")})
    if step == "settings":
        initial = SettingsForm.initial_for(connector) | {k: v for k, v in state.get("settings", {}).items() if v is not None}
        return SettingsForm(data, connector=connector, initial=initial)
    if step == "auth":
        return AuthMethodForm(data, connector=connector, initial={"auth_method": state.get("auth_method")})
    method = _chosen_method(connector, state)
    return CredentialsForm(
        data, connector=connector, auth_method=method, stored_values=state.get("values", {}),
        request=request,
    )


def _first_missing_step(connector: Connector, state: dict) -> str | None:
    """The earliest step whose data the state lacks (a URL can't skip ahead)."""
    if not state.get("name"):
        return "name"
    if not state.get("settings"):
        return "settings"
    if _chosen_method(connector, state) is None:
        return "auth"
    return None


def _render_wizard(request, connector, step, state, form, *, check=None, error="", status=200, push_url=None):
    steps = _steps_for(connector)
    index = steps.index(step)
    context = {
        "connector": connector,
        "step": step,
        "steps": [(s, STEP_TITLES[s]) for s in steps],
        "step_number": index + 1,
        "form": form,
        "state": _dump_state(state),
        "back_url": _step_url(connector, steps[index - 1], state) if index else None,
        "method": _chosen_method(connector, state) if step == "credentials" else None,
        "single_method": len(steps) == 3,
        "check": check,
        "error": error,
        "time_zones": _time_zones() if step == "settings" else [],
        "action_url": reverse("instances:new", args=[connector.pk]),
        "redirect_uri": oauth.redirect_uri(request),
    }
    template = "instances/new.html#wizard" if request.htmx else "instances/new.html"
    response = render(request, template, context, status=status)
    if request.htmx and push_url:
        response["HX-Push-Url"] = push_url
    return response


def new(request: HttpRequest, connector_pk: int) -> HttpResponse:
    """The new instance wizard: name → settings → authentication method → credentials."""
    company = require(request, "can_manage_instances")
    connector = get_object_or_404(
        Connector.objects.for_company(company).prefetch_related("variables", "auth_methods", "endpoints"), pk=connector_pk
    )
    if not connector.is_ready:
        messages.error(
            request, f"{connector.name} needs at least one authentication method and one endpoint before instances can be added."
        )
        return redirect("connectors:detail", pk=connector.pk)
    source = request.POST if request.method == "POST" else request.GET
    steps = _steps_for(connector)
    step = source.get("step", "name")
    if step not in steps:
        step = "name"
    try:
        state = _load_state(source.get("state", ""), connector)
    except WizardStateError as exc:
        state = {"connector": connector.pk}
        return _render_wizard(
            request, connector, "name", state, _wizard_forms(connector, "name", state, request=request),
            error=str(exc), status=400 if request.method == "POST" else 200,
        )
    missing = _first_missing_step(connector, state)
    if missing and steps.index(missing) < steps.index(step):
        step = missing

    if request.method != "POST":
        return _render_wizard(request, connector, step, state, _wizard_forms(connector, step, state, request=request))

    form = _wizard_forms(connector, step, state, request.POST, request=request)
    if not form.is_valid():
        return _render_wizard(request, connector, step, state, form, status=422)
    if step == "name":
        state["name"] = form.cleaned_data["name"]
    elif step == "settings":
        state["settings"] = form.state()
    elif step == "auth":
        state["auth_method"] = form.cleaned_data["auth_method"].pk
    else:
        return _finish_wizard(request, connector, state, form)
    next_step = steps[steps.index(step) + 1]
    next_url = _step_url(connector, next_step, state)
    if not request.htmx:
        return redirect(next_url)  # post/redirect/get: refresh and back never re-submit
    return _render_wizard(
        request, connector, next_step, state, _wizard_forms(connector, next_step, state, request=request), push_url=next_url
    )


def _changed_step_response(request, connector, state, name_form, settings_form) -> HttpResponse | None:
    for step, earlier in (("name", name_form), ("settings", settings_form)):
        if not earlier.is_valid():
            return _render_wizard(
                request, connector, step, state, earlier, status=422,
                error="Something changed since you filled in this step; please check it again.",
            )
    return None


def _finish_wizard(request: HttpRequest, connector: Connector, state: dict, form: CredentialsForm) -> HttpResponse:
    method = _chosen_method(connector, state)
    values, secrets = form.split()
    name_form, settings_form = earlier_steps(connector, state)
    changed = _changed_step_response(request, connector, state, name_form, settings_form)
    if changed is not None:
        return changed
    if oauth.is_authorization_code(method):
        return _connect(request, connector, method, values, secrets, wizard_state=state)
    result, check = checks.check_and_record(
        connector=connector, auth_method=method, values=values, secrets=secrets, user=request.user
    )
    if not result.ok:
        state["values"] = values  # non-secret values only; secrets are never kept
        retry = CredentialsForm(connector=connector, auth_method=method, stored_values=values)
        return _render_wizard(request, connector, "credentials", state, retry, check=check, error=result.message, status=422)
    instance = _create_instance(connector, method, name_form, settings_form, values, secrets, request.user)
    try:
        with transaction.atomic():
            instance.save()
            checks.note_check(instance, check)
    except IntegrityError:
        return _name_taken(request, connector, state, name_form)
    messages.success(request, f'Instance "{instance.name}" is authenticated and ready to use in process flows.')
    return _redirect(request, _manage_url(instance))


def _create_instance(connector, method, name_form, settings_form, values, secrets, user) -> Instance:
    settings_data = settings_form.cleaned_data
    instance = Instance(
        company=connector.company,
        connector=connector,
        name=name_form.cleaned_data["name"],
        auth_method=method,
        time_zone=settings_data["time_zone"],
        date_format=settings_data["date_format"],
        rate_limit_amount=settings_data["rate_limit_amount"],
        rate_limit_unit=settings_data["rate_limit_unit"],
        connection_pool=settings_data.get("connection_pool"),
        values=values,
        created_by=user,
    )
    instance.set_secrets(secrets)
    return instance


def _name_taken(request, connector, state, name_form) -> HttpResponse:
    state.pop("name", None)
    return _render_wizard(
        request, connector, "name", state, NameForm({"name": name_form.cleaned_data["name"]}, connector=connector),
        error="An instance with this name was just added by someone else. Choose another name.", status=409,
    )


# --- OAuth 2 authorisation code: Connect and the callback -------------------------


def _connect(
    request: HttpRequest, connector: Connector, method, values: dict, secrets: dict, *,
    wizard_state: dict | None = None, instance: Instance | None = None, details: dict | None = None,
) -> HttpResponse:
    """Send the browser to the provider's authorise page; nothing is saved until the callback.

    A navigation, not a form post to the provider: htmx is told to load the page
    (HX-Redirect), and without JavaScript a page with a link is shown, so the
    Content-Security-Policy's form-action 'self' holds.
    """
    try:
        pending, url = oauth.start(
            request=request, connector=connector, auth_method=method, values=values, secrets=secrets,
            instance=instance, wizard_state={**(wizard_state or {}), "values": values}, details=details,
        )
    except oauth.OAuthError as exc:
        if instance is not None:
            messages.error(request, str(exc))
            return _redirect(request, reverse("instances:settings", args=[instance.pk]) + "?tab=authentication")
        state = {**(wizard_state or {}), "values": values}
        retry = CredentialsForm(connector=connector, auth_method=method, stored_values=values)
        return _render_wizard(request, connector, "credentials", state, retry, error=str(exc), status=422)
    if request.htmx:
        return HttpResponseClientRedirect(url)
    return render(request, "instances/oauth_continue.html", {"connector": connector, "url": url, "method": method})


def _resume_url(pending: OAuthAuthorization) -> str:
    if pending.instance_id:
        return reverse("instances:settings", args=[pending.instance_id]) + "?tab=authentication"
    return _step_url(pending.connector, "credentials", pending.wizard_state)


@require_GET
def oauth_callback(request: HttpRequest) -> HttpResponse:
    """Where providers send the browser back: exchange the code, check, and only then save."""
    require(request, "can_manage_instances")
    try:
        # Scoped to the user (and so to their company): another's state is not found.
        connected = oauth.finish(request.user, request.GET)
    except oauth.CallbackRefused as exc:
        return render(request, "instances/oauth_error.html", {"error": str(exc)}, status=400)
    except oauth.OAuthError as exc:
        messages.error(request, str(exc))
        return redirect(_resume_url(exc.pending))
    return _save_connected(request, connected)


RECONNECT_DETAILS = ("name", "time_zone", "date_format", "rate_limit_amount", "rate_limit_unit", "connection_pool")


def _save_connected(request: HttpRequest, connected: oauth.Connected) -> HttpResponse:
    """Save the checked tokens: on the instance being connected again (with the details posted with Connect),
    or as the new instance the wizard described (its earlier steps validated again)."""
    pending, state = connected.pending, connected.pending.wizard_state
    connector, method = pending.connector, pending.auth_method
    resume_url = _resume_url(pending)
    name_step_url = _step_url(connector, "name", state)
    other_name_url = _step_url(connector, "name", {k: v for k, v in state.items() if k != "name"})
    with transaction.atomic():
        if pending.instance_id:
            instance = Instance.objects.select_for_update().get(pk=pending.instance_id, company=pending.company)
            auth_fields = {v.key for v in CredentialsForm(connector=instance.connector, auth_method=method).variables}
            details = {k: v for k, v in (pending.details or {}).items() if k in RECONNECT_DETAILS}
            values = {**{k: v for k, v in instance.values.items() if k not in auth_fields}, **pending.values}
        else:
            name_form, settings_form = earlier_steps(connector, state)
            if not (name_form.is_valid() and settings_form.is_valid()):
                messages.error(request, "Something changed since you filled in the wizard; please check it again. Nothing was saved.")
                return redirect(name_step_url)
            instance = Instance(company=connector.company, connector=connector, created_by=request.user)
            details = {"name": name_form.cleaned_data["name"], **settings_form.cleaned_data}
            values = pending.values
        instance.take_connected(method, values, connected.secrets, connected.refresh_due_at, **details)
        try:
            with transaction.atomic():
                instance.save()
                checks.note_check(instance, connected.check)
        except IntegrityError:
            if pending.instance_id:
                messages.error(request, "Another instance of this connector has just taken that name. Nothing was saved.")
                return redirect(resume_url)
            messages.error(request, "An instance with this name was just added by someone else. Choose another name.")
            return redirect(other_name_url)
    if pending.instance_id:
        messages.success(request, f'Instance "{instance.name}" is connected again; the new credentials were checked and are valid.')
        return redirect(reverse("instances:settings", args=[instance.pk]))
    messages.success(request, f'Instance "{instance.name}" is connected, authenticated and ready to use in process flows.')
    return redirect(_manage_url(instance))


@require_GET
def date_preview(request: HttpRequest) -> HttpResponse:
    """Now, in the chosen time zone and date format (the wizard's live preview)."""
    company_of(request)
    fmt = request.GET.get("date_format", "")[:64]
    zone = request.GET.get("time_zone", "").strip()
    problem = date_format_error(fmt)
    if problem:
        return HttpResponse(f"The date format {problem}.", content_type="text/plain; charset=utf-8")
    if not is_time_zone(zone):
        return HttpResponse("Choose a time zone to see a preview.", content_type="text/plain; charset=utf-8")
    now = datetime.now(zoneinfo.ZoneInfo(zone))
    return HttpResponse(f"Now: {now.strftime(fmt)}", content_type="text/plain; charset=utf-8")


# --- instance settings (the cog) ---------------------------------------------------


def _settings_context(
    instance: Instance, *, details=None, auth_form=None, credentials=None, tab="details", error="", check=None,
    new_destinations: list[str] | None = None,
) -> dict:
    connector = instance.connector
    history = list(instance.checks.select_related("created_by")[: CHECK_HISTORY + 1])
    latest = history[0] if history else None
    flows = instance.flows_using()
    return {
        "rate_limit_paused_until": _rate_limit_paused_until(instance),
        "instance": instance,
        "connector": connector,
        "details": details,
        "auth_form": auth_form,
        "credentials": credentials,
        "latest": latest,
        "history": history[1:CHECK_HISTORY],
        "more_history": len(history) > CHECK_HISTORY,
        "tab": tab,
        "error": error,
        "failed_check": check,
        "time_zones": _time_zones(),
        "flows": flows,
        "new_destinations": describe(new_destinations) if new_destinations else "",
    }


def _rate_limit_paused_until(instance: Instance) -> datetime | None:
    """The end of a pause an API's 429 set on the instance's rate limit (None: not paused, or the store is down)."""
    try:
        return limits.rate_limit_paused_until(instance)
    except limits.STORE_ERRORS:
        return None


@require_POST
def clear_rate_limit_pause(request: HttpRequest, pk: int) -> HttpResponse:
    """End the pause a 429 set on the instance's rate limit, for every worker (Administrators only)."""
    require(request, "is_company_administrator")
    company, instance = _get_instance_for_user(request, pk)
    settings_url = reverse("instances:settings", args=[instance.pk])
    try:
        paused_until = limits.rate_limit_paused_until(instance)
        cleared = limits.clear_rate_limit_pause(instance)
    except limits.STORE_ERRORS:
        messages.error(request, "The rate limit store is unavailable, so the pause could not be cleared. Try again shortly.")
        return _redirect(request, settings_url)
    if not cleared or paused_until is None:
        messages.info(request, "The rate limit was no longer paused; nothing was changed.")
        return _redirect(request, settings_url)
    audit.record_note(instance, "instance", {
        "rate limit pause": f"cleared (it was to end at {paused_until:%Y-%m-%d %H:%M:%S} UTC)",
    })
    messages.success(request, "The rate limit pause was cleared: requests are sent again within the instance's rate limit.")
    return _redirect(request, settings_url)


def _details_form(instance: Instance, data=None) -> DetailsForm:
    initial = {
        "name": instance.name,
        "time_zone": instance.time_zone,
        "date_format": instance.date_format,
        "rate_limit_amount": instance.rate_limit_amount,
        "rate_limit_unit": instance.rate_limit_unit,
        "connection_pool": instance.connection_pool_id,
    }
    return DetailsForm(data, connector=instance.connector, instance=instance, initial=initial)


def settings_page(request: HttpRequest, pk: int) -> HttpResponse:
    company, instance = _get_instance_for_user(request, pk)
    connector = instance.connector
    tab = params.choice(request.GET, "tab", {"details", "authentication", "request", "response"}, "details")
    stored_secrets = instance.get_secrets()
    if request.method != "POST":
        method = instance.auth_method
        if request.htmx and "auth_method" in request.GET:
            chosen = params.id_param(request.GET, "auth_method")
            method = (connector.auth_methods.filter(pk=chosen).first() if chosen else None) or method
            credentials = CredentialsForm(
                connector=connector, auth_method=method, stored_values=instance.values,
                stored_secrets=stored_secrets if method.pk == instance.auth_method_id else {},
            )
            return render(request, "instances/settings.html#credential-fields", {
                "credentials": credentials, "instance": instance, "connector": connector,
                "redirect_uri": oauth.redirect_uri(request),
            })
        context = _settings_context(
            instance,
            details=_details_form(instance),
            auth_form=AuthMethodForm(connector=connector, initial={"auth_method": instance.auth_method_id}),
            credentials=CredentialsForm(
                connector=connector, auth_method=method, stored_values=instance.values, stored_secrets=stored_secrets
            ),
            tab=tab,
        )
        return render(request, "instances/settings.html", {**context, "redirect_uri": oauth.redirect_uri(request)})

    require(request, "can_manage_instances")
    details = _details_form(instance, request.POST)
    auth_form = AuthMethodForm(request.POST, connector=connector)
    method = instance.auth_method
    if auth_form.is_valid():
        method = auth_form.cleaned_data["auth_method"]
    same_method = method.pk == instance.auth_method_id
    credentials = CredentialsForm(
        request.POST, connector=connector, auth_method=method, stored_values=instance.values,
        stored_secrets=stored_secrets if same_method else {},
    )
    if not (details.is_valid() and auth_form.is_valid() and credentials.is_valid()):
        tab = "details" if details.errors else "authentication"
        context = _settings_context(instance, details=details, auth_form=auth_form, credentials=credentials, tab=tab,
                                    error="Please correct the highlighted fields. Nothing was saved.")
        return render(request, "instances/settings.html", {**context, "redirect_uri": oauth.redirect_uri(request)}, status=422)

    values, secrets = credentials.split()
    auth_fields = {v.key for v in credentials.variables}
    old_values = {k: v for k, v in instance.values.items() if k in auth_fields}
    auth_changed = not same_method or values != old_values or credentials.secrets_entered()
    connecting = oauth.is_authorization_code(method) and (auth_changed or "connect" in request.POST)
    new_values = {**{k: v for k, v in instance.values.items() if k not in auth_fields}, **values}
    new_destinations = instance.current_destinations(new_values, method)
    check = None
    confirmed_destination = False
    if auth_changed:
        # Stored secrets go only where they were entered for: a changed API address
        # needs them typed again (or an Administrator's recorded confirmation).
        kept = credentials.kept_secrets()
        unapproved = [d for d in new_destinations if d not in instance.credentials_approved_for] if kept else []
        if unapproved:
            confirmed_destination = (
                request.user.is_company_administrator and request.POST.get("confirm_destination") == "yes"
            )
            if not confirmed_destination:
                for name in kept:
                    credentials.add_error(name, f"Enter this value again to send it to {describe(unapproved)}.")
                context = _settings_context(
                    instance, details=details, auth_form=auth_form, credentials=credentials, tab="authentication",
                    error=f"{destination_changed_message(unapproved)} Nothing was saved.",
                    new_destinations=unapproved,
                )
                return render(request, "instances/settings.html", {**context, "redirect_uri": oauth.redirect_uri(request)}, status=422)
    if connecting:
        # Nothing is saved now: the details go with the Connect step and are saved
        # with the tokens once the provider's answer has been checked.
        data = details.cleaned_data
        saved_details = {k: data[k] for k in ("name", "time_zone", "date_format", "rate_limit_amount", "rate_limit_unit")}
        saved_details["connection_pool"] = data["connection_pool"].pk if data.get("connection_pool") else None
        return _connect(request, connector, method, values, secrets, instance=instance, details=saved_details)
    if auth_changed:
        result, check = checks.check_and_record(
            connector=connector, auth_method=method, values=values, secrets=secrets, user=request.user
        )
        if not result.ok:
            CredentialCheck.objects.filter(pk=check.pk).update(instance=instance)
            context = _settings_context(
                instance, details=details, auth_form=auth_form,
                credentials=CredentialsForm(connector=connector, auth_method=method, stored_values=values,
                                            stored_secrets=stored_secrets if same_method else {}),
                tab="authentication", check=check,
                error=f"Only valid credentials can be saved. {result.message} Nothing was saved.",
            )
            return render(request, "instances/settings.html", {**context, "redirect_uri": oauth.redirect_uri(request)}, status=422)

    data = details.cleaned_data
    instance.name = data["name"]
    instance.time_zone = data["time_zone"]
    instance.date_format = data["date_format"]
    instance.rate_limit_amount = data["rate_limit_amount"]
    instance.rate_limit_unit = data["rate_limit_unit"]
    instance.connection_pool = data.get("connection_pool")
    instance.rate_limit_group = data["rate_limit_group"]
    if auth_changed:
        instance.auth_method = method
        instance.values = new_values
        instance.set_secrets(secrets)
        instance.credentials_approved_for = new_destinations
        instance.reauth_reason = ""
    try:
        with transaction.atomic():
            instance.save()
            details.share_rate_limit(instance)
            if check is not None:
                checks.note_check(instance, check)
            if confirmed_destination:
                audit.record_note(instance, "instance", {
                    "credentials sent to a new address": f"{describe(new_destinations)}, confirmed without entering them again",
                })
    except IntegrityError:
        context = _settings_context(instance, details=details, auth_form=auth_form, credentials=credentials,
                                    error="Another instance of this connector has just taken that name. Nothing was saved.")
        return render(request, "instances/settings.html", {**context, "redirect_uri": oauth.redirect_uri(request)}, status=409)
    messages.success(
        request,
        "Instance details saved." + (" The new credentials were checked and are valid." if auth_changed else ""),
    )
    return _redirect(request, reverse("instances:settings", args=[instance.pk]))


@require_POST
def check_now(request: HttpRequest, pk: int) -> HttpResponse:
    """Check the stored credentials again (results on the request/response tabs)."""
    require(request, "can_manage_instances")
    company, instance = _get_instance_for_user(request, pk)
    result, _ = checks.recheck(instance, user=request.user)
    (messages.success if result.ok else messages.error)(request, f"{instance.name}: {result.message}")
    if request.POST.get("next") == "manage":
        return _redirect(request, _manage_url(instance))
    return _redirect(request, reverse("instances:settings", args=[instance.pk]) + "?tab=response")


def check_schedule(request: HttpRequest) -> HttpResponse:
    """How often the company's instances are re-checked (Administrators)."""
    company = require(request, "is_company_administrator")
    schedule, _ = CheckSchedule.objects.get_or_create(
        company=company, defaults={"interval_minutes": rechecks.DEFAULT_INTERVAL_MINUTES}
    )
    form = CheckScheduleForm(request.POST or None, instance=schedule)
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, f"Credentials are now re-checked {form.instance.get_interval_minutes_display()}.")
        return redirect("connectors:manage")
    return render(request, "instances/check_schedule.html", {"form": form}, status=422 if form.errors else 200)


@require_POST
def remove(request: HttpRequest, pk: int) -> HttpResponse:
    """Remove an instance after the user typed `confirm`; refused while a flow uses it."""
    require(request, "can_manage_instances")
    company, instance = _get_instance_for_user(request, pk)
    context = {"instance": instance}
    if request.POST.get("confirm", "").strip().lower() != "confirm":
        context["error"] = "Type confirm to remove this instance."
        if request.htmx:
            return render(request, "instances/settings.html#remove-dialog-body", context, status=422)
        return _remove_failed(request, instance, context["error"])
    name = instance.name
    try:
        # PROTECT on connection shapes: the database refuses while any flow uses
        # the instance, including a shape added concurrently (IntegrityError).
        with transaction.atomic():
            instance.delete()
    except (ProtectedError, IntegrityError):
        flows = Instance(pk=pk).flows_using()
        context.update(in_use=True, flows=flows)
        message = "This instance is used in process flows. Reconfigure or remove those connection shapes first, then try again."
        if request.htmx:
            return render(request, "instances/settings.html#remove-dialog-body", context, status=409)
        return _remove_failed(request, instance, message, dialog="in-use")
    messages.success(request, f'Instance "{name}" was removed.')
    return _redirect(request, reverse("connectors:manage"))


def _remove_failed(request: HttpRequest, instance: Instance, message: str, dialog: str = "1") -> HttpResponse:
    """Back to the settings page with the remove dialog open (`in-use`: open on the refusal)."""
    messages.error(request, message)
    return redirect(reverse("instances:settings", args=[instance.pk]) + f"?remove={dialog}")
