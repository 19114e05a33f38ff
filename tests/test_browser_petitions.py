"""Signing a petition through the real pages, in headless Chromium."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from core.extensions import db
from petitions.models import Petition
from tests.helpers import links_in
from tests.test_petitions_signing import make_petition

pytestmark = pytest.mark.browser


def test_a_guest_signs_and_confirms_a_petition_in_a_browser(app, page, outbox, run_jobs):
    petition_id = make_petition(app)
    page.goto(f"/petitions/{petition_id}")
    expect(page.get_by_role("heading", name="Cap holiday lets in Alfama")).to_be_visible()

    # A mistake first: the form comes back with the message beside the field, nothing lost.
    page.get_by_label("Your name").fill("Rita Lopes")
    page.get_by_label("Email address").fill("rita@example")
    page.get_by_label("City or postcode").fill("Porto")
    page.get_by_role("button", name="Sign this petition").click()
    email = page.get_by_label("Email address")
    assert email.get_attribute("aria-invalid") == "true"
    assert page.get_by_label("Your name").input_value() == "Rita Lopes"

    email.fill("rita@example.org")
    page.get_by_label("Show my name on the petition").check()
    page.get_by_role("button", name="Sign this petition").click()
    expect(page.get_by_role("heading", name="One more step: check your email")).to_be_visible()

    run_jobs()
    link = next(u for u in links_in(outbox.last_to("rita@example.org")) if u.endswith("/confirm"))
    page.goto(re.sub(r"^https?://[^/]+", "", link))
    page.get_by_role("button", name="Confirm my signature").click()
    expect(page.get_by_text("your signature is confirmed and counted")).to_be_visible()

    run_jobs()
    page.reload()
    expect(page.get_by_text("1 signature of a goal of 100")).to_be_visible()
    recent_signers = page.get_by_role("region", name="Recent signers")
    expect(recent_signers.get_by_text("Rita Lopes")).to_be_visible()
    with app.app_context():
        assert db.session.get(Petition, petition_id).signature_count == 1


def test_copying_the_share_link_is_announced(app, page, live_server):
    petition_id = make_petition(app)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server)
    page.goto(f"/petitions/{petition_id}")
    page.get_by_role("button", name="Copy link").click()
    expect(page.get_by_role("button", name="Copied")).to_be_visible()
    # Screen readers hear it through a live region that was there before the click.
    expect(page.get_by_role("status")).to_have_text("Link copied")
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied == f"http://localhost/petitions/{petition_id}"
