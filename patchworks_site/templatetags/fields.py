"""`{{ field|as_field }}`: a form field as crispy-forms' Bootstrap 5 `as_crispy_field` renders it, faster.

`as_crispy_field` renders each field through half a dozen nested templates; the
instance settings page and the wizard show eight or more fields, which made it
a third of their time. Text, number, password, e-mail, URL inputs and selects
are built here with the same markup (wrapper, label with the required
asterisk, widget classes, errors, help text); any other widget is handed to
crispy-forms. Unlike crispy-forms' template, help text is escaped (it can
quote a connector's definition).
"""

from __future__ import annotations

from html import escape

from crispy_forms.templatetags.crispy_forms_filters import as_crispy_field
from django import forms, template
from django.utils.html import conditional_escape
from django.utils.safestring import SafeString, mark_safe

register = template.Library()

ASTERISK = '<span class="asteriskField">*</span>'

# Exact widget classes -> the class crispy-forms gives them ahead of Bootstrap's.
_INPUT_CLASSES = {
    forms.TextInput: "textinput form-control",
    forms.NumberInput: "numberinput form-control",
    forms.PasswordInput: "passwordinput form-control",
    forms.EmailInput: "emailinput form-control",
    forms.URLInput: "urlinput form-control",
    forms.Select: "select form-select",
}


@register.filter
def as_field(field) -> SafeString:
    widget_class = _INPUT_CLASSES.get(type(field.field.widget))
    if widget_class is None or field.is_hidden:
        return as_crispy_field(field)
    auto_id = field.auto_id
    errors = field.errors
    widget = field.as_widget(attrs={"class": f"{widget_class} is-invalid" if errors else widget_class})
    parts = [f'<div id="div_{escape(auto_id)}" class="mb-3">']
    if field.label:
        required = field.field.required
        parts.append(
            f'<label for="{escape(auto_id)}" class="form-label{" requiredField" if required else ""}">'
            f'{conditional_escape(field.label)}{ASTERISK if required else ""}</label>'
        )
    parts.append(widget)
    if errors:
        parts.append(f'<div id="{escape(auto_id)}_error" class="invalid-feedback">')
        parts.extend(f'<p id="error_{n}_{escape(auto_id)}"><strong>{conditional_escape(error)}</strong></p>'
                     for n, error in enumerate(errors, start=1))
        parts.append("</div>")
    if field.help_text:
        parts.append(f'<div id="{escape(auto_id)}_helptext" class="form-text">{conditional_escape(field.help_text)}</div>')
    parts.append("</div>")
    return mark_safe("".join(parts))
