"""`{{ field|as_field }}`: a form field as crispy-forms' Bootstrap 5 `as_crispy_field` renders it, faster.

`as_crispy_field` renders each field through half a dozen nested templates; the
instance settings page and the wizard show eight or more fields, which made it
a third of their time. Text, number, password, e-mail, URL inputs and selects
are rendered by one template, includes/field.html, with the same markup
(wrapper, label with the required asterisk, widget classes, errors, help text);
any other widget is handed to crispy-forms. Unlike crispy-forms' template, help
text is escaped (it can quote a connector's definition).
"""

from __future__ import annotations

from crispy_forms.templatetags.crispy_forms_filters import as_crispy_field
from django import forms, template
from django.template.loader import get_template
from django.utils.safestring import SafeString

register = template.Library()

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
    widget = field.as_widget(attrs={"class": f"{widget_class} is-invalid" if field.errors else widget_class})
    return get_template("includes/field.html").render({"field": field, "widget": widget})
