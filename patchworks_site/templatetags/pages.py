from django import template

register = template.Library()


@register.simple_tag(takes_context=True)
def page_query(context, number: int) -> str:
    """The current query string with `page` set to `number` (keeps search and filters)."""
    query = context["request"].GET.copy()
    query["page"] = number
    return "?" + query.urlencode()
