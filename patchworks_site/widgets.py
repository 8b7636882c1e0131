"""Form widgets shared by the apps."""

from __future__ import annotations

from django import forms
from django.template.loader import render_to_string
from django.utils.safestring import SafeString, mark_safe


class QuickSelect(forms.Select):
    """A select for long lists of (value, label) choices, such as a company's 1,000 process flows.

    Django's Select renders each option through its own template include and
    builds an option dict per choice, which cost a run log page about 80 ms
    for 580 options; this one writes them in one loop (the choices must be plain
    pairs, no groups), in a Jinja2 template (patchworks_site/jinja2/): through
    Django's engine the loop alone still cost 8 ms per 1,000 options, about
    half the run log page (benchmarks/big_data.py).
    """

    template_name = "patchworks_site/widgets/quick_select.html"

    def get_context(self, name, value, attrs):
        context = forms.Widget.get_context(self, name, value, attrs)
        context["widget"]["quick_options"] = [(str(key), label) for key, label in self.choices]
        context["widget"]["quick_selected"] = {str(v) for v in self.format_value(value)}
        return context

    def render(self, name, value, attrs=None, renderer=None) -> SafeString:
        return mark_safe(render_to_string(self.template_name, self.get_context(name, value, attrs), using="jinja2"))
