"""Registration and login through the real pages, in headless Chromium."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.helpers import links_in

pytestmark = pytest.mark.browser


def register(page, email: str) -> None:
    """Fill in the registration form on the page and send it."""
    page.get_by_label("Display name").fill("Bea")
    page.get_by_label("Email address").fill(email)
    page.get_by_label("Password", exact=True).fill("a long passphrase")
    page.get_by_label("Repeat the password").fill("a long passphrase")
    page.get_by_label("Home city").fill("Berlin")
    page.get_by_role("button", name="Create my account").click()
    expect(page.get_by_role("heading", name="Check your email")).to_be_visible()


def test_register_confirm_and_log_in_in_a_browser(page, outbox, run_jobs):
    page.goto("/")
    page.get_by_role("link", name="Join", exact=True).click()
    register(page, "bea@example.org")

    run_jobs()
    link = next(link for link in links_in(outbox.last_to("bea@example.org")) if "/confirm/" in link)
    page.goto(re.sub(r"^https?://[^/]+", "", link))
    expect(page.get_by_text("Please log in to confirm this email address.")).to_be_visible()
    page.get_by_label("Email address").fill("bea@example.org")
    page.get_by_label("Password").fill("a long passphrase")
    page.get_by_role("button", name="Log in", exact=True).click()
    page.get_by_role("button", name="Confirm my email").click()
    expect(page.get_by_text("your email address is confirmed")).to_be_visible()

    page.get_by_role("button", name="Log out").click()
    page.get_by_role("link", name="Log in", exact=True).click()
    page.get_by_label("Email address").fill("bea@example.org")
    page.get_by_label("Password").fill("a long passphrase")
    page.get_by_role("button", name="Log in", exact=True).click()
    expect(page.get_by_text("Welcome back, Bea.")).to_be_visible()


def test_form_errors_are_announced_beside_their_fields(page):
    page.goto("/register")
    page.get_by_label("Email address").fill("not an email")
    page.get_by_role("button", name="Create my account").click()
    email = page.get_by_label("Email address")
    assert email.get_attribute("aria-invalid") == "true"
    described_by = email.get_attribute("aria-describedby").split()
    assert "email-error" in described_by
    assert "valid email address" in page.locator("#email-error").inner_text()
    expect(page.get_by_role("alert")).to_be_visible()


def test_a_long_address_wraps_at_320_pixels_wide(page):
    """At a phone's narrowest, a long email address breaks onto the next line instead of
    widening the page, so nothing needs scrolling sideways (WCAG 1.4.10)."""
    page.set_viewport_size({"width": 320, "height": 640})
    page.goto("/register")
    register(page, "bea.with.a.rather.long.address@example.org")
    assert page.evaluate("document.documentElement.scrollWidth") <= 320
