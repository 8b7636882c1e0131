"""Take the README screenshots from a running demo (`make run` in another terminal).

    .venv/bin/python docs/take_screenshots.py [http://127.0.0.1:8000]

Logs in as demo/demo, checks the Sandbox instances' credentials so their
status shows, and walks through the main pages, writing PNGs to
docs/screenshots/. Needs Debian's Chromium (/usr/bin/chromium).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

BASE = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000"
OUT = Path(__file__).resolve().parent / "screenshots"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def main() -> None:
    OUT.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 860}, base_url=BASE)
        page.goto("/login/")
        page.get_by_label("Username").fill("demo")
        page.get_by_label("Password").fill("demo")
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url("**/connectors/")

        # Alert rules first, so the runs below alert: an email channel, a webhook, a rule.
        page.goto("/alerts/rules/")
        if not page.get_by_test_id("channel").count():
            page.get_by_text("Add an email channel").click()
            page.locator("#id_email-name").fill("Operations")
            page.get_by_label("Email addresses").fill("ops@acme.example")
            page.get_by_role("button", name="add email channel").click()
            page.get_by_text("Add a webhook").click()
            page.locator("#id_webhook-name").fill("On-call pager")
            page.get_by_label("URL").fill("https://hooks.example.com/patchworks")
            page.get_by_role("button", name="add webhook").click()
        if not page.get_by_test_id("rule").count():
            page.get_by_label("When").select_option("run_failed")
            page.get_by_label("Operations (email)").check()
            page.get_by_label("On-call pager (webhook)").check()
            page.get_by_role("button", name="add rule").click()
        page.screenshot(path=OUT / "alert-rules.png", full_page=True)

        # Check each Sandbox instance once so the page shows real statuses.
        for name in ("Sandbox - UK", "Sandbox - EU", "Sandbox - OAuth"):
            page.goto("/connectors/")
            page.get_by_role("link", name=f"Settings for instance {name}").click()
            page.get_by_role("button", name="check credentials").click()
            page.wait_for_url("**tab=response")

        page.goto("/connectors/")
        page.screenshot(path=OUT / "manage-connectors.png", full_page=True)

        page.goto("/marketplace/")
        page.screenshot(path=OUT / "marketplace.png", full_page=True)
        page.goto("/marketplace/shopify/")
        page.screenshot(path=OUT / "marketplace-listing.png", full_page=True)

        page.goto("/connectors/")
        page.get_by_test_id("connector").filter(has_text="Sandbox API v1").first.get_by_role("link", name="add new instance").click()
        page.get_by_label("Name").fill("Sandbox - US")
        page.get_by_role("button", name="next step").click()
        page.get_by_label("Time zone").fill("America/New_York")
        page.wait_for_timeout(600)
        page.screenshot(path=OUT / "wizard-settings.png", full_page=True)
        page.get_by_role("button", name="next step").click()
        page.get_by_label("Username and password").check()
        page.get_by_role("button", name="next step").click()
        page.get_by_label(re.compile(r"^\s*Username\*?\s*$")).fill("sandbox")
        page.get_by_label(re.compile(r"^\s*Password\*?\s*$")).fill("wrong-password")
        page.get_by_role("button", name="next step").click()
        page.get_by_test_id("wizard-error").wait_for()
        page.screenshot(path=OUT / "wizard-credentials-refused.png", full_page=True)

        page.goto("/connectors/")
        page.get_by_role("link", name="Settings for instance Sandbox - UK").click()
        page.screenshot(path=OUT / "instance-settings.png", full_page=True)
        page.get_by_role("tab", name="request").click()
        page.wait_for_timeout(300)
        page.screenshot(path=OUT / "instance-request-tab.png", full_page=True)
        page.get_by_role("tab", name="response").click()
        page.wait_for_timeout(300)
        page.screenshot(path=OUT / "instance-response-tab.png", full_page=True)
        page.get_by_test_id("trash").click()
        page.get_by_role("dialog").get_by_label("Type confirm to proceed").fill("confirm")
        page.get_by_role("dialog").get_by_role("button", name="remove").click()
        page.get_by_test_id("in-use").wait_for()
        page.screenshot(path=OUT / "remove-instance-in-use.png")

        # The update prompt of a modified prebuilt connector (BigCommerce in the demo).
        page.goto("/connectors/")
        page.get_by_test_id("connector").filter(has_text="BigCommerce").get_by_test_id("update-available").click()
        page.get_by_test_id("update-choices").wait_for()
        page.screenshot(path=OUT / "update-prompt.png", full_page=True)
        # Acme's Sandbox 1.0.0 has 1.5.0 installed alongside (for the demo flow), so the manage page links
        # that copy instead of "update available"; the update page still reports the impact on its flow.
        page.goto("/connectors/")
        card_id = page.get_by_test_id("connector").filter(has=page.get_by_test_id("alongside-note")).first.get_attribute("id")
        page.goto(f"/marketplace/updates/{card_id.removeprefix('connector-')}/")
        page.get_by_test_id("impact-report").wait_for()
        page.screenshot(path=OUT / "update-impact-report.png", full_page=True)

        # The connector builder.
        page.goto("/connectors/")
        page.get_by_role("link", name="Settings for connector Acme Warehouse API").click()
        page.get_by_role("link", name="connector builder").click()
        page.screenshot(path=OUT / "builder-details.png", full_page=True)
        page.get_by_role("link", name="3. authentication methods").click()
        page.get_by_role("link", name=re.compile("^API key")).click()
        page.screenshot(path=OUT / "builder-auth.png", full_page=True)
        page.get_by_role("link", name="4. endpoints").click()
        page.screenshot(path=OUT / "builder-endpoints.png", full_page=True)

        page.goto("/connectors/")
        page.get_by_role("link", name="Settings for connector BigCommerce").click()
        page.get_by_role("button", name="more").click()
        page.get_by_role("link", name="history").click()
        page.screenshot(path=OUT / "connector-history.png", full_page=True)

        # The demo flow: its shapes, a run now followed to the end, the run log and what the Sandbox received.
        page.goto("/flows/")
        page.get_by_role("link", name="Sandbox orders to Sandbox (US)").click()
        page.get_by_test_id("shape").first.wait_for()
        page.screenshot(path=OUT / "flow-shapes.png", full_page=True)
        # Test step on the map (step 3) and on the send shape (step 4): one page of real data, nothing sent.
        for step in (3, 4):
            page.get_by_role("button", name=f"test step {step}").click()
            page.get_by_test_id("test-step-result").nth(step - 3).wait_for(timeout=60_000)
        page.get_by_test_id("shape").nth(2).scroll_into_view_if_needed()
        page.screenshot(path=OUT / "flow-test-step.png", full_page=True)
        page.get_by_role("button", name="run now").click()
        page.wait_for_url("**/flows/runs/*/")
        status = page.get_by_test_id("run-status").first
        for _ in range(120):
            if status.inner_text().strip() not in ("queued", "running"):
                break
            page.wait_for_timeout(500)
        print(f"The demo flow's run ended {status.inner_text().strip()}: {page.url}")
        for text in page.get_by_test_id("shape-run").all_inner_texts():
            print("  " + " ".join(text.split()))
        # The items the last shape sent: the update time converted to New York, US format.
        page.get_by_test_id("payload-sample").last.locator("summary").click()
        page.screenshot(path=OUT / "run-detail.png", full_page=True)
        # Step by step: the first shape's pages, the records of its first page and its first request's answer.
        run_url = page.url
        page.goto(run_url)
        step = page.get_by_test_id("shape-run").first
        step.get_by_text("Step by step: records and requests of each page").click()
        first_page = step.get_by_test_id("step-page").first
        first_page.get_by_test_id("step-records").first.locator("summary").click()
        first_page.get_by_test_id("payload-records").wait_for()
        first_page.get_by_test_id("step-request").first.locator("summary").click()
        first_page.get_by_test_id("run-request").wait_for()
        page.wait_for_timeout(400)
        step.screenshot(path=OUT / "run-steps.png")
        page.goto("/flows/runs/")
        page.screenshot(path=OUT / "run-log.png", full_page=True)
        page.goto("/flows/")
        page.screenshot(path=OUT / "flows-list.png", full_page=True)
        page.goto("/sandbox/received-orders/")
        page.get_by_test_id("received-order").first.locator("summary").click()
        page.screenshot(path=OUT / "sandbox-received-orders.png")

        # A second run stopped at once (a new delivery of the same orders), and what retrying it would do.
        page.goto("/flows/")
        page.get_by_role("link", name="Sandbox orders to Sandbox (US)").click()
        page.get_by_role("button", name="run now").click()
        page.wait_for_url("**/flows/runs/*/")
        stop = page.get_by_role("button", name="stop")
        if stop.count():
            stop.click()
            page.get_by_test_id("retry").click()
            page.wait_for_url("**/retry/")
            page.screenshot(path=OUT / "run-retry.png", full_page=True)

        page.goto("/instances/pools/")
        page.screenshot(path=OUT / "connection-pools.png", full_page=True)
        page.goto("/audit/")
        page.screenshot(path=OUT / "audit-log.png", full_page=True)
        # The alerts the failed runs above led to (sent by the worker beside the server), and one alert's deliveries.
        page.goto("/alerts/")
        page.screenshot(path=OUT / "alerts.png", full_page=True)
        if page.get_by_test_id("alert").count():
            page.get_by_test_id("alert").first.get_by_role("link").click()
            page.screenshot(path=OUT / "alert-detail.png", full_page=True)
        browser.close()
    print(f"Screenshots written to {OUT}")


if __name__ == "__main__":
    main()
