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
        page.get_by_test_id("connector").filter(has_text="Sandbox API v1").get_by_role("link", name="add new instance").click()
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
        page.goto("/connectors/")
        page.get_by_test_id("connector").filter(has_text="Sandbox API v1").get_by_test_id("update-available").click()
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

        page.goto("/instances/pools/")
        page.screenshot(path=OUT / "connection-pools.png", full_page=True)
        page.goto("/audit/")
        page.screenshot(path=OUT / "audit-log.png", full_page=True)
        browser.close()
    print(f"Screenshots written to {OUT}")


if __name__ == "__main__":
    main()
