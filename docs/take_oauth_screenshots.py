"""Take the README screenshots of the OAuth 2 Connect step from a running demo (`make run`).

    .venv/bin/python docs/take_oauth_screenshots.py [http://127.0.0.1:8000]

Logs in as demo/demo, updates the demo's Sandbox connector to its latest
version (which has the OAuth 2 authorisation code method), starts a new
instance with it and writes the Connect step and the Sandbox's consent page
to docs/screenshots/. Needs Debian's Chromium (/usr/bin/chromium).
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

        card = page.get_by_test_id("connector").filter(has_text="Sandbox API v1")
        if card.get_by_test_id("update-available").count():
            card.get_by_test_id("update-available").click()
            page.get_by_role("button", name=re.compile("update to version|apply update")).click()
            page.wait_for_url("**/connectors/**")
        page.goto("/connectors/")
        card = page.get_by_test_id("connector").filter(has_text="Sandbox API v1")
        card.get_by_role("link", name="add new instance").click()
        page.get_by_label("Name").fill("Sandbox - App")
        page.get_by_role("button", name="next step").click()
        page.get_by_role("button", name="next step").click()
        page.get_by_label("OAuth 2 authorisation code (Sandbox app)").check()
        page.get_by_role("button", name="next step").click()
        page.get_by_label(re.compile(r"^\s*Client secret")).fill("sandbox-app-secret")
        page.screenshot(path=OUT / "wizard-oauth-connect.png", full_page=True)
        page.get_by_role("button", name="Connect").click()
        page.wait_for_url("**/sandbox/api/oauth/authorize?**")
        page.get_by_label("Sandbox username").fill("sandbox")
        page.screenshot(path=OUT / "sandbox-oauth-consent.png", full_page=True)
        browser.close()


if __name__ == "__main__":
    main()
