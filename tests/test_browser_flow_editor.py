"""The shape editor in a browser: add a filter shape in the panel, then reorder by keyboard alone."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from flows.models import ProcessFlow, Shape, ShapeKind
from patchworks_site.models import Role

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _expect_focus_on(page, label: str) -> None:
    try:
        expect(page.locator(":focus")).to_have_attribute("aria-label", label)
    except AssertionError as error:
        focused = page.evaluate("document.activeElement ? document.activeElement.outerHTML.slice(0, 300) : 'none'")
        raise AssertionError(f"focus is on {focused}") from error


def _focused_label(page) -> str:
    return page.evaluate("document.activeElement && document.activeElement.getAttribute('aria-label')") or ""


def test_add_a_filter_shape_and_reorder_by_keyboard(page, log_in, make_user, company):
    make_user(company, Role.USER, "flo")
    flow = ProcessFlow.objects.create(company=company, name="Orders to ERP")
    mapping = Shape.objects.create(flow=flow, kind=ShapeKind.MAP, position=0, config={"fields": [], "keep_unmapped": True})
    log_in("flo")
    page.goto(f"/flows/{flow.pk}/")

    page.get_by_role("button", name="add filter shape").click()
    page.wait_for_url("**/shapes/*/")
    page.get_by_label("Row 1: Field").fill("updated_at")
    page.get_by_label("Row 1: Comparison").select_option("in_last")
    page.get_by_label("Row 1: Value").fill("24")
    page.get_by_role("button", name="save step 2").click()
    expect(page.get_by_text("Choose minutes, hours or days.")).to_be_visible()  # swapped in place (htmx)
    expect(page.locator(":focus")).to_have_attribute("name", "rules-0-unit")  # focus on the field to fix
    page.get_by_label("Row 1: Unit").select_option("hours")
    page.get_by_role("button", name="save step 2").click()
    page.wait_for_url(f"**/flows/{flow.pk}/")
    expect(page.get_by_text("Keeps items where updated_at in the last 24 hours")).to_be_visible()
    filter_shape = Shape.objects.get(flow=flow, kind=ShapeKind.FILTER)
    assert filter_shape.config["rules"] == [{"field": "updated_at", "comparison": "in_last", "value": "24", "unit": "hours"}]

    # Keyboard only: Tab to "move step 2 up", press Enter; the list is swapped and focus follows the shape.
    for _ in range(80):
        page.keyboard.press("Tab")
        if _focused_label(page) == "Move step 2 up":
            break
    else:
        raise AssertionError("Tab never reached the move button")
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("shape-kind").first).to_have_text("filter")
    _expect_focus_on(page, "Move step 1 down")
    assert list(flow.shapes.order_by("position").values_list("pk", flat=True)) == [filter_shape.pk, mapping.pk]

    page.keyboard.press("Enter")
    expect(page.get_by_test_id("shape-kind").first).to_have_text("map")
    _expect_focus_on(page, "Move step 2 up")
    assert list(flow.shapes.order_by("position").values_list("pk", flat=True)) == [mapping.pk, filter_shape.pk]

    # The edit panel opens in place on the flow page.
    page.get_by_role("link", name="edit step 1").click()
    expect(page.locator("#shape-panel").get_by_text("Step 1: map shape")).to_be_visible()
    expect(page.locator(":focus")).to_have_text("Step 1: map shape")
    assert page.url.endswith(f"/flows/{flow.pk}/")
