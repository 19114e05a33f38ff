"""Campaigns: permissions, the disclosure and its history, the industry-backed label, the
decision-maker tracker, status, followers and their updates, linked petitions, invitations
to co-organise, the listing and the city page."""

from __future__ import annotations

import html
import json
import re
from collections import Counter
from datetime import datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from unittest.mock import ANY

import pytest
from flask import Flask
from flask_migrate import downgrade, upgrade
from playwright.sync_api import expect
from sqlalchemy import func, select, text
from sqlalchemy import inspect as sa_inspect

from campaigns import services as campaign_services
from campaigns.forms import NewCampaignForm
from campaigns.models import (
    INVITATION_LIFETIME,
    Campaign,
    CampaignError,
    CampaignInvitation,
    CampaignOrganiser,
    CampaignUpdate,
    DisclosureRecord,
    DisclosureTie,
    Follower,
    Funder,
    Funding,
    LinkedWork,
    StanceChange,
    Status,
    StatusChange,
)
from campaigns.views import MANAGE_FORMS
from chapters import services as chapter_services
from core.app import create_app
from core.db import utcnow
from core.extensions import db
from members import services as member_services
from members.models import Member
from notifications import jobs as notification_jobs
from notifications.models import Category, Frequency, Notification
from notifications.services import set_preferences, subscriber_of
from petitions import services as petition_services
from tests import factories
from tests.factories import (
    PASSWORD,
    add_co_organiser,
    add_signatures,
    make_campaign,
    make_member,
    member_by_email,
)
from tests.helpers import csrf_token, links_in, path_of, submit, text_body

OWNER = "olga@example.org"
CO = "pia@example.org"
OTHER = "rui@example.org"

# Extra fields someone might post hoping to switch the label off.
LABEL_TAMPERING = {
    "industry_backed": "0",
    "industry-backed": "off",
    "is_industry_backed": "false",
    "label": "",
}


# --- helpers ----------------------------------------------------------------------------


def member(app: Flask, email: str, name: str | None = None, city: str = "Lisbon") -> int:
    """A confirmed member (made once); returns their id."""
    with app.app_context():
        found = member_by_email(email)
        if found is None:
            found = make_member(email, name or email.split("@")[0].capitalize(), city)
        return found.id


def launch(app: Flask, owner_email: str = OWNER, *, publish: bool = True, **fields) -> int:
    """A campaign by ``owner_email`` (Olga by default); returns its id."""
    member(app, owner_email, "Olga Organiser")
    with app.app_context():
        return make_campaign(member_by_email(owner_email), publish=publish, **fields).id


def with_co_organiser(app: Flask, campaign_id: int, email: str = CO, **options) -> int:
    """Pia (by default) becomes a co-organiser; returns the organiser row's id."""
    member(app, email, "Pia Petitioner")
    with app.app_context():
        campaign = db.session.get(Campaign, campaign_id)
        return add_co_organiser(campaign, member_by_email(email), **options).id


def invitation_path(outbox, email: str) -> str:
    """The invitation page linked from the last email to ``email``."""
    links = links_in(outbox.last_to(email))
    return path_of(next(link for link in links if "/campaigns/invitations/" in link))


def answer(client, path: str, which: str):
    """Accept or decline with the invitation page's own token; ``path`` is the page."""
    token = csrf_token(client.get("/account").text)
    return client.post(f"{path}/{which}", data={"csrf_token": token})


def log_in(app: Flask, email: str):
    """A fresh test client logged in as ``email``."""
    client = app.test_client()
    response = submit(client, "/login", {"email": email, "password": PASSWORD})
    assert response.status_code == 302, response.status_code
    return client


def post_with_token(client, url: str, data: dict | None = None):
    """Post with the session's CSRF token, taken from a page every member can open.

    The manage page's forms carry a prefix ("details-", "maker-3-"), their token field
    too ("details-csrf_token").
    """
    data = data or {}
    token = csrf_token(client.get("/account").text)
    prefixes = {key.rsplit("-", 1)[0] + "-" for key in data if "-" in key}
    tokens = {f"{prefix}csrf_token": token for prefix in ["", *prefixes]}
    return client.post(url, data={**tokens, **data})


# The prefix of each manage page form, by the route it posts to (stance forms carry
# theirs already, "maker-3-"; button forms have none).
FORM_PREFIXES = {
    "details": "details-",
    "funding": "funding-",
    "funders": "funder-",
    "affiliation": "affiliation-",
    "organisers": "organiser-",
    "decision-makers": "new-maker-",
    "status": "status-",
    "updates": "update-",
}


def prefixed(path: str, name: str) -> str:
    """A field's name as the manage page posts it to ``path``."""
    prefix = FORM_PREFIXES.get(path, "")
    return name if name.startswith(prefix) else prefix + name


def organise(client, campaign_id: int, path: str, data: dict):
    """Post one of the manage page's forms (their fields, by their unprefixed names, and
    their route).

    The token comes from /account, so that what the routes do is tested apart from the
    manage page, which has its own tests.
    """
    data = {prefixed(path, name): value for name, value in data.items()}
    return post_with_token(client, f"/campaigns/{campaign_id}/{path}", data)


def field_error(page_html: str, field_id: str) -> str:
    """The message shown beside a field."""
    assert f'id="{field_id}-error"' in page_html, f"no error beside {field_id}"
    return page_html.split(f'id="{field_id}-error"', 1)[1].split("</p>", 1)[0]


def text_of(fragment: str) -> str:
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", fragment))).strip()


def disclosure_card(page_html: str) -> str:
    return page_html.split('id="disclosure-heading"', 1)[1].split("</section>", 1)[0]


def history_entries(page_html: str) -> list[str]:
    """The disclosure history as shown, first entry first."""
    card = disclosure_card(page_html)
    if '<ol class="history">' not in card:
        return []
    listing = card.split('<ol class="history">', 1)[1].split("</ol>", 1)[0]
    return re.findall(r"<li>(.*?)</li>", listing, re.S)


def maker_card(page_html: str, name: str) -> str:
    return page_html.split(f"<h3>{name}</h3>", 1)[1].split('<div class="card maker">', 1)[0]


def listed(page_html: str) -> list[str]:
    """Titles of the campaign cards on a page, in order."""
    return [
        html.unescape(t)
        for t in re.findall(
            r'<article class="card campaign-card">\s*<h[23]><a href="[^"]+">(.*?)</a>', page_html
        )
    ]


def public_page(app: Flask, campaign_id: int):
    return app.test_client().get(f"/campaigns/{campaign_id}")


def snapshot(app: Flask, campaign_id: int) -> dict:
    """Everything an organiser action could change."""
    with app.app_context():
        campaign = db.session.get(Campaign, campaign_id)

        def count(model, *where) -> int:
            return db.session.scalar(select(func.count()).select_from(model).where(*where))

        return {
            "details": [getattr(campaign, f) for f in ("title", "summary", "city", "topic")],
            "status": (campaign.status, campaign.status_note),
            "funding": campaign.funding,
            "funders": [(f.name, f.kind) for f in campaign.funders],
            "organisers": [
                (o.member_id, o.is_owner, o.affiliation_company, o.affiliation_declared_at)
                for o in campaign.organisers
            ],
            "makers": [(m.name, m.stance) for m in campaign.decision_makers],
            "stance_changes": count(StanceChange),
            "updates": count(CampaignUpdate, CampaignUpdate.campaign_id == campaign_id),
            "history": count(DisclosureRecord, DisclosureRecord.campaign_id == campaign_id),
            "statuses": count(StatusChange, StatusChange.campaign_id == campaign_id),
            "published": campaign.published_at,
        }


def first_maker(app: Flask, campaign_id: int) -> int:
    with app.app_context():
        return db.session.get(Campaign, campaign_id).decision_makers[0].id


def details_form(**changes) -> dict:
    return {
        "title": "Keep Alfama lived in",
        "summary": "Residents ask for a cap on holiday lets in the historic centre.",
        "change_wanted": (
            "A cap of one holiday let in five homes, and a public register of licences."
        ),
        "city": "Lisbon",
        "topic": "short-term-rentals",
        **changes,
    }


def stance_form(maker_id: int, **changes) -> dict:
    values = {
        "stance": "supports",
        "note": "She backed the cap at the council meeting.",
        "source_url": "https://example.org/minutes",
        **changes,
    }
    return {f"maker-{maker_id}-{name}": value for name, value in values.items()}


def stance_data(maker: str, **changes) -> dict:
    """A stance form for the decision-maker named by ``maker`` in a REFUSED case."""
    values = {"stance": "supports", "note": "She backed the cap.", "source_url": "", **changes}
    return {f"maker-{{{maker}}}-{name}": value for name, value in values.items()}


def organiser_posts(maker_id: int) -> dict[str, tuple[str, dict]]:
    """Every organiser form, each with valid data: the route and what it posts."""
    return {
        "edit details": ("details", details_form(title="A quite different campaign title")),
        "declare funding": ("funding", {"funding": "funded"}),
        "add a funder": (
            "funders",
            {"name": "QuickStay Ltd", "kind": "company", "amount_band": "under-1k"},
        ),
        "declare affiliations": (
            "affiliation",
            {"company": "HostAway", "topic": "home-sharing", "details": "Paid consultant."},
        ),
        "add an organiser": ("organisers", {"email": OTHER}),
        "add a decision-maker": (
            "decision-makers",
            {"name": "Rita Sousa", "role": "Mayor", "body": "Lisbon City Council"},
        ),
        "change a stance": (f"decision-makers/{maker_id}/stance", stance_form(maker_id)),
        "change the status": ("status", {"status": "paused", "note": "Summer break for all."}),
        "post an update": (
            "updates",
            {"title": "We met the mayor", "body": "She listened for an hour and took notes."},
        ),
    }


# --- 1. permissions -----------------------------------------------------------------------


def test_launching_needs_a_login(client):
    response = client.get("/campaigns/new")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_a_member_who_does_not_organise_gets_403_on_every_organiser_route(app, run_jobs, outbox):
    campaign_id = launch(app)
    maker_id = first_maker(app, campaign_id)
    with app.app_context():
        campaign = db.session.get(Campaign, campaign_id)
        campaign_services.add_funder(
            campaign, name="Tenants Fund", kind="foundation", amount_band="1k-10k"
        )
        funder_id = campaign.funders[0].id
    co_id = with_co_organiser(app, campaign_id)
    member(app, OTHER, "Rui Outsider")
    before = snapshot(app, campaign_id)
    rui = log_in(app, OTHER)

    assert rui.get(f"/campaigns/{campaign_id}/manage").status_code == 403
    posts = organiser_posts(maker_id)
    posts["remove a funder"] = (f"funders/{funder_id}/remove", {})
    posts["remove an organiser"] = (f"organisers/{co_id}/remove", {})
    for what, (path, data) in posts.items():
        response = post_with_token(rui, f"/campaigns/{campaign_id}/{path}", data)
        assert response.status_code == 403, what
    assert snapshot(app, campaign_id) == before
    run_jobs()
    assert outbox.messages() == []
    assert "Organise this campaign" not in rui.get(f"/campaigns/{campaign_id}").text


def test_an_unpublished_campaign_is_hidden_from_other_members(app):
    campaign_id = launch(app, publish=False)
    member(app, OTHER, "Rui Outsider")
    rui = log_in(app, OTHER)
    assert rui.get(f"/campaigns/{campaign_id}").status_code == 404
    assert rui.get(f"/campaigns/{campaign_id}/manage").status_code == 404
    response = post_with_token(rui, f"/campaigns/{campaign_id}/publish")
    assert response.status_code == 404
    assert snapshot(app, campaign_id)["published"] is None


def test_a_co_organiser_runs_the_campaign_but_cannot_change_who_organises(app):
    campaign_id = launch(app)
    maker_id = first_maker(app, campaign_id)
    with_co_organiser(app, campaign_id)
    third_id = with_co_organiser(app, campaign_id, "quim@example.org")
    member(app, OTHER, "Rui Outsider")
    pia = log_in(app, CO)

    before = snapshot(app, campaign_id)
    assert organise(pia, campaign_id, "organisers", {"email": OTHER}).status_code == 403
    assert organise(pia, campaign_id, f"organisers/{third_id}/remove", {}).status_code == 403
    assert snapshot(app, campaign_id)["organisers"] == before["organisers"]

    posts = organiser_posts(maker_id)
    for what in ["edit details", "change a stance", "change the status", "post an update"]:
        path, data = posts[what]
        response = organise(pia, campaign_id, path, data)
        assert response.status_code == 302, what
    after = snapshot(app, campaign_id)
    assert after["details"][0] == "A quite different campaign title"
    assert after["makers"][0][1] == "supports" and after["stance_changes"] == 1
    assert after["status"] == ("paused", "Summer break for all.")
    assert after["updates"] == 1


def test_the_manage_page_opens_for_organisers_with_owner_tools_for_the_owner_only(app):
    campaign_id = launch(app)
    maker_id = first_maker(app, campaign_id)
    with_co_organiser(app, campaign_id)
    third_id = with_co_organiser(app, campaign_id, "quim@example.org")

    owner_page = log_in(app, OWNER).get(f"/campaigns/{campaign_id}/manage")
    assert owner_page.status_code == 200
    assert "Invite a co-organiser" in owner_page.text
    assert f"/organisers/{third_id}/remove" in owner_page.text
    assert f'name="maker-{maker_id}-stance"' in owner_page.text
    assert f'name="maker-{maker_id}-source_url"' in owner_page.text

    co_page = log_in(app, CO).get(f"/campaigns/{campaign_id}/manage")
    assert co_page.status_code == 200
    assert "Invite a co-organiser" not in co_page.text
    assert f"/organisers/{third_id}/remove" not in co_page.text
    assert f"/decision-makers/{maker_id}/stance" in co_page.text
    names = re.findall(r'name="([^"]+)"', co_page.text)
    assert not [n for n in names if "industry" in n or "label" in n]


def test_the_owner_invites_a_co_organiser_who_accepts_and_can_be_removed(app, outbox, run_jobs):
    campaign_id = launch(app)
    member(app, CO, "Pia Petitioner")
    olga = log_in(app, OWNER)
    response = organise(olga, campaign_id, "organisers", {"email": " PIA@example.org "})
    assert response.status_code == 302
    assert snapshot(app, campaign_id)["organisers"] == [(member(app, OWNER), True, None, ANY)]
    run_jobs()
    pia = log_in(app, CO)
    answer(pia, invitation_path(outbox, CO), "accept")
    with app.app_context():
        row = db.session.scalar(
            select(CampaignOrganiser).where(CampaignOrganiser.member_id == member_by_email(CO).id)
        )
        assert row is not None and not row.is_owner
        pia_id = row.id
    assert organise(olga, campaign_id, f"organisers/{pia_id}/remove", {}).status_code == 302
    assert [o[0] for o in snapshot(app, campaign_id)["organisers"]] == [member(app, OWNER)]


def test_guests_are_sent_to_log_in(app, client):
    campaign_id = launch(app)
    maker_id = first_maker(app, campaign_id)
    before = snapshot(app, campaign_id)
    response = client.get(f"/campaigns/{campaign_id}/manage")
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    token = csrf_token(client.get("/login").text)
    posts = organiser_posts(maker_id)
    posts["publish"] = ("publish", {})
    for what, (path, data) in posts.items():
        response = client.post(
            f"/campaigns/{campaign_id}/{path}", data={"csrf_token": token, **data}
        )
        assert response.status_code == 302, what
        assert "/login" in response.headers["Location"], what
    assert snapshot(app, campaign_id) == before


# --- 2. publishing needs a complete disclosure ------------------------------------------------


def _nothing_declared(app, campaign_id):
    return None


def _funded_without_funders(app, campaign_id):
    with app.app_context():
        campaign = db.session.get(Campaign, campaign_id)
        campaign_services.set_funding(campaign, Funding.FUNDED)
        campaign_services.declare_affiliation(
            campaign.organisers[0], company=None, topic=None, details=None
        )


def _co_organiser_undeclared(app, campaign_id):
    with app.app_context():
        factories.disclose(db.session.get(Campaign, campaign_id))
    with_co_organiser(app, campaign_id, declare=False)


INCOMPLETE = {
    "nothing declared": (
        _nothing_declared,
        "Before publishing, please declare who funds the campaign; "
        "the affiliations of Olga Organiser.",
    ),
    "funded without funders": (
        _funded_without_funders,
        "Before publishing, please declare at least one funder.",
    ),
    "an organiser has not declared": (
        _co_organiser_undeclared,
        "Before publishing, please declare the affiliations of Pia Petitioner.",
    ),
}


@pytest.mark.parametrize("case", list(INCOMPLETE))
def test_a_campaign_is_not_published_without_a_complete_disclosure(app, case):
    campaign_id = launch(app, publish=False)
    prepare, _ = INCOMPLETE[case]
    prepare(app, campaign_id)
    olga = log_in(app, OWNER)

    refused = organise(olga, campaign_id, "publish", {})
    assert refused.status_code != 302  # 422 once the manage page renders (see below)
    assert snapshot(app, campaign_id)["published"] is None
    assert public_page(app, campaign_id).status_code == 404
    assert "Keep Alfama lived in" not in app.test_client().get("/campaigns").text

    # Complete the disclosure through the organiser forms, then publishing works.
    if case == "nothing declared":
        assert organise(olga, campaign_id, "funding", {"funding": "volunteer"}).status_code == 302
        assert organise(olga, campaign_id, "affiliation", {"company": ""}).status_code == 302
    elif case == "funded without funders":
        funder = {"name": "Tenants Fund", "kind": "foundation", "amount_band": "1k-10k"}
        assert organise(olga, campaign_id, "funders", funder).status_code == 302
    else:
        pia = log_in(app, CO)
        assert organise(pia, campaign_id, "affiliation", {"company": ""}).status_code == 302
    assert organise(olga, campaign_id, "publish", {}).status_code == 302
    assert snapshot(app, campaign_id)["published"] is not None
    shown = public_page(app, campaign_id)
    assert shown.status_code == 200 and "Keep Alfama lived in" in shown.text
    assert listed(app.test_client().get("/campaigns").text) == ["Keep Alfama lived in"]


@pytest.mark.parametrize("case", list(INCOMPLETE))
def test_publishing_an_incomplete_campaign_answers_422_with_what_is_missing(app, case):
    campaign_id = launch(app, publish=False)
    prepare, message = INCOMPLETE[case]
    prepare(app, campaign_id)
    olga = log_in(app, OWNER)
    refused = organise(olga, campaign_id, "publish", {})
    assert refused.status_code == 422
    assert message in error_summary(refused.text)
    # Right above the publish section, which still lists what is missing.
    assert refused.text.index('class="error-summary"') < refused.text.index("publish-heading")
    assert snapshot(app, campaign_id)["published"] is None


def test_a_refused_publish_is_explained_once(app):
    campaign_id = launch(app, publish=False)
    refused = organise(log_in(app, OWNER), campaign_id, "publish", {})
    assert refused.status_code == 422
    assert refused.text.count('class="error-summary"') == 1
    assert text_of(refused.text).count("Before publishing, please declare who funds") == 1


# --- 3. the industry-backed label ---------------------------------------------------------


def _funder(kind):
    def act(app, campaign_id):
        olga = log_in(app, OWNER)
        data = {"name": f"A {kind} funder", "kind": kind, "amount_band": "1k-10k"}
        assert organise(olga, campaign_id, "funders", data).status_code == 302

    return act


def _tied(email, company, topic):
    def act(app, campaign_id):
        if email != OWNER:
            with_co_organiser(app, campaign_id, email)
        client = log_in(app, email)
        data = {"company": company, "topic": topic, "details": "I deliver for it."}
        assert organise(client, campaign_id, "affiliation", data).status_code == 302

    return act


LABEL_CASES = {
    "company funder": (_funder("company"), True),
    "owner paid by a company in the campaign's topic": (
        _tied(OWNER, "QuickBite", "delivery"),
        True,
    ),
    "co-organiser paid by a company in the campaign's topic": (
        _tied(CO, "QuickBite", "delivery"),
        True,
    ),
    "organiser paid by a company in another topic": (
        _tied(OWNER, "HostAway", "short-term-rentals"),
        False,
    ),
    "union funder": (_funder("union"), False),
    "foundation funder": (_funder("foundation"), False),
    "member dues": (_funder("member-dues"), False),
    "volunteer-run, no ties": (lambda app, campaign_id: None, False),
}


@pytest.mark.parametrize("case", list(LABEL_CASES))
def test_the_industry_backed_label_comes_from_the_data(app, case):
    campaign_id = launch(
        app, title="Minimum pay per delivery in Berlin", city="Berlin", topic="delivery"
    )
    act, backed = LABEL_CASES[case]
    act(app, campaign_id)
    page = public_page(app, campaign_id).text
    listing = app.test_client().get("/campaigns").text
    if backed:
        assert 'class="industry-label"' in disclosure_card(page)
        assert '<span class="badge industry">Industry-backed</span>' in page.split("<h1>")[0]
        assert 'class="badge industry"' in listing
    else:
        assert "Industry-backed" not in page and "industry-label" not in page
        assert "Industry-backed" not in listing
    with app.app_context():
        assert db.session.get(Campaign, campaign_id).industry_backed is backed


def test_no_form_or_route_turns_the_industry_backed_label_off(app, run_jobs):
    campaign_id = launch(
        app, title="Minimum pay per delivery in Berlin", city="Berlin", topic="delivery"
    )
    maker_id = first_maker(app, campaign_id)
    with_co_organiser(app, campaign_id)
    member(app, OTHER, "Rui Outsider")
    with app.app_context():
        campaign = db.session.get(Campaign, campaign_id)
        pia = next(o for o in campaign.organisers if not o.is_owner)
        campaign_services.declare_affiliation(
            pia, company="QuickBite", topic="delivery", details="I deliver for it."
        )
        campaign_services.add_funder(
            campaign, name="QuickBite GmbH", kind="company", amount_band="under-1k"
        )

    # Nothing in the data model or the forms holds the label.
    assert "industry_backed" not in Campaign.__table__.columns
    with app.test_request_context():
        fields = [f.name for form in [NewCampaignForm, *MANAGE_FORMS.values()] for f in form()]
    assert "funding" in fields and not [n for n in fields if "industry" in n or "label" in n]
    olga = log_in(app, OWNER)
    names = re.findall(r'name="([^"]+)"', olga.get("/campaigns/new").text)
    assert "title" in names and not [n for n in names if "industry" in n or "label" in n]

    posts = organiser_posts(maker_id)
    posts["edit details"] = ("details", details_form(city="Berlin", topic="delivery"))
    posts["declare affiliations"] = ("affiliation", {"company": ""})  # Olga's own: none
    posts["add a funder"] = (
        "funders",
        {"name": "Couriers' Union", "kind": "union", "amount_band": "1k-10k"},
    )
    for what, (path, data) in posts.items():
        response = organise(olga, campaign_id, path, {**data, **LABEL_TAMPERING})
        assert response.status_code == 302, what
        page = public_page(app, campaign_id).text
        assert 'class="industry-label"' in page, what
    pia_client = log_in(app, CO)
    tie = {"company": "QuickBite", "topic": "delivery", "details": "Still delivering."}
    response = organise(pia_client, campaign_id, "affiliation", {**tie, **LABEL_TAMPERING})
    assert response.status_code == 302
    with app.app_context():
        assert db.session.get(Campaign, campaign_id).industry_backed
        record = campaign_services.disclosure_history(db.session.get(Campaign, campaign_id))[0]
        assert record.industry_backed


def test_refiling_under_another_topic_cannot_drop_the_label_silently(app):
    campaign_id = launch(
        app, title="Minimum pay per delivery in Berlin", city="Berlin", topic="delivery"
    )
    with app.app_context():
        campaign = db.session.get(Campaign, campaign_id)
        campaign_services.declare_affiliation(
            campaign.organisers[0], company="QuickBite", topic="delivery", details="I deliver."
        )
    olga = log_in(app, OWNER)
    edited = organise(olga, campaign_id, "details", details_form(city="Berlin", topic="other"))
    assert edited.status_code == 302
    with app.app_context():
        campaign = db.session.get(Campaign, campaign_id)
        latest = campaign_services.disclosure_history(campaign)[0]
        # The history must show the label as it now stands, with the change dated.
        assert latest.industry_backed == campaign.industry_backed


# --- 4. the disclosure history --------------------------------------------------------------


def test_every_disclosure_change_is_a_dated_entry_shown_newest_first(app):
    campaign_id = launch(app, publish=False)
    member(app, CO, "Pia Petitioner")
    olga = log_in(app, OWNER)

    def history() -> list[str]:
        return history_entries(olga.get(f"/campaigns/{campaign_id}").text)

    assert history() == []
    steps: list[tuple[str, str]] = []

    def step(path: str, data: dict, expected: str, client=olga) -> None:
        response = organise(client, campaign_id, path, data)
        assert response.status_code == 302, path
        steps.append((path, expected))
        shown = history()
        assert len(shown) == len(steps), path
        assert expected in text_of(shown[0]), (expected, text_of(shown[0]))

    step(
        "funding",
        {"funding": "volunteer"},
        "Volunteer-run, no funding. Olga Organiser: not yet declared.",
    )
    step(
        "affiliation",
        {"company": ""},
        "Olga Organiser: no paid relationship with a sharing-economy company.",
    )
    step(
        "funders",
        {"name": "Tenants Fund", "kind": "foundation", "amount_band": "1k-10k"},
        "Funded by: Tenants Fund (Foundation, €1,000 to €10,000).",
    )
    step(
        "funders",
        {"name": "QuickStay Ltd", "kind": "company", "amount_band": "under-1k"},
        "Funded by: Tenants Fund (Foundation, €1,000 to €10,000); "
        "QuickStay Ltd (Company, Under €1,000).",
    )
    with app.app_context():
        quickstay = db.session.scalar(select(Funder.id).where(Funder.name == "QuickStay Ltd"))
    step(
        f"funders/{quickstay}/remove",
        {},
        "Funded by: Tenants Fund (Foundation, €1,000 to €10,000). Olga",
    )
    # An invitation changes nothing in the disclosure; accepting it does.
    assert organise(olga, campaign_id, "organisers", {"email": CO}).status_code == 302
    assert len(history()) == len(steps)
    pia = log_in(app, CO)
    with app.app_context():
        invitation_id = db.session.scalar(select(CampaignInvitation.id))
    assert answer(pia, f"/campaigns/invitations/{invitation_id}", "accept").status_code == 302
    steps.append(("accept", "Pia Petitioner: not yet declared."))
    assert "Pia Petitioner: not yet declared." in text_of(history()[0])
    step(
        "affiliation",
        {"company": "HostAway", "topic": "home-sharing", "details": "Paid consultant."},
        "Pia Petitioner: paid relationship with HostAway (Home sharing): Paid consultant.",
        client=pia,
    )
    with app.app_context():
        pia_row = db.session.scalar(
            select(CampaignOrganiser.id).where(CampaignOrganiser.is_owner.is_(False))
        )
    step(f"organisers/{pia_row}/remove", {}, "Olga Organiser: no paid relationship")
    assert organise(olga, campaign_id, "publish", {}).status_code == 302

    # The public sees the same history, newest first, each entry dated.
    page = public_page(app, campaign_id).text
    card = disclosure_card(page)
    assert "History of this disclosure (8 changes)" in card
    shown = history_entries(page)
    assert [text_of(e) for e in shown] == [text_of(e) for e in history()]
    for entry, (_, expected) in zip(shown, reversed(steps), strict=True):
        assert expected in text_of(entry)
    assert "Pia" not in text_of(shown[0]) and "QuickStay" not in text_of(shown[0])
    # Only the entry with company money carries the label; the label left with the funder.
    badged = [i for i, e in enumerate(shown) if "Industry-backed" in e]
    assert badged == [4]
    assert 'class="industry-label"' not in card
    stamps = [
        datetime.fromisoformat(re.search(r'<time datetime="([^"]+)">', e).group(1)) for e in shown
    ]
    assert stamps == sorted(stamps, reverse=True)
    today = stamps[0].strftime("%-d %B %Y")
    assert all(today in text_of(e) for e in shown)


def test_unchanged_pages_add_no_history(app):
    campaign_id = launch(app)
    maker_id = first_maker(app, campaign_id)
    before = snapshot(app, campaign_id)["history"]
    olga = log_in(app, OWNER)
    posts = organiser_posts(maker_id)
    for what in ["change a stance", "change the status", "post an update", "add a decision-maker"]:
        path, data = posts[what]
        assert organise(olga, campaign_id, path, data).status_code == 302, what
    assert snapshot(app, campaign_id)["history"] == before


# --- 5. followers and updates ------------------------------------------------------------------


def confirm_link(outbox, email: str) -> str:
    message = outbox.last_to(email)
    assert message["Subject"].startswith("Confirm you follow")
    return path_of(next(link for link in links_in(message) if link.endswith("/confirm")))


def guest_follows(app, campaign_id: int, name: str, email: str):
    client = app.test_client()
    url = f"/campaigns/{campaign_id}"
    response = submit(client, url, {"name": name, "email": email}, action=f"{url}/follow")
    assert response.status_code == 302, response.status_code
    return client


def followers_shown(page_html: str) -> str:
    section = page_html.split('id="follow-heading"', 1)[1].split("</p>", 1)[0]
    return text_of(section.split("</h2>", 1)[1])


def test_members_follow_in_one_click(app):
    campaign_id = launch(app)
    member(app, "ana@example.org", "Ana")
    ana = log_in(app, "ana@example.org")
    page = ana.get(f"/campaigns/{campaign_id}")
    assert 'name="email"' not in page.text.split('id="follow-heading"', 1)[1]
    assert followers_shown(page.text) == "0 people follow this campaign."
    for _ in range(2):  # a second click changes nothing
        response = post_with_token(ana, f"/campaigns/{campaign_id}/follow")
        assert response.status_code == 302
    page = ana.get(f"/campaigns/{campaign_id}").text
    assert followers_shown(page) == "1 person follows this campaign."
    assert "Stop following" in page
    assert post_with_token(ana, f"/campaigns/{campaign_id}/unfollow").status_code == 302
    assert followers_shown(public_page(app, campaign_id).text) == "0 people follow this campaign."


def test_guests_follow_once_they_confirm_by_post(app, outbox, run_jobs):
    campaign_id = launch(app)
    client = guest_follows(app, campaign_id, "Rui Costa", "rui@example.org")
    run_jobs()
    link = confirm_link(outbox, "rui@example.org")
    assert followers_shown(public_page(app, campaign_id).text) == "0 people follow this campaign."

    # Opening the emailed link (or a mail scanner fetching it) confirms nothing.
    opened = client.get(link)
    assert opened.status_code == 200 and "Confirm I follow" in opened.text
    with app.app_context():
        assert db.session.scalar(select(Follower.confirmed_at)) is None
    assert followers_shown(public_page(app, campaign_id).text) == "0 people follow this campaign."

    confirmed = submit(client, link, {})
    assert confirmed.status_code == 302
    assert confirmed.headers["Location"].endswith(f"/campaigns/{campaign_id}")
    assert followers_shown(public_page(app, campaign_id).text) == "1 person follows this campaign."
    assert client.get("/campaigns/follows/forged/confirm").status_code == 404


def test_a_follow_link_signed_before_its_row_was_made_confirms_nothing(app, outbox, run_jobs):
    """A row's id may be used again after the row goes; the old link then names another."""
    campaign_id = launch(app)
    client = guest_follows(app, campaign_id, "Eve", "eve@example.org")
    run_jobs()
    old_link = confirm_link(outbox, "eve@example.org")
    with app.app_context():
        eve = db.session.scalar(select(Follower))
        eve_id = eve.id
        db.session.delete(eve)
        db.session.commit()
        later = utcnow() + timedelta(minutes=1)  # Vera asks after Eve's link went out
        vera = Follower(
            id=eve_id, campaign_id=campaign_id, name="Vera", email="vera@example.org",
            email_key="vera@example.org", confirmation_sent_at=later, created_at=later,
        )  # fmt: skip
        db.session.add(vera)
        db.session.commit()
    assert client.get(old_link).status_code == 404
    token = csrf_token(client.get(f"/campaigns/{campaign_id}").text)
    assert client.post(old_link, data={"csrf_token": token}).status_code == 404
    with app.app_context():
        assert db.session.scalar(select(Follower.confirmed_at)) is None


def test_an_update_reaches_each_confirmed_follower_once(app, outbox, run_jobs):
    campaign_id = launch(app)
    member(app, "ana@example.org", "Ana")
    ana = log_in(app, "ana@example.org")
    assert post_with_token(ana, f"/campaigns/{campaign_id}/follow").status_code == 302
    rui = guest_follows(app, campaign_id, "Rui Costa", "rui@example.org")
    guest_follows(app, campaign_id, "Pending Person", "pending@example.org")
    run_jobs()
    submit(rui, confirm_link(outbox, "rui@example.org"), {})
    assert followers_shown(public_page(app, campaign_id).text) == "2 people follow this campaign."
    outbox.clear()

    olga = log_in(app, OWNER)
    response = organise(
        olga,
        campaign_id,
        "updates",
        {"title": "We met the mayor", "body": "She listened for **an hour** and took notes."},
    )
    assert response.status_code == 302
    with app.app_context():
        notification = db.session.scalar(
            select(Notification).where(Notification.kind == "campaign_update")
        )
        notification_id = notification.id
        # A retry of the fan-out before anything was delivered: still one email each.
        notification_jobs.fan_out(notification_id)
    run_jobs()
    assert sorted(m["To"] for m in outbox.messages()) == ["ana@example.org", "rui@example.org"]
    message = outbox.last_to("rui@example.org")
    assert message["Subject"] == "We met the mayor (Keep Alfama lived in)"
    assert f"/campaigns/{campaign_id}" in " ".join(links_in(message))

    with app.app_context():
        notification_jobs.fan_out(notification_id)  # and once more after delivery
    run_jobs()
    assert len(outbox.messages()) == 2
    page = public_page(app, campaign_id).text
    timeline = page.split('id="timeline-heading"', 1)[1]
    assert "We met the mayor" in timeline and "<strong>an hour</strong>" in timeline


def test_a_member_follows_in_one_click_even_after_an_unconfirmed_guest_follow(
    app, outbox, run_jobs
):
    campaign_id = launch(app)
    member(app, "ana@example.org", "Ana")
    guest_follows(app, campaign_id, "Ana", "ana@example.org")  # never confirmed
    ana = log_in(app, "ana@example.org")
    assert post_with_token(ana, f"/campaigns/{campaign_id}/follow").status_code == 302
    assert followers_shown(public_page(app, campaign_id).text) == "1 person follows this campaign."


# --- 6. the city page ------------------------------------------------------------------------


def test_the_city_page_gathers_chapters_campaigns_petitions_and_meetups_of_that_city(app, client):
    launch(app, title="Keep Alfama lived in")
    launch(app, title="Porto homes for residents", city="Porto")
    launch(app, title="Unpublished Lisbon idea", publish=False)
    with app.app_context():
        olga = member_by_email(OWNER)
        factories.make_petition(olga, title="Fair pay for Lisbon couriers")
        factories.make_petition(olga, title="Draft Lisbon petition", publish=False)
        closed = factories.make_petition(olga, title="Closed Lisbon petition")
        petition_services.close(closed)
        factories.make_petition(olga, title="Fair pay for Porto couriers", city="Porto")
        lisbon = factories.make_chapter(olga, name="Lisbon Hosts and Riders")
        factories.make_meetup(lisbon, olga, title="Alfama planning night")
        cancelled = factories.make_meetup(lisbon, olga, title="Cancelled Lisbon picnic")
        chapter_services.cancel_meetup(cancelled)
        porto = factories.make_chapter(olga, name="Porto Riders", city="Porto")
        factories.make_meetup(porto, olga, title="Porto riders' assembly")

    page = client.get("/cities/lisbon")
    assert page.status_code == 200

    def section(heading_id: str) -> str:
        return page.text.split(f'id="{heading_id}"', 1)[1].split("</section>", 1)[0]

    assert listed(page.text) == ["Keep Alfama lived in"]
    assert "Keep Alfama lived in" in section("campaigns-campaigns")
    assert "Fair pay for Lisbon couriers" in section("city-petitions-heading")
    assert "Lisbon Hosts and Riders" in section("city-chapters-heading")
    assert "Alfama planning night" in section("city-meetups-heading")
    for elsewhere in [
        "Porto homes for residents",
        "Unpublished Lisbon idea",
        "Draft Lisbon petition",
        "Closed Lisbon petition",
        "Fair pay for Porto couriers",
        "Porto Riders",
        "Porto riders&#39; assembly",
        "Cancelled Lisbon picnic",
    ]:
        assert elsewhere not in page.text, elsewhere

    porto_page = client.get("/cities/porto").text
    for here in ["Porto homes for residents", "Fair pay for Porto couriers", "Porto Riders"]:
        assert here in porto_page, here
    assert "Porto riders&#39; assembly" in porto_page
    assert "Keep Alfama lived in" not in porto_page and "Alfama planning night" not in porto_page

    redirect = client.get("/cities/Lisbon")
    assert redirect.status_code == 301
    assert redirect.headers["Location"].endswith("/cities/lisbon")
    assert "Nothing here yet" in client.get("/cities/faro").text


def test_the_campaign_page_links_to_its_city(app, client):
    campaign_id = launch(app, title="Sao Paulo riders' rest stops", city="São Paulo")
    assert 'href="/cities/sao-paulo"' in client.get(f"/campaigns/{campaign_id}").text
    assert "Sao Paulo riders&#39; rest stops" in client.get("/cities/sao-paulo").text


# --- 7. bad input --------------------------------------------------------------------------------


def new_campaign_form(**changes) -> dict:
    return {
        **details_form(title="Minimum pay per delivery", city="Berlin", topic="delivery"),
        "name": "Senate Department for Labour",
        "role": "Ministry",
        "body": "Berlin Senate",
        **changes,
    }


def test_a_member_launches_a_campaign_as_an_unpublished_draft(app, client, auth):
    auth.member()
    response = submit(client, "/campaigns/new", new_campaign_form())
    assert response.status_code == 302
    with app.app_context():
        campaign = db.session.scalar(select(Campaign))
        assert campaign.city_slug == "berlin" and campaign.published_at is None
        assert campaign.owner.member.email == "ana@example.org"
        assert [(m.name, m.stance) for m in campaign.decision_makers] == [
            ("Senate Department for Labour", "unknown")
        ]
        campaign_id = campaign.id
    assert response.headers["Location"].endswith(f"/campaigns/{campaign_id}/manage")
    assert public_page(app, campaign_id).status_code == 404


def test_the_launch_form_sent_twice_makes_one_campaign(app, client, auth):
    """A double click, or a resend after a slow answer, leads to the first campaign; the
    form sent again with a change is a campaign of its own."""
    auth.member()
    first = submit(client, "/campaigns/new", new_campaign_form())
    again = submit(client, "/campaigns/new", new_campaign_form())
    assert first.status_code == again.status_code == 302
    assert first.headers["Location"] == again.headers["Location"]
    changed = submit(client, "/campaigns/new", new_campaign_form(title="Minimum pay in Hamburg"))
    assert changed.headers["Location"] != first.headers["Location"]
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Campaign)) == 2


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"title": "Too short"}, "title", "Title must be 10 to 150 characters long."),
        ({"summary": ""}, "summary", "Please fill in summary."),
        ({"change_wanted": "Fix it."}, "change_wanted", "must be 30 to 5000 characters"),
        ({"city": ""}, "city", "Please fill in city or region."),
        ({"topic": "crypto"}, "topic", "Not a valid choice"),
        ({"name": ""}, "name", "Please fill in decision-maker."),
        ({"role": "x"}, "role", "Role must be 2 to 150 characters long."),
        ({"body": "x" * 151}, "body", "Body must be 2 to 150 characters long."),
        ({"title": "Minimum pay\x00 per delivery"}, "title", "unusual characters"),
    ],
)
def test_the_launch_form_refuses_bad_input(app, client, auth, change, field, message):
    auth.member()
    response = submit(client, "/campaigns/new", new_campaign_form(**change))
    assert response.status_code == 422
    assert message in field_error(response.text, field)
    assert 'value="Berlin Senate"' in response.text or field == "body"
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Campaign)) == 0


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"email": "rui at example"}, "email", "Please enter a valid email address"),
        ({"email": ""}, "email", "Please enter your email address."),
        ({"name": ""}, "name", "Please fill in your name."),
    ],
)
def test_the_follow_form_refuses_bad_input(app, client, outbox, run_jobs, change, field, message):
    campaign_id = launch(app)
    url = f"/campaigns/{campaign_id}"
    data = {"name": "Rui Costa", "email": "rui@example.org", **change}
    response = submit(client, url, data, action=f"{url}/follow")
    assert response.status_code == 422
    assert message in field_error(response.text, field)
    assert "<title>Error: Keep Alfama lived in · Groundswell</title>" in response.text
    run_jobs()
    assert outbox.messages() == []
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Follower)) == 0


# What organisers might send wrong: (draft or published campaign, route, data, the field the
# message belongs beside or None for a message about the whole form, the message, or None
# where the page has nowhere to show it yet: see test_refused_button_actions_say_why).
# "{maker}" is the campaign's first decision-maker; "{foreign}" one of another campaign;
# "{owner}" the owner's organiser row.
BAD_LINKS = [
    "not a link",
    "example.org/minutes",
    "javascript://example.org/%0aalert(1)",
    "ftp://example.org/minutes",
    "https://" + "x" * 500 + ".org",
]
REFUSED = {
    "funder without a name": (
        "draft",
        "funders",
        {"name": "", "kind": "foundation", "amount_band": "1k-10k"},
        "name",
        "Please fill in funder&#39;s name.",
    ),
    "funder of an unknown kind": (
        "draft",
        "funders",
        {"name": "Tenants Fund", "kind": "crypto", "amount_band": "1k-10k"},
        "kind",
        "Not a valid choice",
    ),
    "funder with an unknown amount": (
        "draft",
        "funders",
        {"name": "Tenants Fund", "kind": "foundation", "amount_band": "millions"},
        "amount_band",
        "Not a valid choice",
    ),
    "funding left unanswered": ("draft", "funding", {}, "funding", "Please choose one."),
    "a company without its field": (
        "draft",
        "affiliation",
        {"company": "QuickBite", "topic": "", "details": "I deliver for it."},
        "topic",
        "Please choose the company&#39;s field.",
    ),
    "a company without how they pay": (
        "draft",
        "affiliation",
        {"company": "QuickBite", "topic": "delivery", "details": ""},
        "details",
        "Please say how you are paid.",
    ),
    "a company in an unknown field": (
        "draft",
        "affiliation",
        {"company": "QuickBite", "topic": "crypto", "details": "I deliver for it."},
        "topic",
        "Not a valid choice",
    ),
    "a company name too long": (
        "draft",
        "affiliation",
        {"company": "Q" * 101, "topic": "delivery", "details": "I deliver for it."},
        "company",
        "Company can be at most 100 characters.",
    ),
    **{
        f"stance source {link[:30]!r}": (
            "published",
            "decision-makers/{maker}/stance",
            stance_data("maker", note="She backed the cap.", source_url=link),
            "maker-{maker}-source_url",
            "Please give a full link, starting with https://."
            if len(link) < 500
            else "A link can be at most 500 characters.",
        )
        for link in BAD_LINKS
    },
    "stance with a short note": (
        "published",
        "decision-makers/{maker}/stance",
        stance_data("maker", note="ok"),
        "maker-{maker}-note",
        "Note must be 5 to 1000 characters long.",
    ),
    "an unknown stance": (
        "published",
        "decision-makers/{maker}/stance",
        stance_data("maker", stance="furious"),
        "maker-{maker}-stance",
        "Not a valid choice",
    ),
    "the status it already has": (
        "published",
        "status",
        {"status": "active", "note": "Still going strong."},
        None,
        "The campaign is already active.",
    ),
    "an unknown status": (
        "published",
        "status",
        {"status": "forgotten", "note": "Whatever happened."},
        "status",
        "Not a valid choice",
    ),
    "a status without a real note": (
        "published",
        "status",
        {"status": "won", "note": "Yes"},
        "note",
        "Note must be 5 to 1000 characters long.",
    ),
    "an update too short": (
        "published",
        "updates",
        {"title": "News", "body": "Too short."},
        "body",
        "Update must be 20 to 5000 characters long.",
    ),
    "an update before publishing": (
        "draft",
        "updates",
        {"title": "We met the mayor", "body": "She listened for an hour and took notes."},
        None,
        "Publish the campaign before posting updates.",
    ),
    "publishing twice": ("published", "publish", {}, None, None),
    "details with a short title": (
        "published",
        "details",
        details_form(title="Too short"),
        "title",
        "Title must be 10 to 150 characters long.",
    ),
    "details without a token": (
        "published",
        "details",
        {**details_form(title="A quite different campaign title"), "csrf_token": "forged"},
        None,
        "This form expired",
    ),
    "a decision-maker without a name": (
        "published",
        "decision-makers",
        {"name": "", "role": "Mayor", "body": "Lisbon City Council"},
        "name",
        "Please fill in decision-maker.",
    ),
    "a co-organiser with a bad address": (
        "published",
        "organisers",
        {"email": "pia at example"},
        "email",
        "Please enter a valid email address",
    ),
    "removing the owner": (
        "published",
        "organisers/{owner}/remove",
        {},
        None,
        None,
    ),
    "removing a funder that is not listed": (
        "published",
        "funders/99999/remove",
        {},
        None,
        None,
    ),
}


def send_refused(app, case: str):
    """Send one REFUSED case as the owner: the response, the field id, the message, and
    both campaigns as they were before and after."""
    state, path, data, field, message = REFUSED[case]
    campaign_id = launch(app, publish=state == "published")
    other_id = launch(app, title="Porto homes for residents", city="Porto")
    with app.app_context():
        owner = db.session.get(Campaign, campaign_id).owner.id
    ids = {
        "maker": first_maker(app, campaign_id),
        "foreign": first_maker(app, other_id),
        "owner": owner,
    }
    before = [snapshot(app, campaign_id), snapshot(app, other_id)]
    response = organise(
        log_in(app, OWNER),
        campaign_id,
        path.format(**ids),
        {key.format(**ids): value for key, value in data.items()},
    )
    after = [snapshot(app, campaign_id), snapshot(app, other_id)]
    field_id = field and prefixed(path, field.format(**ids))
    return response, field_id, message, before, after


def test_the_stance_of_another_campaigns_decision_maker_is_not_found(app):
    campaign_id = launch(app, publish=True)
    other_id = launch(app, title="Porto homes for residents", city="Porto")
    foreign = first_maker(app, other_id)
    before = snapshot(app, other_id)
    response = organise(
        log_in(app, OWNER),
        campaign_id,
        f"decision-makers/{foreign}/stance",
        {key.format(foreign=foreign): value for key, value in stance_data("foreign").items()},
    )
    assert response.status_code == 404
    assert snapshot(app, other_id) == before


@pytest.mark.parametrize("case", list(REFUSED))
def test_bad_input_on_organiser_forms_stores_nothing(app, outbox, run_jobs, case):
    response, _, _, before, after = send_refused(app, case)
    assert response.status_code != 302  # 422 once the manage page renders (see below)
    assert after == before
    run_jobs()
    assert outbox.messages() == []


@pytest.mark.parametrize("case", list(REFUSED))
def test_bad_input_on_organiser_forms_is_refused_beside_the_field(app, case):
    response, field, message, _, _ = send_refused(app, case)
    assert response.status_code == 422
    assert "<title>Error: Organise: Keep Alfama lived in · Groundswell</title>" in response.text
    if field:
        assert message in field_error(response.text, field)
    elif message:
        assert message in error_summary(response.text)


def error_summary(page_html: str) -> str:
    assert 'class="error-summary"' in page_html, "no error summary on the page"
    return text_of(page_html.split('class="error-summary"', 1)[1].split("</div>", 1)[0])


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("organisers/{owner}/remove", "The owner cannot be removed."),
        ("funders/99999/remove", "That funder is not listed."),
        ("publish", "This campaign is already published."),
    ],
)
def test_refused_button_actions_say_why(app, path, message):
    campaign_id = launch(app)
    with app.app_context():
        owner = db.session.get(Campaign, campaign_id).owner.id
    olga = log_in(app, OWNER)
    response = organise(olga, campaign_id, path.format(owner=owner), {})
    assert response.status_code == 422
    assert message in error_summary(response.text)
    assert "<title>Error: " in response.text  # the refusal came from the service


# --- 8. the decision-maker tracker ---------------------------------------------------------------


def test_stances_are_tracked_with_dated_notes_sources_and_history(app):
    campaign_id = launch(app)
    maker_id = first_maker(app, campaign_id)
    olga = log_in(app, OWNER)
    path = f"decision-makers/{maker_id}/stance"
    first = stance_form(
        maker_id,
        stance="undecided",
        note="Said at the assembly she is listening.",
        source_url="https://example.org/assembly",
    )
    assert organise(olga, campaign_id, path, first).status_code == 302
    second = stance_form(maker_id, note="Voted for the cap in committee.", source_url="")
    assert organise(olga, campaign_id, path, second).status_code == 302

    added = organise(
        olga,
        campaign_id,
        "decision-makers",
        {"name": "Rita Sousa", "role": "Mayor", "body": "Lisbon City Council"},
    )
    assert added.status_code == 302
    with app.app_context():
        rita = db.session.get(Campaign, campaign_id).decision_makers[1].id
    third = stance_form(rita, stance="opposes", note="Told the press she opposes any cap.")
    assert organise(olga, campaign_id, f"decision-makers/{rita}/stance", third).status_code == 302

    page = public_page(app, campaign_id).text
    filipa = maker_card(page, "Filipa Matos")
    assert "Councillor for housing, Lisbon City Council" in text_of(filipa)
    assert 'Stance: <strong class="stance stance-supports">Supports</strong>' in filipa
    entries = re.findall(r"<li>(.*?)</li>", filipa, re.S)
    assert len(entries) == 2
    assert "Supports. Voted for the cap in committee." in text_of(entries[0])
    assert "source" not in text_of(entries[0])  # no link given
    assert "Undecided. Said at the assembly she is listening." in text_of(entries[1])
    assert 'href="https://example.org/assembly"' in entries[1]
    today = datetime.now().strftime("%-d %B %Y")
    assert all(re.search(r'<time datetime="[^"]+">' + today + "</time>", e) for e in entries)

    rita_card = maker_card(page, "Rita Sousa")
    assert 'class="stance stance-opposes">Opposes</strong>' in rita_card
    assert "Told the press she opposes any cap." in rita_card
    assert "Voted for the cap" not in rita_card


# --- 9. status ---------------------------------------------------------------------------------


def test_status_changes_carry_a_note_and_are_kept(app):
    campaign_id = launch(app)
    olga = log_in(app, OWNER)
    paused = {"status": "paused", "note": "Pausing over the summer holidays."}
    assert organise(olga, campaign_id, "status", paused).status_code == 302
    won = {"status": "won", "note": "The council adopted the cap on 3 March."}
    assert organise(olga, campaign_id, "status", won).status_code == 302

    page = public_page(app, campaign_id).text
    assert '<span class="badge">Won</span>' in page
    assert "Won: The council adopted the cap on 3 March." in text_of(page)
    history = page.split("<h3>Status changes</h3>", 1)[1].split("</ol>", 1)[0]
    entries = [text_of(e) for e in re.findall(r"<li>(.*?)</li>", history, re.S)]
    assert len(entries) == 2
    assert entries[0].endswith("Won. The council adopted the cap on 3 March.")
    assert entries[1].endswith("Paused. Pausing over the summer holidays.")
    assert listed(app.test_client().get("/campaigns?status=won").text) == ["Keep Alfama lived in"]
    assert listed(app.test_client().get("/campaigns?status=active").text) == []


# --- 10. linked work ---------------------------------------------------------------------------


def test_petitions_are_attached_by_their_organisers_and_listed_with_counts(app):
    campaign_id = launch(app)
    member(app, CO, "Pia Petitioner")
    member(app, OTHER, "Rui Outsider")
    with app.app_context():
        pia = member_by_email(CO)
        petition = factories.make_petition(pia, title="Cap holiday lets in Alfama", goal=100)
        add_signatures(petition, 3)
        petition_services.tally(petition.id)
        pias_petition = petition.id
        another = factories.make_petition(pia, title="Register every holiday let").id
        draft = factories.make_petition(pia, title="A draft petition here", publish=False).id

    def attach(client, target_id):
        url = f"/campaigns/{campaign_id}"
        data = {"kind": "petition", "target_id": str(target_id)}
        return submit(client, url, data, action=f"{url}/links")

    rui = log_in(app, OTHER)
    refused = attach(rui, another)
    assert refused.status_code == 422
    assert "Only the organisers of the campaign or of the petition can attach it." in text_of(
        refused.text
    )
    for missing in [99999, draft]:
        response = attach(rui, missing)
        assert response.status_code == 422
        assert "There is no public petition with that number." in response.text
    not_a_number = attach(rui, "twelve")
    assert not_a_number.status_code == 422
    assert "Please enter" in field_error(not_a_number.text, "target_id")

    pia_client = log_in(app, CO)
    attached = attach(pia_client, pias_petition)
    assert attached.status_code == 302
    twice = attach(pia_client, pias_petition)
    assert twice.status_code == 422 and "already attached" in twice.text
    # The campaign's own organiser may attach someone else's petition too.
    assert attach(log_in(app, OWNER), another).status_code == 302
    with app.app_context():
        links = db.session.scalars(select(LinkedWork.target_id).order_by(LinkedWork.id)).all()
        assert links == [pias_petition, another]

    page = public_page(app, campaign_id).text
    section = page.split('<h2 id="linked-heading">', 1)[1].split("</section>", 1)[0]
    items = [text_of(i) for i in re.findall(r"<li>(.*?)</li>", section, re.S)]
    today = datetime.now().strftime("%-d %B %Y")
    assert items == [
        f"Cap holiday lets in Alfama: 3 of 100 signatures · open, {today}",
        f"Register every holiday let: 0 of 100 signatures · open, {today}",
    ]
    assert f'href="/petitions/{pias_petition}"' in section


# --- 11. the listing -------------------------------------------------------------------------


def test_the_listing_filters_and_never_shows_unpublished_campaigns(app, client):
    launch(app, title="Keep Alfama lived in")
    launch(
        app,
        title="Minimum pay per delivery in Berlin",
        summary="Couriers ask the Senate for pay that covers waiting time at restaurants.",
        change_wanted="A minimum payment per delivery, counting the minutes spent at counters.",
        city="Berlin",
        topic="delivery",
    )
    won = launch(app, title="Shelters for Lisbon couriers", topic="delivery")
    paused = launch(app, title="Fair fares for Porto drivers", city="Porto", topic="ride-hailing")
    launch(app, title="Unpublished Alfama plan", publish=False)
    with app.app_context():
        campaign_services.change_status(
            db.session.get(Campaign, won), Status.WON, "The shelters open in May."
        )
        campaign_services.change_status(
            db.session.get(Campaign, paused), Status.PAUSED, "Waiting for the new council."
        )

    def titles(**query) -> list[str]:
        response = client.get("/campaigns", query_string=query)
        assert response.status_code == 200
        return sorted(listed(response.text))

    assert titles() == [
        "Fair fares for Porto drivers",
        "Keep Alfama lived in",
        "Minimum pay per delivery in Berlin",
        "Shelters for Lisbon couriers",
    ]
    assert titles(city="lisbon") == ["Keep Alfama lived in", "Shelters for Lisbon couriers"]
    assert titles(city="Lisbon") == titles(city="lisbon")
    assert titles(topic="delivery") == [
        "Minimum pay per delivery in Berlin",
        "Shelters for Lisbon couriers",
    ]
    assert titles(status="won") == ["Shelters for Lisbon couriers"]
    assert titles(status="paused") == ["Fair fares for Porto drivers"]
    assert titles(city="Lisbon", topic="delivery", status="won") == ["Shelters for Lisbon couriers"]
    assert titles(city="Lisbon", status="paused") == []
    assert titles(q="alfama") == ["Keep Alfama lived in"]
    assert titles(q="WAITING TIME") == ["Minimum pay per delivery in Berlin"]  # the summary
    assert titles(q="minutes spent") == ["Minimum pay per delivery in Berlin"]  # change wanted
    assert titles(q="100%") == []
    assert "1 campaign found." in client.get("/campaigns?q=alfama").text

    # Not even its organiser finds an unpublished campaign in the listing.
    olga = log_in(app, OWNER)
    assert "Unpublished Alfama plan" not in olga.get("/campaigns?q=unpublished").text
    assert "0 campaigns found." in olga.get("/campaigns?q=unpublished").text


# --- 12. who owns an address ------------------------------------------------------------------


def unconfirmed_member(app: Flask, email: str, name: str) -> int:
    """An account that never confirmed its address (anyone can register with any address)."""
    with app.app_context():
        found = make_member(email, name)
        found.email_confirmed_at = None
        db.session.commit()
        return found.id


def follower_rows(app: Flask) -> list[tuple]:
    with app.app_context():
        return [
            (f.member_id, f.email, f.confirmed_at is not None)
            for f in db.session.scalars(select(Follower).order_by(Follower.id))
        ]


def test_an_unconfirmed_member_follows_like_a_guest(app, outbox, run_jobs):
    campaign_id = launch(app)
    unconfirmed_member(app, "ana@example.org", "Ana")
    ana = log_in(app, "ana@example.org")
    page = ana.get(f"/campaigns/{campaign_id}").text
    assert "We send a link to ana@example.org to confirm." in page

    response = post_with_token(ana, f"/campaigns/{campaign_id}/follow")
    assert response.status_code == 302
    assert followers_shown(public_page(app, campaign_id).text) == "0 people follow this campaign."
    assert follower_rows(app) == [(None, "ana@example.org", False)]
    with app.app_context(), pytest.raises(campaign_services.CampaignError):
        campaign_services.follow_as_member(
            db.session.get(Campaign, campaign_id), member_by_email("ana@example.org")
        )

    run_jobs()
    submit(app.test_client(), confirm_link(outbox, "ana@example.org"), {})
    assert followers_shown(public_page(app, campaign_id).text) == "1 person follows this campaign."


def test_an_unconfirmed_account_does_not_confirm_a_guest_follow_of_its_address(
    app, outbox, run_jobs
):
    campaign_id = launch(app)
    owner_of_address = guest_follows(app, campaign_id, "Ana", "ana@example.org")  # pending
    unconfirmed_member(app, "ana@example.org", "Impostor")
    impostor = log_in(app, "ana@example.org")
    assert post_with_token(impostor, f"/campaigns/{campaign_id}/follow").status_code == 302
    assert followers_shown(public_page(app, campaign_id).text) == "0 people follow this campaign."
    assert follower_rows(app) == [(None, "ana@example.org", False)]

    run_jobs()
    submit(owner_of_address, confirm_link(outbox, "ana@example.org"), {})
    assert followers_shown(public_page(app, campaign_id).text) == "1 person follows this campaign."


def test_an_unconfirmed_account_neither_sees_nor_stops_a_follow_of_its_address(
    app, outbox, run_jobs
):
    campaign_id = launch(app)
    owner_of_address = guest_follows(app, campaign_id, "Ana", "ana@example.org")
    run_jobs()
    submit(owner_of_address, confirm_link(outbox, "ana@example.org"), {})
    unconfirmed_member(app, "ana@example.org", "Impostor")
    impostor = log_in(app, "ana@example.org")

    page = impostor.get(f"/campaigns/{campaign_id}").text
    assert "Stop following" not in page and "Follow this campaign" in page
    assert post_with_token(impostor, f"/campaigns/{campaign_id}/unfollow").status_code == 302
    assert follower_rows(app) == [(None, "ana@example.org", True)]
    assert followers_shown(public_page(app, campaign_id).text) == "1 person follows this campaign."


def test_a_confirmed_member_owns_the_guest_follow_of_their_address(app, outbox, run_jobs):
    campaign_id = launch(app)
    guest = guest_follows(app, campaign_id, "Ana", "ana@example.org")
    run_jobs()
    submit(guest, confirm_link(outbox, "ana@example.org"), {})
    ana_id = member(app, "ana@example.org", "Ana")
    ana = log_in(app, "ana@example.org")
    assert "Stop following" in ana.get(f"/campaigns/{campaign_id}").text
    assert post_with_token(ana, f"/campaigns/{campaign_id}/follow").status_code == 302
    assert follower_rows(app) == [(ana_id, "ana@example.org", True)]
    assert post_with_token(ana, f"/campaigns/{campaign_id}/unfollow").status_code == 302
    assert follower_rows(app) == []


def test_an_unconfirmed_account_is_offered_an_invitation_only_once_it_confirms(
    app, outbox, run_jobs
):
    """Anyone can register any address, so an invitation made out to it is neither sent
    to nor shown to an account that has not proved it owns the address."""
    campaign_id = launch(app)
    unconfirmed_member(app, CO, "Pia Petitioner")
    before = snapshot(app, campaign_id)
    assert organise(log_in(app, OWNER), campaign_id, "organisers", {"email": CO}).status_code == 302
    run_jobs()
    assert outbox.messages() == []
    with app.app_context():
        invitation_id = db.session.scalar(select(CampaignInvitation.id))
    path = f"/campaigns/invitations/{invitation_id}"
    impostor = log_in(app, CO)
    assert "An invitation for you" not in impostor.get(f"/campaigns/{campaign_id}").text
    assert impostor.get(path).status_code == 404
    assert answer(impostor, path, "accept").status_code == 404
    assert snapshot(app, campaign_id) == before

    with app.app_context():
        member_by_email(CO).email_confirmed_at = utcnow()
        db.session.commit()
    pia = log_in(app, CO)
    assert "An invitation for you" in pia.get(f"/campaigns/{campaign_id}").text
    assert answer(pia, path, "accept").status_code == 302
    assert member(app, CO) in [o[0] for o in snapshot(app, campaign_id)["organisers"]]


# --- 13. limits on guest follows -------------------------------------------------------------


def follow_request(app, campaign_id: int, email: str, name: str = "Rui Costa"):
    url = f"/campaigns/{campaign_id}"
    return submit(app.test_client(), url, {"name": name, "email": email}, action=f"{url}/follow")


def test_a_pending_follow_gets_its_confirmation_again_at_most_every_ten_minutes(
    app, outbox, run_jobs
):
    campaign_id = launch(app)
    for _ in range(3):
        assert follow_request(app, campaign_id, "rui@example.org").status_code == 302
    run_jobs()
    assert len(outbox.to("rui@example.org")) == 1

    with app.app_context():
        pending = db.session.scalar(select(Follower))
        pending.confirmation_sent_at = utcnow() - timedelta(minutes=11)
        db.session.commit()
    assert follow_request(app, campaign_id, "rui@example.org").status_code == 302
    assert follow_request(app, campaign_id, "rui@example.org").status_code == 302
    run_jobs()
    assert len(outbox.to("rui@example.org")) == 2


def test_one_inbox_follows_once_however_its_address_is_spelt(app, outbox, run_jobs):
    """Gmail ignores dots and +tags: the three spellings are one inbox, so one follower,
    asked to confirm once, at the address first given."""
    campaign_id = launch(app)
    spellings = ["ana.silva@gmail.com", "AnaSilva@gmail.com", "ana.silva+news@googlemail.com"]
    for email in spellings:
        assert follow_request(app, campaign_id, email, name="Ana").status_code == 302
    run_jobs()
    assert [m["To"] for m in outbox.messages()] == ["ana.silva@gmail.com"]
    submit(app.test_client(), confirm_link(outbox, "ana.silva@gmail.com"), {})
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Follower)) == 1
    assert followers_shown(public_page(app, campaign_id).text) == "1 person follows this campaign."
    # Once confirmed, another spelling asks nothing more of the same inbox.
    assert follow_request(app, campaign_id, "anasilva+x@gmail.com").status_code == 302
    run_jobs()
    assert len(outbox.messages()) == 1


@pytest.mark.parametrize("limit", ["per email", "per address"])
def test_too_many_guest_follows_are_refused_with_429_and_no_mail(
    app, outbox, run_jobs, monkeypatch, limit
):
    campaign_id = launch(app)
    other_id = launch(app, title="Porto homes for residents", city="Porto")
    monkeypatch.setitem(app.config, "SIGN_LIMIT_PER_EMAIL", "2 per hour")
    monkeypatch.setitem(app.config, "SIGN_LIMIT_PER_ADDRESS", "3 per 10 minutes")
    if limit == "per email":  # one inbox, through several campaigns and spellings
        requests = [(campaign_id, "rui.costa@gmail.com"), (other_id, "RuiCosta+news@gmail.com")]
        refused_email = "r.u.i.costa+x@googlemail.com"
    else:  # one sender, many inboxes
        requests = [(campaign_id, f"person{n}@example.org") for n in range(3)]
        refused_email = "victim@example.org"
    for target, email in requests:
        assert follow_request(app, target, email).status_code == 302
    run_jobs()
    sent = len(outbox.messages())
    with app.app_context():
        rows = db.session.scalar(select(func.count()).select_from(Follower))

    refused = follow_request(app, campaign_id, refused_email, name="Rui Refused")
    assert refused.status_code == 429
    assert 0 < int(refused.headers["Retry-After"]) <= 3600
    assert "many requests to follow from you in a short time" in error_summary(refused.text)
    assert 'value="Rui Refused"' in refused.text  # the form is shown again, as sent
    run_jobs()
    assert len(outbox.messages()) == sent
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Follower)) == rows


# --- 14. the manage page's forms -----------------------------------------------------------


class FormsOnPage(HTMLParser):
    """Every element id of a page, and per form its action, fields, ids and labels."""

    def __init__(self, page_html: str) -> None:
        super().__init__()
        self.select: str | None = None
        self.textarea: str | None = None
        self.ids: list[str] = []
        self.forms: list[dict] = []
        self.feed(page_html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form":
            self.forms.append(
                {"action": attrs.get("action"), "ids": set(), "labels": [], "fields": {}}
            )
        if "id" in attrs:
            self.ids.append(attrs["id"])
            if self.forms:
                self.forms[-1]["ids"].add(attrs["id"])
        if tag == "label" and self.forms:
            self.forms[-1]["labels"].append(attrs.get("for"))
        if tag in ("input", "select", "textarea") and self.forms and "name" in attrs:
            # What a browser sends: checked radios only, a select's selected (or first) option.
            self.select = attrs["name"] if tag == "select" else None
            self.textarea = attrs["name"] if tag == "textarea" else None
            if attrs.get("type") != "radio" or "checked" in attrs:
                self.forms[-1]["fields"][attrs["name"]] = attrs.get("value") or ""
        if tag == "option" and self.select:
            fields = self.forms[-1]["fields"]
            if not fields[self.select] or "selected" in attrs:
                fields[self.select] = attrs.get("value") or ""

    def handle_data(self, data):
        if self.textarea:
            self.forms[-1]["fields"][self.textarea] += data

    def handle_endtag(self, tag):
        if tag == "textarea":
            self.textarea = None

    def described_by(self, page_html: str) -> list[str]:
        return [
            i for ids in re.findall(r'aria-describedby="([^"]+)"', page_html) for i in ids.split()
        ]

    def form(self, action: str) -> dict:
        return next(f for f in self.forms if f["action"] == action)


def assert_ids_are_unique_and_labels_match(page_html: str) -> FormsOnPage:
    parsed = FormsOnPage(page_html)
    duplicates = [i for i, n in Counter(parsed.ids).items() if n > 1]
    assert duplicates == []
    for form in parsed.forms:
        for target in form["labels"]:
            assert target in form["ids"], (form["action"], target)
    assert set(parsed.described_by(page_html)) <= set(parsed.ids)
    for link in re.findall(r'class="error-summary".*?</div>', page_html, re.S):
        for target in re.findall(r'href="#([^"]+)"', link):
            assert target in parsed.ids
    return parsed


def test_the_manage_page_has_unique_ids_and_each_label_names_a_field_of_its_own_form(app):
    campaign_id = launch(app)
    with_co_organiser(app, campaign_id)
    olga = log_in(app, OWNER)
    page = olga.get(f"/campaigns/{campaign_id}/manage")
    parsed = assert_ids_are_unique_and_labels_match(page.text)
    funder_form = parsed.form(f"/campaigns/{campaign_id}/funders")
    update_form = parsed.form(f"/campaigns/{campaign_id}/updates")
    assert {"funder-name", "funder-name-help"} & funder_form["ids"] == {"funder-name"}
    assert {"update-title", "update-body", "update-body-help"} <= update_form["ids"]

    # Refused forms come back with their messages beside their own fields.
    cases = {
        "funders": {"name": "", "kind": "foundation", "amount_band": "1k-10k"},
        "decision-makers": {"name": "", "role": "x", "body": ""},
        "updates": {"title": "", "body": "Too short."},
        "details": details_form(title="Too short", topic="crypto"),
        "affiliation": {"company": "QuickBite", "topic": "crypto", "details": ""},
    }
    for path, data in cases.items():
        refused = organise(olga, campaign_id, path, data)
        assert refused.status_code == 422, path
        assert_ids_are_unique_and_labels_match(refused.text)
    refused = organise(olga, campaign_id, "decision-makers", cases["decision-makers"])
    assert "Please fill in decision-maker." in field_error(refused.text, "new-maker-name")
    assert "new-maker-body-error" in refused.text and "update-body-error" not in refused.text


def test_the_manage_page_forms_work_as_rendered_without_javascript(app):
    campaign_id = launch(app)
    olga = log_in(app, OWNER)
    parsed = FormsOnPage(olga.get(f"/campaigns/{campaign_id}/manage").text)
    funder = parsed.form(f"/campaigns/{campaign_id}/funders")["fields"]
    funder.update({"funder-name": "Tenants Fund", "funder-kind": "foundation"})
    assert olga.post(f"/campaigns/{campaign_id}/funders", data=funder).status_code == 302
    details = parsed.form(f"/campaigns/{campaign_id}/details")["fields"]
    details["details-title"] = "A quite different campaign title"
    assert olga.post(f"/campaigns/{campaign_id}/details", data=details).status_code == 302
    update = parsed.form(f"/campaigns/{campaign_id}/updates")["fields"]
    update.update({"update-title": "We met the mayor", "update-body": "She listened an hour."})
    assert olga.post(f"/campaigns/{campaign_id}/updates", data=update).status_code == 302
    after = snapshot(app, campaign_id)
    assert after["funders"] == [("Tenants Fund", "foundation")]
    assert after["details"][0] == "A quite different campaign title"
    assert after["updates"] == 1


# --- 15. a public disclosure stays complete ----------------------------------------------------


def test_a_published_campaign_keeps_its_last_funder_until_its_funding_changes(app):
    campaign_id = launch(app)
    olga = log_in(app, OWNER)
    funder = {"name": "QuickStay Ltd", "kind": "company", "amount_band": "under-1k"}
    assert organise(olga, campaign_id, "funders", funder).status_code == 302
    with app.app_context():
        quickstay = db.session.scalar(select(Funder.id))
    before = snapshot(app, campaign_id)

    refused = organise(olga, campaign_id, f"funders/{quickstay}/remove", {})
    assert refused.status_code == 422
    assert "its last funder stays listed" in error_summary(refused.text)
    assert snapshot(app, campaign_id) == before
    assert "No funders listed yet" not in public_page(app, campaign_id).text

    # With a second funder listed, the first can go.
    union = {"name": "Couriers' Union", "kind": "union", "amount_band": "1k-10k"}
    assert organise(olga, campaign_id, "funders", union).status_code == 302
    assert organise(olga, campaign_id, f"funders/{quickstay}/remove", {}).status_code == 302
    assert snapshot(app, campaign_id)["funders"] == [("Couriers' Union", "union")]
    # Declaring it volunteer-run takes the funders off in one step.
    assert organise(olga, campaign_id, "funding", {"funding": "volunteer"}).status_code == 302
    after = snapshot(app, campaign_id)
    assert (after["funding"], after["funders"]) == ("volunteer", [])


def test_two_funders_removed_at_once_leave_one_listed(app):
    """Each removal reads the funders afresh under the campaign's lock, so the second
    sees that the first left only one, which a published campaign keeps."""
    campaign_id = launch(app)
    olga = log_in(app, OWNER)
    for name in ("QuickStay Ltd", "Couriers' Union"):
        funder = {"name": name, "kind": "union", "amount_band": "under-1k"}
        assert organise(olga, campaign_id, "funders", funder).status_code == 302
    with app.app_context():
        first, second = db.session.scalars(select(Funder.id).order_by(Funder.id)).all()
        campaign = db.session.get(Campaign, campaign_id)
        assert len(campaign.funders) == 2  # loaded before the other request removes one
        with app.app_context():
            other = db.session.get(Campaign, campaign_id)
            campaign_services.remove_funder(other, second)
        with pytest.raises(campaign_services.CampaignError, match="its last funder stays listed"):
            campaign_services.remove_funder(campaign, first)
    assert snapshot(app, campaign_id)["funders"] == [("QuickStay Ltd", "union")]


def test_a_draft_whose_last_funder_was_removed_meanwhile_is_not_published(app):
    """Publishing reads the funders afresh under the campaign's lock: a funder another
    organiser removed from the draft meanwhile leaves a disclosure that is incomplete."""
    campaign_id = launch(app, publish=False)
    olga = log_in(app, OWNER)
    funder = {"name": "Tenants Fund", "kind": "foundation", "amount_band": "1k-10k"}
    assert organise(olga, campaign_id, "funders", funder).status_code == 302
    assert organise(olga, campaign_id, "affiliation", {"company": ""}).status_code == 302
    with app.app_context():
        campaign = db.session.get(Campaign, campaign_id)
        assert campaign.disclosure_missing == []  # read before the other request
        with app.app_context():
            other = db.session.get(Campaign, campaign_id)
            campaign_services.remove_funder(other, other.funders[0].id)
        with pytest.raises(campaign_services.CampaignError, match="at least one funder"):
            campaign_services.publish(campaign)
    assert snapshot(app, campaign_id)["published"] is None
    assert public_page(app, campaign_id).status_code == 404


def test_a_published_volunteer_campaign_is_not_declared_funded_without_a_funder(app):
    campaign_id = launch(app)
    olga = log_in(app, OWNER)
    before = snapshot(app, campaign_id)
    refused = organise(olga, campaign_id, "funding", {"funding": "funded"})
    assert refused.status_code == 422
    assert "Add the campaign's first funder" in error_summary(refused.text)
    assert snapshot(app, campaign_id) == before
    assert "Volunteer-run, with no funding." in public_page(app, campaign_id).text


def test_a_co_organiser_added_to_a_published_campaign_declares_before_running_it(
    app, outbox, run_jobs
):
    campaign_id = launch(app)
    maker_id = first_maker(app, campaign_id)
    member(app, CO, "Pia Petitioner")
    olga = log_in(app, OWNER)
    assert organise(olga, campaign_id, "organisers", {"email": CO}).status_code == 302
    run_jobs()
    pia = log_in(app, CO)
    assert answer(pia, invitation_path(outbox, CO), "accept").status_code == 302
    card = text_of(disclosure_card(public_page(app, campaign_id).text))
    assert "Pia Petitioner: declaration pending: they take no part in running" in card

    assert "Please declare your ties to sharing-economy companies first" in text_of(
        pia.get(f"/campaigns/{campaign_id}/manage").text
    )
    before = snapshot(app, campaign_id)
    posts = organiser_posts(maker_id)
    for what in ["post an update", "edit details", "change a stance", "add a funder"]:
        path, data = posts[what]
        refused = organise(pia, campaign_id, path, data)
        assert refused.status_code == 422, what
        assert "Please declare your ties to sharing-economy companies first" in text_of(
            refused.text
        ), what
    assert snapshot(app, campaign_id) == before
    with app.app_context():
        olgas_petition = factories.make_petition(member_by_email(OWNER)).id
    attach = {"kind": "petition", "target_id": str(olgas_petition)}
    refused = post_with_token(pia, f"/campaigns/{campaign_id}/links", attach)
    assert refused.status_code == 422
    assert "Please declare your ties" in text_of(refused.text)
    with app.app_context():
        assert db.session.scalar(select(func.count(LinkedWork.id))) == 0

    declared = organise(pia, campaign_id, "affiliation", {"company": ""})
    assert declared.status_code == 302
    assert post_with_token(pia, f"/campaigns/{campaign_id}/links", attach).status_code == 302
    path, data = posts["post an update"]
    assert organise(pia, campaign_id, path, data).status_code == 302
    card = text_of(disclosure_card(public_page(app, campaign_id).text))
    assert "pending" not in card and "Pia Petitioner: none." in card
    # The owner, who declared, was never held up meanwhile.
    assert snapshot(app, campaign_id)["updates"] == 1


# --- 16. follows belong to members, not to an address ---------------------------------------


def test_a_members_follow_survives_a_change_of_email_address(app, outbox, run_jobs):
    campaign_id = launch(app)
    ana_id = member(app, "ana@example.org", "Ana")
    ana = log_in(app, "ana@example.org")
    assert post_with_token(ana, f"/campaigns/{campaign_id}/follow").status_code == 302
    with app.app_context():
        changed = db.session.get(Member, ana_id)
        changed.email, changed.email_confirmed_at = "ana.new@example.org", utcnow()
        db.session.commit()

    page = ana.get(f"/campaigns/{campaign_id}").text
    assert "Stop following" in page
    assert post_with_token(ana, f"/campaigns/{campaign_id}/follow").status_code == 302
    assert followers_shown(public_page(app, campaign_id).text) == "1 person follows this campaign."

    update = {"title": "We met the mayor", "body": "She listened for an hour and took notes."}
    assert organise(log_in(app, OWNER), campaign_id, "updates", update).status_code == 302
    run_jobs()
    assert [m["To"] for m in outbox.messages()] == ["ana.new@example.org"]

    assert post_with_token(ana, f"/campaigns/{campaign_id}/unfollow").status_code == 302
    assert followers_shown(public_page(app, campaign_id).text) == "0 people follow this campaign."
    assert follower_rows(app) == []


# --- 17. double submits ------------------------------------------------------------------------


def test_an_update_sent_twice_is_posted_and_emailed_once(app, outbox, run_jobs):
    campaign_id = launch(app)
    member(app, "ana@example.org", "Ana")
    assert post_with_token(log_in(app, "ana@example.org"), f"/campaigns/{campaign_id}/follow")
    olga = log_in(app, OWNER)
    update = {"title": "We met the mayor", "body": "She listened for an hour and took notes."}
    for _ in range(2):
        response = organise(olga, campaign_id, "updates", update)
        assert response.status_code == 302
    run_jobs()
    assert snapshot(app, campaign_id)["updates"] == 1
    assert len(outbox.to("ana@example.org")) == 1

    # Other news, or the same words well after, is posted.
    other = {**update, "body": "She listened for an hour and promised a vote."}
    assert organise(olga, campaign_id, "updates", other).status_code == 302
    with app.app_context():
        for news in db.session.scalars(select(CampaignUpdate)):
            news.created_at = utcnow() - timedelta(minutes=11)
        db.session.commit()
    assert organise(olga, campaign_id, "updates", update).status_code == 302
    run_jobs()
    assert snapshot(app, campaign_id)["updates"] == 3
    assert len(outbox.to("ana@example.org")) == 3


# --- 18. detaching linked work -------------------------------------------------------------


def test_organisers_detach_attached_work_and_no_one_else_can(app):
    campaign_id = launch(app)
    other_id = launch(app, title="Porto homes for residents", city="Porto")
    with_co_organiser(app, campaign_id)
    member(app, OTHER, "Rui Outsider")
    with app.app_context():
        rui = member_by_email(OTHER)
        petition = factories.make_petition(rui, title="Cap holiday lets in Alfama")
        for target in (campaign_id, other_id):
            campaign = db.session.get(Campaign, target)
            campaign_services.attach_work(campaign, "petition", petition.id, rui)
        mine, theirs = db.session.scalars(select(LinkedWork.id).order_by(LinkedWork.id)).all()

    detach = f"/campaigns/{campaign_id}/links/{mine}/detach"
    manage_page = log_in(app, OWNER).get(f"/campaigns/{campaign_id}/manage").text
    section = manage_page.split('id="attached-heading"', 1)[1].split("</section>", 1)[0]
    assert "Cap holiday lets in Alfama" in section and f'action="{detach}"' in section
    # Not even the petition's organiser, who attached it: detaching is the campaign's call.
    assert post_with_token(log_in(app, OTHER), detach).status_code == 403
    guest = app.test_client()
    to_login = guest.post(detach, data={"csrf_token": csrf_token(guest.get("/login").text)})
    assert to_login.status_code == 302 and "/login" in to_login.headers["Location"]
    refused = organise(log_in(app, OWNER), campaign_id, f"links/{theirs}/detach", {})
    assert refused.status_code == 422
    assert "That is not attached to this campaign." in error_summary(refused.text)
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(LinkedWork)) == 2

    assert post_with_token(log_in(app, CO), detach).status_code == 302
    with app.app_context():
        assert db.session.scalars(select(LinkedWork.id)).all() == [theirs]
    assert "Cap holiday lets in Alfama" not in public_page(app, campaign_id).text
    assert "Cap holiday lets in Alfama" in public_page(app, other_id).text


# --- 19. a member's data and the deletion of their account ----------------------------------


def download(client) -> dict:
    response = client.get("/account/data.json")
    assert response.status_code == 200
    return json.loads(response.text)


def delete_own_account(client) -> None:
    token = csrf_token(client.get("/account").text)
    response = client.post(
        "/account/delete",
        data={"csrf_token": token, "current_password": PASSWORD, "understood": "y"},
    )
    assert response.status_code == 302, response.status_code


def follower_addresses_and_names(app: Flask) -> set[str]:
    with app.app_context():
        rows = db.session.execute(select(Follower.email, Follower.name)).all()
    return {value.lower() for row in rows for value in row}


def test_a_members_data_lists_the_guest_follow_of_their_confirmed_address(app, outbox, run_jobs):
    """The follow a member made as a guest with their address counts as theirs, so their
    download lists it beside the follows they made signed in."""
    campaign_id = launch(app)
    other_id = launch(app, title="Keep the tram lines running")
    guest = guest_follows(app, campaign_id, "Ana Guest", "ana@example.org")
    run_jobs()
    submit(guest, confirm_link(outbox, "ana@example.org"), {})
    member(app, "ana@example.org", "Ana Lima")
    ana = log_in(app, "ana@example.org")
    assert post_with_token(ana, f"/campaigns/{other_id}/follow").status_code == 302

    followed = download(ana)["campaigns_followed"]
    assert [(f["campaign_id"], f["name"], f["email"], f["confirmed"]) for f in followed] == [
        (campaign_id, "Ana Guest", "ana@example.org", True),
        (other_id, "Ana Lima", "ana@example.org", True),
    ]


def test_an_unconfirmed_accounts_data_leaves_out_a_guest_follow_of_its_address(
    app, outbox, run_jobs
):
    """Anyone can register any address, so an unconfirmed account neither sees the guest
    follow made with it nor removes it by deleting itself."""
    campaign_id = launch(app)
    guest = guest_follows(app, campaign_id, "Ana Guest", "ana@example.org")
    run_jobs()
    submit(guest, confirm_link(outbox, "ana@example.org"), {})
    unconfirmed_member(app, "ana@example.org", "Not Ana")
    impostor = log_in(app, "ana@example.org")
    assert download(impostor)["campaigns_followed"] == []
    delete_own_account(impostor)
    assert follower_rows(app) == [(None, "ana@example.org", True)]


def test_deleting_an_account_removes_the_guest_follows_of_its_confirmed_address(
    app, outbox, run_jobs
):
    """After a member deletes their account no follower row holds their address or name,
    and a campaign update mails no one at that address."""
    campaign_id = launch(app)
    other_id = launch(app, title="Keep the tram lines running")
    third_id = launch(app, title="Shade for the bus stops")
    guest = guest_follows(app, campaign_id, "Ana Guest", "ana@example.org")
    guest_follows(app, third_id, "Ana G.", "ANA@example.org")  # never confirmed: still hers
    rui = guest_follows(app, campaign_id, "Rui Costa", "rui@example.org")
    run_jobs()
    submit(guest, confirm_link(outbox, "ana@example.org"), {})
    submit(rui, confirm_link(outbox, "rui@example.org"), {})
    member(app, "ana@example.org", "Ana Lima")
    ana = log_in(app, "ana@example.org")
    assert post_with_token(ana, f"/campaigns/{other_id}/follow").status_code == 302
    assert {"ana@example.org", "ana guest", "ana g.", "ana lima"} <= follower_addresses_and_names(
        app
    )

    delete_own_account(ana)
    assert follower_addresses_and_names(app) == {"rui@example.org", "rui costa"}
    outbox.clear()
    update = {"title": "We met the mayor", "body": "She listened for an hour and took notes."}
    olga = log_in(app, OWNER)
    for campaign in (campaign_id, other_id, third_id):
        assert organise(olga, campaign, "updates", update).status_code == 302
    run_jobs()
    assert [m["To"] for m in outbox.messages()] == ["rui@example.org"]


# --- 20. invitations to co-organise ---------------------------------------------------------


def invite(client, campaign_id: int, email: str):
    return organise(client, campaign_id, "organisers", {"email": email})


def flashed(page_html: str) -> str:
    flashes = page_html.split('class="flashes"', 1)[1].split(">", 1)[1]
    return text_of(flashes.split("</div>", 1)[0])


def pending_listed(page_html: str) -> str:
    """The manage page's list of invitations waiting for an answer, or ""."""
    if "Invitations waiting for an answer" not in page_html:
        return ""
    return page_html.split("Invitations waiting for an answer", 1)[1].split("</ul>")[0]


def invitation_rows(app: Flask) -> list[tuple]:
    with app.app_context():
        return [
            (i.campaign_id, i.email, i.email_key, i.state)
            for i in db.session.scalars(select(CampaignInvitation).order_by(CampaignInvitation.id))
        ]


def organiser_ids(app: Flask, campaign_id: int) -> list[int]:
    return [o[0] for o in snapshot(app, campaign_id)["organisers"]]


def test_inviting_answers_the_same_whoever_the_address_belongs_to(app, outbox, run_jobs):
    campaign_id = launch(app)
    with_co_organiser(app, campaign_id, "quim@example.org")
    member(app, CO, "Pia Petitioner")
    unconfirmed_member(app, "una@example.org", "Una Unconfirmed")
    olga = log_in(app, OWNER)
    before = snapshot(app, campaign_id)

    answers = {}
    for case, address in [
        ("unknown", "nobody@example.org"),
        ("unconfirmed", "una@example.org"),
        ("organiser", "Quim@example.org"),
        ("owner", OWNER),
        ("member", "Pia@Example.org"),
    ]:
        response = invite(olga, campaign_id, address)
        page = olga.get(response.headers["Location"])
        answers[case] = (
            response.status_code,
            response.headers["Location"],
            page.status_code,
            flashed(page.text).replace(address, "ADDRESS"),
        )
        # The owner sees what they typed, pending, whoever it belongs to (but for the
        # address of a co-organiser who accepted the owner's invitation to it before).
        assert (address in pending_listed(page.text)) == (case != "organiser"), case
    assert len(set(answers.values())) == 1, answers
    status, _, _, message = answers["member"]
    assert status == 302
    assert message == (
        "If ADDRESS belongs to a confirmed member, we have invited them; "
        "they become a co-organiser when they accept."
    )
    # Nobody organises the campaign who did not before; only the member is told.
    assert snapshot(app, campaign_id) == before
    run_jobs()
    assert [m["To"] for m in outbox.messages()] == [CO]


def test_an_invited_member_is_told_and_becomes_a_co_organiser_by_accepting(app, outbox, run_jobs):
    campaign_id = launch(app)
    pia_id = member(app, CO, "Pia Petitioner")
    olga = log_in(app, OWNER)
    assert invite(olga, campaign_id, CO).status_code == 302
    run_jobs()
    message = outbox.last_to(CO)
    assert message["Subject"] == "You are invited to co-organise Keep Alfama lived in"
    assert "Olga Organiser invites you" in text_body(message)
    path = invitation_path(outbox, CO)

    pia = log_in(app, CO)
    notices = pia.get("/notifications").text
    assert "You are invited to co-organise Keep Alfama lived in" in notices
    assert "Olga" not in notices  # the title outlives the inviter's account
    page = pia.get(path)
    assert page.status_code == 200
    assert "Accept: co-organise" in page.text and "Decline the invitation" in page.text
    # The campaign's page and the list of campaigns lead to it too.
    assert path in pia.get(f"/campaigns/{campaign_id}").text
    assert path in pia.get("/campaigns").text

    response = answer(pia, path, "accept")
    assert response.status_code == 302
    assert response.headers["Location"].endswith(
        f"/campaigns/{campaign_id}/manage#affiliation-heading"
    )
    assert pia_id in organiser_ids(app, campaign_id)
    # Like any new organiser, Pia declares her ties before running the published campaign.
    assert "Pia Petitioner: not yet declared." in disclosure_card(
        public_page(app, campaign_id).text
    )
    refused = organise(pia, campaign_id, "status", {"status": "paused", "note": "A summer break."})
    assert refused.status_code == 422
    assert organise(pia, campaign_id, "affiliation", {"company": ""}).status_code == 302
    assert "Pia Petitioner: no paid relationship" in disclosure_card(
        public_page(app, campaign_id).text
    )
    # Answering again changes nothing and says why.
    again = answer(pia, path, "accept")
    assert again.status_code == 302 and again.headers["Location"].endswith(path)
    assert "You have already answered this invitation." in flashed(pia.get(path).text)
    assert organiser_ids(app, campaign_id).count(pia_id) == 1
    assert (
        "Invitations waiting for an answer" not in olga.get(f"/campaigns/{campaign_id}/manage").text
    )


def test_an_invitee_is_never_shown_publicly_until_they_accept(app, outbox, run_jobs):
    campaign_id = launch(app)
    member(app, CO, "Pia Petitioner")
    member(app, OTHER, "Rui Outsider")
    before = snapshot(app, campaign_id)
    olga = log_in(app, OWNER)
    invite(olga, campaign_id, CO)
    run_jobs()
    for page in [
        public_page(app, campaign_id).text,
        app.test_client().get("/campaigns").text,
        log_in(app, OTHER).get(f"/campaigns/{campaign_id}").text,
        olga.get(f"/campaigns/{campaign_id}").text,
        olga.get(f"/campaigns/{campaign_id}/manage").text,
    ]:
        assert "Pia" not in page
    assert snapshot(app, campaign_id) == before  # no organiser row, no disclosure entry

    pia = log_in(app, CO)
    answer(pia, invitation_path(outbox, CO), "decline")
    assert "Pia" not in public_page(app, campaign_id).text
    assert snapshot(app, campaign_id) == before


def test_an_invited_member_may_decline_and_is_not_invited_again(app, outbox, run_jobs):
    campaign_id = launch(app)
    member(app, CO, "Pia Petitioner")
    olga = log_in(app, OWNER)
    invite(olga, campaign_id, CO)
    run_jobs()
    path = invitation_path(outbox, CO)
    pia = log_in(app, CO)

    response = answer(pia, path, "decline")
    assert response.status_code == 302 and response.headers["Location"].endswith(path)
    page = pia.get(path).text
    assert "You have declined the invitation" in flashed(page)
    assert "You declined this invitation." in page and "Accept: co-organise" not in page
    assert f"/campaigns/{campaign_id}" not in pia.get("/campaigns").text.split("<form")[0]
    assert "An invitation for you" not in pia.get(f"/campaigns/{campaign_id}").text

    # Accepting after declining is refused cleanly, and the owner cannot insist.
    assert answer(pia, path, "accept").status_code == 302
    assert "You have already answered this invitation." in flashed(pia.get(path).text)
    assert member(app, CO) not in organiser_ids(app, campaign_id)
    assert CO not in pending_listed(olga.get(f"/campaigns/{campaign_id}/manage").text)
    outbox.clear()
    assert invite(olga, campaign_id, CO).status_code == 302
    run_jobs()
    assert outbox.messages() == []
    assert invitation_rows(app) == [(campaign_id, CO, CO, "declined")]


def test_only_the_invited_member_can_see_or_answer_an_invitation(app, client, outbox, run_jobs):
    campaign_id = launch(app)
    member(app, CO, "Pia Petitioner")
    member(app, OTHER, "Rui Outsider")
    olga = log_in(app, OWNER)
    invite(olga, campaign_id, CO)
    run_jobs()
    path = invitation_path(outbox, CO)

    for other in [log_in(app, OTHER), olga]:
        assert other.get(path).status_code == 404
        for which in ["accept", "decline"]:
            assert answer(other, path, which).status_code == 404
    guest = client.get(path)
    assert guest.status_code == 302 and "/login" in guest.headers["Location"]
    assert organiser_ids(app, campaign_id) == [member(app, OWNER)]
    assert invitation_rows(app) == [(campaign_id, CO, CO, "pending")]
    # Without its token, the invitee's own answer is refused.
    pia = log_in(app, CO)
    assert pia.post(f"{path}/accept").status_code == 422
    assert invitation_rows(app) == [(campaign_id, CO, CO, "pending")]


def test_a_double_submitted_invitation_is_recorded_and_sent_once(app, outbox, run_jobs):
    campaign_id = launch(app)
    member(app, CO, "Pia Petitioner")
    olga = log_in(app, OWNER)
    first = invite(olga, campaign_id, CO)
    second = invite(olga, campaign_id, " pia@EXAMPLE.org")
    assert first.status_code == second.status_code == 302
    run_jobs()
    assert invitation_rows(app) == [(campaign_id, CO, CO, "pending")]
    assert len(outbox.to(CO)) == 1


def test_the_owner_withdraws_a_pending_invitation(app, outbox, run_jobs):
    campaign_id = launch(app)
    member(app, CO, "Pia Petitioner")
    with_co_organiser(app, campaign_id, "quim@example.org")
    olga = log_in(app, OWNER)
    invite(olga, campaign_id, CO)
    with app.app_context():
        invitation_id = db.session.scalar(
            select(CampaignInvitation.id).where(CampaignInvitation.email_key == CO)
        )
    manage_page = olga.get(f"/campaigns/{campaign_id}/manage").text
    withdraw = f"invitations/{invitation_id}/withdraw"
    assert f"/campaigns/{campaign_id}/{withdraw}" in manage_page
    # A co-organiser neither sees who was invited nor withdraws it.
    quim = log_in(app, "quim@example.org")
    assert CO not in quim.get(f"/campaigns/{campaign_id}/manage").text
    assert organise(quim, campaign_id, withdraw, {}).status_code == 403

    response = organise(olga, campaign_id, withdraw, {})
    assert response.status_code == 302
    assert f"The invitation to {CO} is withdrawn." in flashed(
        olga.get(response.headers["Location"]).text
    )
    assert [r for r in invitation_rows(app) if r[2] == CO] == []
    run_jobs()
    assert outbox.to(CO) == []  # withdrawn before its email went: none goes
    pia = log_in(app, CO)
    assert pia.get(f"/campaigns/invitations/{invitation_id}").status_code == 404
    again = organise(olga, campaign_id, withdraw, {})
    assert again.status_code == 422
    assert "That invitation is no longer waiting for an answer." in error_summary(again.text)


def test_a_removed_co_organiser_can_be_invited_again(app, outbox, run_jobs):
    campaign_id = launch(app)
    pia_row = with_co_organiser(app, campaign_id)
    olga = log_in(app, OWNER)
    assert organise(olga, campaign_id, f"organisers/{pia_row}/remove", {}).status_code == 302
    outbox.clear()
    invite(olga, campaign_id, CO)
    invite(olga, campaign_id, CO)
    run_jobs()
    assert len(outbox.to(CO)) == 1
    pia = log_in(app, CO)
    assert answer(pia, invitation_path(outbox, CO), "accept").status_code == 302
    assert member(app, CO) in organiser_ids(app, campaign_id)


def test_answering_after_the_campaign_is_deleted_finds_nothing(app, outbox, run_jobs):
    campaign_id = launch(app)
    member(app, CO, "Pia Petitioner")
    invite(log_in(app, OWNER), campaign_id, CO)
    run_jobs()
    path = invitation_path(outbox, CO)
    with app.app_context():
        db.session.delete(db.session.get(Campaign, campaign_id))
        db.session.commit()
    pia = log_in(app, CO)
    assert pia.get(path).status_code == 404
    assert answer(pia, path, "accept").status_code == 404
    assert invitation_rows(app) == []


def test_an_invitation_lapses_and_is_forgotten(app, outbox, run_jobs):
    campaign_id = launch(app)
    member(app, CO, "Pia Petitioner")
    olga = log_in(app, OWNER)
    invite(olga, campaign_id, CO)
    run_jobs()
    path = invitation_path(outbox, CO)
    with app.app_context():
        invitation = db.session.scalar(select(CampaignInvitation))
        invitation.created_at = utcnow() - INVITATION_LIFETIME - timedelta(minutes=1)
        db.session.commit()
    pia = log_in(app, CO)
    assert "This invitation has lapsed." in pia.get(path).text
    answer(pia, path, "accept")
    assert "This invitation has lapsed." in flashed(pia.get(path).text)
    assert member(app, CO) not in organiser_ids(app, campaign_id)
    assert CO not in pending_listed(olga.get(f"/campaigns/{campaign_id}/manage").text)
    with app.app_context():
        assert campaign_services.forget_lapsed_invitations() == 1
    assert invitation_rows(app) == []


def test_invitations_are_limited_per_owner_whatever_the_address(app, monkeypatch):
    monkeypatch.setattr(campaign_services, "INVITE_LIMITS", ("2 per hour",))
    campaign_id = launch(app)
    member(app, CO, "Pia Petitioner")
    olga = log_in(app, OWNER)
    assert invite(olga, campaign_id, "a@example.org").status_code == 302
    assert invite(olga, campaign_id, "b@example.org").status_code == 302
    for address in [CO, "c@example.org"]:
        refused = invite(olga, campaign_id, address)
        assert refused.status_code == 429
        assert int(refused.headers["Retry-After"]) > 0
        assert "You have sent many invitations" in error_summary(refused.text)
        assert f'value="{address}"' in refused.text
    assert [r[1] for r in invitation_rows(app)] == ["a@example.org", "b@example.org"]


def test_the_invitation_form_offers_no_saved_address(app):
    campaign_id = launch(app)
    page = log_in(app, OWNER).get(f"/campaigns/{campaign_id}/manage").text
    field = re.search(r'<input[^>]*id="organiser-email"[^>]*>', page).group(0)
    assert 'autocomplete="off"' in field and 'autocomplete="email"' not in field
    assert '<label for="organiser-email">' in page


def test_a_members_invitations_are_in_their_data_and_go_with_their_account(app, outbox, run_jobs):
    campaign_id = launch(app)
    other_id = launch(app, title="Keep the tram lines running")
    member(app, CO, "Pia Petitioner")
    olga = log_in(app, OWNER)
    invite(olga, campaign_id, CO)
    invite(olga, other_id, CO)
    invite(olga, other_id, "nobody@example.org")
    pia = log_in(app, CO)
    data = download(pia)["campaign_invitations"]
    assert [(i["campaign_id"], i["email"], i["invited_by"], i["state"]) for i in data] == [
        (campaign_id, CO, "Olga Organiser", "pending"),
        (other_id, CO, "Olga Organiser", "pending"),
    ]
    assert download(olga)["campaign_invitations"] == []
    delete_own_account(pia)
    assert invitation_rows(app) == [
        (other_id, "nobody@example.org", "nobody@example.org", "pending")
    ]


def test_an_invitation_reaches_a_member_who_turned_campaign_mail_off(app, outbox, run_jobs):
    """An invitation is a personal request, not news of a followed campaign: "Campaigns I
    follow" set to off does not hold it back, and it offers nothing to unsubscribe from."""
    campaign_id = launch(app)
    pia_id = member(app, CO, "Pia Petitioner")
    with app.app_context():
        set_preferences(subscriber_of(pia_id, CO), {Category.CAMPAIGNS: Frequency.OFF})
    invite(log_in(app, OWNER), campaign_id, CO)
    run_jobs()
    message = outbox.last_to(CO)
    assert message["Subject"] == "You are invited to co-organise Keep Alfama lived in"
    assert message["List-Unsubscribe"] is None
    assert "unsubscribe" not in text_body(message).lower()


def test_a_deleted_organisers_name_leaves_the_disclosure_history_and_their_ties_stay(app):
    """Pia declared a paid tie as a co-organiser, then deleted her account: the history
    still shows the tie, as a former member's, and nowhere her name."""
    campaign_id = launch(app, publish=True)
    with_co_organiser(app, campaign_id, declare=False)
    pia = log_in(app, CO)
    tie = {"company": "HostAway", "topic": "home-sharing", "details": "Paid consultant."}
    assert organise(pia, campaign_id, "affiliation", tie).status_code == 302
    assert "Pia Petitioner" in disclosure_card(public_page(app, campaign_id).text)

    delete_own_account(pia)
    card = text_of(disclosure_card(public_page(app, campaign_id).text))
    assert "Pia Petitioner" not in card
    assert "A former member: paid relationship with HostAway" in card
    summaries = disclosure_texts(app)
    assert summaries and not any("Pia Petitioner" in s for s in summaries)
    assert any("Olga Organiser" in s for s in summaries)  # the others keep their names


HOSTAWAY = {"company": "HostAway", "topic": "home-sharing", "details": "Paid consultant"}
HOSTAWAY_LINE = "paid relationship with HostAway (Home sharing): Paid consultant."


def disclosure_texts(app: Flask) -> list[str]:
    """Every disclosure history entry stored, of every campaign, oldest first."""
    with app.app_context():
        records = db.session.scalars(select(DisclosureRecord).order_by(DisclosureRecord.id))
        return [record.summary for record in records]


def public_history(app: Flask, campaign_id: int) -> list[str]:
    """The campaign's disclosure history as the public page shows it, newest first, each
    entry without its date."""
    entries = history_entries(public_page(app, campaign_id).text)
    return [text_of(entry).split(" UTC: ", 1)[1] for entry in entries]


def test_a_member_who_renamed_leaves_the_disclosure_history_under_every_name(app):
    """Each entry keeps the name shown when it was made; deleting the account takes the
    earlier names out too, not only the current one."""
    campaign_id = launch(app, publish=True)
    with_co_organiser(app, campaign_id, declare=False)
    pia = log_in(app, CO)
    assert organise(pia, campaign_id, "affiliation", HOSTAWAY).status_code == 302
    with app.app_context():
        member_services.update_profile(
            member_by_email(CO), display_name="Pia Pereira", city="Lisbon"
        )
    renewed = {**HOSTAWAY, "details": "Paid consultant until May"}
    assert organise(pia, campaign_id, "affiliation", renewed).status_code == 302
    shown = public_history(app, campaign_id)
    assert "Pia Pereira: paid relationship with HostAway" in shown[0]
    assert f"Pia Petitioner: {HOSTAWAY_LINE}" in shown[1]

    delete_own_account(pia)
    shown = public_history(app, campaign_id)
    assert not [entry for entry in shown if "Pia Pe" in entry]
    assert not [stored for stored in disclosure_texts(app) if "Pia Pe" in stored]
    assert "A former member: paid relationship with HostAway" in shown[0]
    assert f"A former member: {HOSTAWAY_LINE}" in shown[1]
    assert all("Olga Organiser: " in entry for entry in shown)


def test_deleting_a_member_leaves_a_longer_name_ending_with_theirs_alone(app):
    """Owner "Maria Ana" keeps her name in every entry when co-organiser "Ana" goes."""
    member(app, OWNER, "Maria Ana")
    member(app, CO, "Ana")
    campaign_id = launch(app, publish=True)
    with_co_organiser(app, campaign_id, declare=False)
    ana = log_in(app, CO)
    assert organise(ana, campaign_id, "affiliation", HOSTAWAY).status_code == 302
    before = public_history(app, campaign_id)

    delete_own_account(ana)
    shown = public_history(app, campaign_id)
    assert len(shown) == len(before)
    owner_line = "Maria Ana: no paid relationship with a sharing-economy company."
    assert all("Maria Ana: " in entry for entry in shown)
    assert not [entry for entry in shown if "Maria A former member" in entry]
    assert shown[0].endswith(f"{owner_line} A former member: {HOSTAWAY_LINE}")
    assert shown[1].endswith(f"{owner_line} A former member: not yet declared.")
    # Apart from the deleted member's name, every entry reads as it did.
    assert [e.replace("A former member: ", "Ana: ") for e in shown] == before


def test_a_removed_co_organiser_leaves_the_history_after_their_invitation_is_forgotten(app):
    """Pia was removed, and her accepted invitation lapsed and was deleted: the entries
    from when she organised still lose her name when she deletes her account."""
    campaign_id = launch(app, publish=True)
    pia_row = with_co_organiser(app, campaign_id, declare=False)
    pia = log_in(app, CO)
    assert organise(pia, campaign_id, "affiliation", HOSTAWAY).status_code == 302
    olga = log_in(app, OWNER)
    assert organise(olga, campaign_id, f"organisers/{pia_row}/remove", {}).status_code == 302
    with app.app_context():
        invitation = db.session.scalar(select(CampaignInvitation))
        invitation.created_at = utcnow() - INVITATION_LIFETIME - timedelta(minutes=1)
        db.session.commit()
        assert campaign_services.forget_lapsed_invitations() == 1
    assert f"Pia Petitioner: {HOSTAWAY_LINE}" in public_history(app, campaign_id)[1]

    delete_own_account(pia)
    shown = public_history(app, campaign_id)
    assert not [entry for entry in shown if "Pia Petitioner" in entry]
    assert not [stored for stored in disclosure_texts(app) if "Pia Petitioner" in stored]
    assert "A former member" not in shown[0]  # after her removal
    assert f"A former member: {HOSTAWAY_LINE}" in shown[1]


def test_a_members_lines_in_disclosure_histories_are_in_their_data_download(app):
    campaign_id = launch(app, publish=True)
    with_co_organiser(app, campaign_id, declare=False)
    pia = log_in(app, CO)
    assert organise(pia, campaign_id, "affiliation", HOSTAWAY).status_code == 302
    lines = download(pia)["campaign_disclosure_history"]
    assert [(line["campaign_id"], line["name"], line["statement"]) for line in lines] == [
        (campaign_id, "Pia Petitioner", "not yet declared."),
        (campaign_id, "Pia Petitioner", HOSTAWAY_LINE),
    ]
    assert all(datetime.fromisoformat(line["recorded_at"]) for line in lines)
    [organised] = download(pia)["campaigns_organised"]
    assert (organised["affiliation_company"], organised["affiliation_topic"]) == (
        HOSTAWAY["company"],
        HOSTAWAY["topic"],
    )
    assert datetime.fromisoformat(organised["affiliation_declared_at"])
    olga_lines = download(log_in(app, OWNER))["campaign_disclosure_history"]
    assert {line["name"] for line in olga_lines} == {"Olga Organiser"}
    assert len(olga_lines) == len(public_history(app, campaign_id))


def test_an_entry_kept_as_whole_text_loses_only_the_deleted_members_lines(app):
    """Entries written before organisers' lines were stored apart are text alone: the
    deleted member's name goes only where it opens a line."""
    member(app, OWNER, "Maria Ana")
    member(app, CO, "Ana")
    campaign_id = launch(app, publish=True)
    with_co_organiser(app, campaign_id)
    old = (
        "Volunteer-run, no funding. "
        "Maria Ana: no paid relationship with a sharing-economy company. "
        f"Ana: {HOSTAWAY_LINE}"
    )
    with app.app_context():
        db.session.add(DisclosureRecord(campaign_id=campaign_id, legacy_summary=old))
        db.session.commit()
    assert public_history(app, campaign_id)[0] == old

    delete_own_account(log_in(app, CO))
    assert public_history(app, campaign_id)[0] == old.replace("Ana: paid", "A former member: paid")


def app_with_own_database(app: Flask, path: Path) -> Flask:
    """The app on an SQLite file of its own, for a migration to be run step by step."""
    return create_app(
        {
            "TESTING": True,
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{path}",
            "REDIS_URL": app.config["REDIS_URL"],
            "MAIL_URL": "outbox",
            "BASE_URL": "http://localhost",
        }
    )


def test_the_migration_keeps_older_entries_as_their_text_and_back(app, tmp_path):
    """Upgrading keeps each existing entry's text as it was; downgrading writes every
    entry back as one text, as shown."""
    migrated = app_with_own_database(app, tmp_path / "migrated.db")
    old = "Volunteer-run, no funding. Ana: not yet declared."
    with migrated.app_context():
        upgrade(revision="0013_campaign_invitations")
        now = utcnow().replace(tzinfo=None)
        with db.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO campaigns (id, title, summary, change_wanted, city, city_slug,"
                    " topic, status, created_at, updated_at) VALUES (1, 'T', 'S', 'C',"
                    " 'Lisbon', 'lisbon', 'other', 'active', :now, :now)"
                ),
                {"now": now},
            )
            conn.execute(
                text(
                    "INSERT INTO campaign_disclosure_history (campaign_id, created_at, summary,"
                    " industry_backed) VALUES (1, :now, :old, false)"
                ),
                {"now": now, "old": old},
            )
        upgrade()
        kept = db.session.scalars(select(DisclosureRecord)).one()
        assert (kept.summary, kept.legacy_summary, kept.ties) == (old, old, [])
        db.session.add(
            DisclosureRecord(
                campaign_id=1,
                funding_text="Volunteer-run, no funding.",
                ties=[
                    DisclosureTie(position=1, name=None, statement="not yet declared."),
                    DisclosureTie(position=0, name="Maria Ana", statement="none."),
                ],
            )
        )
        db.session.commit()
        newer = "Volunteer-run, no funding. Maria Ana: none. A former member: not yet declared."
        assert [r.summary for r in db.session.scalars(select(DisclosureRecord))] == [old, newer]
        db.session.remove()

        downgrade(revision="0013_campaign_invitations")
        with db.engine.connect() as conn:
            texts = conn.execute(
                text("SELECT summary FROM campaign_disclosure_history ORDER BY id")
            ).scalars()
            assert list(texts) == [old, newer]
        db.engine.dispose()


def test_the_invitations_table_comes_from_the_migrations(app):
    with app.app_context():
        inspector = sa_inspect(db.engine)
        unique = inspector.get_unique_constraints("campaign_invitations")
        indexes = {i["name"] for i in inspector.get_indexes("campaign_invitations")}
    assert [(u["name"], u["column_names"]) for u in unique] == [
        ("uq_campaign_invitations_campaign_id_email_key", ["campaign_id", "email_key"])
    ]
    assert "ix_campaign_invitations_email_key" in indexes


# --- 19. in a browser --------------------------------------------------------------------------


@pytest.mark.browser
def test_a_member_launches_declares_and_publishes_a_campaign_in_a_browser(app, page):
    with app.app_context():
        make_member(OWNER, "Olga Organiser")

    page.goto("/login")
    page.get_by_label("Email address").fill(OWNER)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in", exact=True).click()
    expect(page.get_by_text("Welcome back, Olga Organiser.")).to_be_visible()

    page.goto("/campaigns/new")
    page.get_by_label("Title", exact=True).fill("Minimum pay per delivery in Berlin")
    page.get_by_label("Summary", exact=True).fill(
        "Couriers ask the Senate for pay that covers waiting time."
    )
    page.get_by_label("The change we want").fill(
        "A minimum payment per delivery, including **waiting time** at restaurants."
    )
    page.get_by_label("City or region").fill("Berlin")
    page.get_by_label("Topic", exact=True).select_option(label="Delivery and courier work")
    page.get_by_label("Decision-maker", exact=True).fill("Senate Department for Labour")
    page.get_by_label("Role", exact=True).fill("Ministry")
    page.get_by_label("Body", exact=True).fill("Berlin Senate")
    page.get_by_role("button", name="Save campaign").click()

    expect(
        page.get_by_role("heading", name="Organise: Minimum pay per delivery in Berlin")
    ).to_be_visible()
    publish_notice = page.get_by_role("region", name="Publish")
    assert "who funds the campaign" in publish_notice.inner_text()
    page.get_by_label("It is volunteer-run, with no funding").check()
    page.get_by_role("button", name="Save funding").click()
    expect(page.get_by_text("The funding declaration is saved.")).to_be_visible()
    page.get_by_label("Company (optional)", exact=True).fill("")
    page.get_by_role("button", name="Save my declaration").click()
    expect(page.get_by_text("Your declaration is saved.")).to_be_visible()
    expect(page.get_by_text("The disclosure is complete.")).to_be_visible()
    page.get_by_role("button", name="Publish the campaign").click()
    expect(page.get_by_text("Your campaign is public.")).to_be_visible()

    page.get_by_role("link", name="See the campaign page").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Minimum pay per delivery in Berlin")
    card = page.get_by_role("region", name="Who is behind this campaign")
    expect(card.get_by_text("Volunteer-run, with no funding.")).to_be_visible()
    assert "Industry-backed" not in card.inner_text()
    expect(page.locator("strong", has_text="waiting time")).to_be_visible()

    with app.app_context():
        campaign_id = db.session.scalar(select(Campaign.id))
    public = app.test_client().get(f"/campaigns/{campaign_id}")
    assert public.status_code == 200 and "Minimum pay per delivery in Berlin" in public.text
    assert listed(app.test_client().get("/campaigns?city=berlin").text) == [
        "Minimum pay per delivery in Berlin"
    ]


def test_the_follow_form_lets_browsers_fill_in_the_followers_own_details(app):
    from campaigns.forms import FollowForm

    with app.test_request_context():
        form = FollowForm()
        assert 'autocomplete="name"' in form.name()
        assert 'autocomplete="email"' in form.email()


# --- 21. when the owner leaves, and co-organisers stepping down ---------------------------------


def owner_flags(app: Flask, campaign_id: int) -> list[tuple]:
    """Each organiser row as (member id, owner?), in the order they joined."""
    return [(o[0], o[1]) for o in snapshot(app, campaign_id)["organisers"]]


def test_when_the_owner_deletes_their_account_a_co_organiser_takes_the_campaign_over(app):
    """Pia, the one co-organiser left, owns the campaign: she invites and removes
    co-organisers, and the page names her as its owner."""
    campaign_id = launch(app)
    pia_id = member(app, CO, "Pia Petitioner")
    with_co_organiser(app, campaign_id)
    quim_row = with_co_organiser(app, campaign_id, "quim@example.org")
    delete_own_account(log_in(app, OWNER))

    assert owner_flags(app, campaign_id) == [(None, False), (pia_id, True), (ANY, False)]
    pia = log_in(app, CO)
    assert "Invite a co-organiser" in pia.get(f"/campaigns/{campaign_id}/manage").text
    assert invite(pia, campaign_id, OTHER).status_code == 302
    assert organise(pia, campaign_id, f"organisers/{quim_row}/remove", {}).status_code == 302
    assert [flag[0] for flag in owner_flags(app, campaign_id)] == [None, pia_id]
    card = text_of(disclosure_card(public_page(app, campaign_id).text))
    assert "Pia Petitioner (owner): none." in card
    assert "A former member: none." in card


def test_the_campaign_passes_to_the_longest_standing_co_organiser_who_has_declared(app):
    """Pia joined first but has not declared yet; Quim and then Rui have: Quim takes over.
    With no one declared, the longest-standing co-organiser would."""
    campaign_id = launch(app)
    other_id = launch(app, title="Keep the tram lines running")
    pia_id = member(app, CO, "Pia Petitioner")
    quim_id = member(app, "quim@example.org", "Quim")
    member(app, OTHER, "Rui")
    with_co_organiser(app, campaign_id, declare=False)
    with_co_organiser(app, campaign_id, "quim@example.org")
    with_co_organiser(app, campaign_id, OTHER)
    with_co_organiser(app, other_id, declare=False)
    with_co_organiser(app, other_id, "quim@example.org", declare=False)
    delete_own_account(log_in(app, OWNER))

    assert [flag for flag in owner_flags(app, campaign_id) if flag[1]] == [(quim_id, True)]
    assert [flag for flag in owner_flags(app, other_id) if flag[1]] == [(pia_id, True)]


def test_a_published_campaign_left_with_no_organiser_is_archived_and_says_so(app, outbox, run_jobs):
    campaign_id = launch(app)
    member(app, CO, "Pia Petitioner")
    invite(log_in(app, OWNER), campaign_id, CO)
    delete_own_account(log_in(app, OWNER))

    after = snapshot(app, campaign_id)
    assert after["published"] is not None
    assert after["status"] == ("archived", "Its last organiser left Groundswell.")
    assert after["statuses"] == 1
    assert after["organisers"] == [(None, False, None, ANY)]
    page = public_page(app, campaign_id)
    assert page.status_code == 200
    assert "No one runs this campaign any more" in text_of(page.text)
    # No one is left to stand behind the invitation.
    assert invitation_rows(app) == []
    assert log_in(app, CO).get(f"/campaigns/{campaign_id}").status_code == 200


def test_a_campaign_that_ended_keeps_its_outcome_when_its_last_organiser_leaves(app):
    campaign_id = launch(app)
    with app.app_context():
        campaign = db.session.get(Campaign, campaign_id)
        campaign_services.change_status(campaign, Status.WON, "The council passed the cap.")
    delete_own_account(log_in(app, OWNER))
    assert snapshot(app, campaign_id)["status"] == ("won", "The council passed the cap.")
    assert "No one runs this campaign any more" in text_of(public_page(app, campaign_id).text)


def test_a_draft_no_one_else_organises_goes_with_its_owners_account(app):
    draft_id = launch(app, publish=False)
    shared_id = launch(app, publish=False, title="Keep the tram lines running")
    pia_id = member(app, CO, "Pia Petitioner")
    with_co_organiser(app, shared_id)
    delete_own_account(log_in(app, OWNER))
    with app.app_context():
        assert db.session.get(Campaign, draft_id) is None
        # Its disclosure history and everything else of it go too.
        kept = select(func.count()).where(DisclosureRecord.campaign_id == draft_id)
        assert db.session.scalar(kept) == 0
    assert owner_flags(app, shared_id) == [(None, False), (pia_id, True)]


def test_the_migration_gives_campaigns_stranded_without_an_owner_one(app, tmp_path):
    """Campaigns whose owner left before the hand-over existed get their successor, or
    are archived when no one is left."""
    migrated = app_with_own_database(app, tmp_path / "stranded.db")
    with migrated.app_context():
        upgrade()
        olga = make_member(OWNER, "Olga Organiser")
        shared = make_campaign(olga)
        pia = make_member(CO, "Pia Petitioner")
        quim = make_member("quim@example.org", "Quim")
        shared.organisers.append(CampaignOrganiser(member_id=pia.id))
        shared.organisers.append(
            CampaignOrganiser(member_id=quim.id, affiliation_declared_at=utcnow())
        )
        alone = make_campaign(olga, title="Keep the tram lines running")
        ids = shared.id, alone.id, quim.id
        # The state an owner's deletion used to leave: their row, nameless, still owning.
        db.session.execute(
            text("UPDATE campaign_organisers SET member_id = NULL WHERE member_id = :id"),
            {"id": olga.id},
        )
        db.session.commit()
        db.session.remove()

        downgrade(revision="0014_campaign_disclosure_ties")  # before the repair
        upgrade()
        shared, alone = db.session.get(Campaign, ids[0]), db.session.get(Campaign, ids[1])
        assert [(o.member_id, o.is_owner) for o in shared.organisers if o.is_owner] == [
            (ids[2], True)
        ]
        assert (alone.status, alone.status_note) == (
            "archived",
            "Its last organiser left Groundswell.",
        )
        assert [o.is_owner for o in alone.organisers] == [False]
        db.session.remove()
        db.engine.dispose()


def test_the_migration_keeps_one_guest_follow_per_inbox(app):
    """Follows saved under the old keys: each campaign keeps one per inbox, the confirmed
    one first, and other inboxes and members' follows are left as they were."""
    first, second = launch(app), launch(app)
    with app.app_context():
        downgrade(revision="0017_meetup_time_set")
        now = utcnow()
        rows = [
            (first, None, "ana.silva@gmail.com", None),
            (first, None, "AnaSilva@gmail.com", now),
            (first, None, "ana.silva+x@googlemail.com", None),
            (second, None, "ana.silva@gmail.com", None),
            (first, None, "rui@example.org", None),
            (first, member_by_email(OWNER).id, OWNER, now),
        ]
        for campaign_id, member_id, address, confirmed in rows:
            key = f"member:{member_id}" if member_id else address.strip().lower()
            db.session.execute(
                text(
                    "INSERT INTO campaign_followers"
                    " (campaign_id, member_id, name, email, email_key, created_at, confirmed_at)"
                    " VALUES (:c, :m, 'A', :e, :k, :now, :confirmed)"
                ),
                {"c": campaign_id, "m": member_id, "e": address, "k": key, "now": now,
                 "confirmed": confirmed},
            )  # fmt: skip
        db.session.commit()
        db.session.remove()

        upgrade()
        kept = db.session.execute(
            select(Follower.campaign_id, Follower.email, Follower.email_key).order_by(
                Follower.campaign_id, Follower.email_key
            )
        ).all()
        member_key = f"member:{member_by_email(OWNER).id}"
        assert [tuple(row) for row in kept] == sorted(
            [
                (first, "AnaSilva@gmail.com", "anasilva@gmail.com"),
                (first, OWNER, member_key),
                (first, "rui@example.org", "rui@example.org"),
                (second, "ana.silva@gmail.com", "anasilva@gmail.com"),
            ],
            key=lambda row: (row[0], row[2]),
        )
        db.session.remove()
        db.engine.dispose()


def step_down_page(client, campaign_id: int):
    return client.get(f"/campaigns/{campaign_id}/step-down")


def test_a_co_organiser_steps_down_after_confirming_with_a_button(app, outbox, run_jobs):
    campaign_id = launch(app)
    pia_row = with_co_organiser(app, campaign_id)
    pia = log_in(app, CO)
    manage = pia.get(f"/campaigns/{campaign_id}/manage").text
    assert f'href="/campaigns/{campaign_id}/step-down"' in manage
    entries_before = len(public_history(app, campaign_id))

    page = step_down_page(pia, campaign_id)
    assert page.status_code == 200
    assert "Step down from this campaign" in page.text
    assert organiser_ids(app, campaign_id) == [member(app, OWNER), member(app, CO)]
    # Without the page's token nothing happens.
    forged = pia.post(f"/campaigns/{campaign_id}/step-down", data={})
    assert forged.status_code == 422
    assert len(organiser_ids(app, campaign_id)) == 2

    done = pia.post(
        f"/campaigns/{campaign_id}/step-down", data={"csrf_token": csrf_token(page.text)}
    )
    assert done.status_code == 302
    assert done.headers["Location"].endswith(f"/campaigns/{campaign_id}")
    assert organiser_ids(app, campaign_id) == [member(app, OWNER)]
    assert pia.get(f"/campaigns/{campaign_id}/manage").status_code == 403
    shown = public_history(app, campaign_id)
    assert len(shown) == entries_before + 1
    assert "Pia Petitioner" not in shown[0] and "Pia Petitioner" in shown[1]
    assert (
        "Pia Petitioner"
        not in text_of(disclosure_card(public_page(app, campaign_id).text)).split(
            "History of this disclosure"
        )[0]
    )
    with app.app_context():
        assert db.session.get(CampaignOrganiser, pia_row) is None

    # The owner hears of it, by email and in the app.
    outbox.clear()
    run_jobs()
    [told] = outbox.to(OWNER)
    assert told["Subject"].startswith("Pia Petitioner stepped down from ")
    assert f"/campaigns/{campaign_id}/manage" in told.get_body(("html",)).get_content()
    assert outbox.to(CO) == []


def test_an_undeclared_co_organiser_may_step_down_from_a_published_campaign(app):
    campaign_id = launch(app)
    with_co_organiser(app, campaign_id, declare=False)
    pia = log_in(app, CO)
    response = post_with_token(pia, f"/campaigns/{campaign_id}/step-down")
    assert response.status_code == 302
    assert organiser_ids(app, campaign_id) == [member(app, OWNER)]


def test_the_owner_and_outsiders_cannot_step_down(app):
    campaign_id = launch(app)
    with_co_organiser(app, campaign_id)
    member(app, OTHER, "Rui Outsider")
    olga = log_in(app, OWNER)
    assert "/step-down" not in olga.get(f"/campaigns/{campaign_id}/manage").text
    assert step_down_page(olga, campaign_id).status_code == 403
    assert post_with_token(olga, f"/campaigns/{campaign_id}/step-down").status_code == 403
    rui = log_in(app, OTHER)
    assert post_with_token(rui, f"/campaigns/{campaign_id}/step-down").status_code == 403
    assert len(organiser_ids(app, campaign_id)) == 2
    with app.app_context():
        campaign = db.session.get(Campaign, campaign_id)
        with pytest.raises(CampaignError, match="owner you cannot step down"):
            campaign_services.step_down(campaign, member_by_email(OWNER))


def test_a_co_organiser_who_stepped_down_of_a_draft_is_sent_to_the_campaigns_list(app):
    campaign_id = launch(app, publish=False)
    with_co_organiser(app, campaign_id)
    pia = log_in(app, CO)
    response = post_with_token(pia, f"/campaigns/{campaign_id}/step-down")
    assert response.status_code == 302 and response.headers["Location"].endswith("/campaigns")
    assert pia.get(f"/campaigns/{campaign_id}").status_code == 404


def test_the_owner_can_invite_back_a_co_organiser_who_stepped_down(app, outbox, run_jobs):
    campaign_id = launch(app)
    with_co_organiser(app, campaign_id)
    pia = log_in(app, CO)
    assert post_with_token(pia, f"/campaigns/{campaign_id}/step-down").status_code == 302
    assert invite(log_in(app, OWNER), campaign_id, CO).status_code == 302
    run_jobs()
    assert answer(pia, invitation_path(outbox, CO), "accept").status_code == 302
    assert member(app, CO) in organiser_ids(app, campaign_id)


# --- 22. updates reach only those who still follow a public campaign ---------------------------


def test_an_update_held_for_a_digest_is_dropped_once_its_reader_unfollows(app, outbox, run_jobs):
    from notifications import services as notification_services

    campaign_id = launch(app)
    ana_id = member(app, "ana@example.org", "Ana")
    rui_id = member(app, OTHER, "Rui")
    for email in ("ana@example.org", OTHER):
        assert (
            post_with_token(log_in(app, email), f"/campaigns/{campaign_id}/follow").status_code
            == 302
        )
    with app.app_context():
        for member_id in (ana_id, rui_id):
            notification_services.set_member_preferences(
                db.session.get(Member, member_id), {Category.CAMPAIGNS: Frequency.DAILY}
            )
    update = {"title": "Secret plan headline", "body": "We meet the mayor next week, come along."}
    assert organise(log_in(app, OWNER), campaign_id, "updates", update).status_code == 302
    run_jobs()
    assert outbox.messages() == []
    ana = log_in(app, "ana@example.org")
    assert post_with_token(ana, f"/campaigns/{campaign_id}/unfollow").status_code == 302

    with app.app_context():
        notification_services.send_daily_digests()
    run_jobs()
    assert [m["To"] for m in outbox.messages()] == [OTHER]
    assert "Secret plan headline" in text_body(outbox.last_to(OTHER))


def test_an_update_sent_late_skips_whoever_unfollowed_or_a_campaign_no_longer_public(
    app, outbox, run_jobs
):
    """The update is recorded for every follower at once; by the time it is sent, Ana has
    unfollowed, and for the second update the campaign is no longer public."""
    from notifications import services as notification_services

    campaign_id = launch(app)
    member(app, "ana@example.org", "Ana")
    member(app, OTHER, "Rui")
    for email in ("ana@example.org", OTHER):
        assert (
            post_with_token(log_in(app, email), f"/campaigns/{campaign_id}/follow").status_code
            == 302
        )
    rui_guest = guest_follows(app, campaign_id, "Bea Guest", "bea@example.org")
    run_jobs()
    submit(rui_guest, confirm_link(outbox, "bea@example.org"), {})
    outbox.clear()

    def post_and_record(title: str) -> list[int]:
        with app.app_context():
            campaign = db.session.get(Campaign, campaign_id)
            news = campaign_services.post_update(
                campaign, title=title, body="We meet the mayor next week, come along."
            )
            notification = db.session.scalar(
                select(Notification).where(Notification.key == f"campaign-update:{news.id}")
            )
            notification_services.fan_out(notification.id)  # recorded now, sent below
            return [
                d.id
                for d in db.session.scalars(
                    select(notification_services.Delivery).where(
                        notification_services.Delivery.notification_id == notification.id
                    )
                )
            ]

    from core.queue import all_queues

    def forget_queued_jobs() -> None:
        with app.app_context():
            for queue in all_queues():
                queue.empty()

    first = post_and_record("Headline for followers")
    forget_queued_jobs()
    assert (
        post_with_token(
            log_in(app, "ana@example.org"), f"/campaigns/{campaign_id}/unfollow"
        ).status_code
        == 302
    )
    with app.app_context():
        notification_services.deliver(first)
    assert sorted(m["To"] for m in outbox.messages()) == ["bea@example.org", OTHER]

    outbox.clear()
    second = post_and_record("Another headline here")
    forget_queued_jobs()
    with app.app_context():
        db.session.get(Campaign, campaign_id).published_at = None
        db.session.commit()
        notification_services.deliver(second)
    assert outbox.messages() == []


# --- 23. the invitation shows who is behind the campaign ----------------------------------------


def test_an_invitee_sees_who_funds_the_campaign_and_its_organisers_ties_before_answering(
    app, outbox, run_jobs
):
    campaign_id = launch(app, publish=False)
    member(app, CO, "Pia Petitioner")
    with app.app_context():
        campaign = db.session.get(Campaign, campaign_id)
        campaign_services.add_funder(
            campaign, name="MegaRentals Ltd", kind="company", amount_band="over-50k"
        )
        campaign_services.declare_affiliation(
            campaign.organisers[0], company="HostAway", topic="home-sharing", details="Adviser"
        )
    invite(log_in(app, OWNER), campaign_id, CO)
    run_jobs()
    path = invitation_path(outbox, CO)
    pia = log_in(app, CO)

    page = pia.get(path)
    assert page.status_code == 200
    card = text_of(disclosure_card(page.text))
    assert "Industry-backed" in card
    funders = disclosure_card(page.text).split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    assert re.findall(r"<td>(.*?)</td>", funders) == ["MegaRentals Ltd", "Company", "Over €50,000"]
    assert "Olga Organiser (owner): paid relationship with HostAway (Adviser)." in card
    assert "History of this disclosure" in card
    # Once declined, the draft's disclosure is no longer the invitee's to see.
    answer(pia, path, "decline")
    assert 'id="disclosure-heading"' not in pia.get(path).text


# --- 24. the manage page's buttons and attaching before publishing -------------------------------


def button_names(page_html: str) -> list[str]:
    """The accessible name of every button on a page: its text, hidden parts included."""
    return [text_of(label) for label in re.findall(r"<button[^>]*>(.*?)</button>", page_html, re.S)]


def test_every_button_in_the_manage_pages_lists_names_its_own_entry(app):
    campaign_id = launch(app)
    member(app, "quim@example.org", "Quim")
    with_co_organiser(app, campaign_id)
    with_co_organiser(app, campaign_id, "quim@example.org")
    with app.app_context():
        campaign = db.session.get(Campaign, campaign_id)
        for name in ("Tenants Fund", "Residents Trust"):
            campaign_services.add_funder(
                campaign, name=name, kind="foundation", amount_band="1k-10k"
            )
        campaign_services.add_decision_maker(
            campaign, name="Rui Mayor", role="Mayor", body="Lisbon City Council"
        )
        pia = member_by_email(CO)
        for title in ("Cap holiday lets in Alfama", "Register every holiday let"):
            petition = factories.make_petition(pia, title=title)
            campaign_services.attach_work(campaign, "petition", petition.id, pia)
    olga = log_in(app, OWNER)
    for email in ("a@example.org", "b@example.org"):
        assert invite(olga, campaign_id, email).status_code == 302

    names = button_names(olga.get(f"/campaigns/{campaign_id}/manage").text)
    repeated = [name for name, count in Counter(names).items() if count > 1]
    assert repeated == []
    for expected in [
        "Remove Tenants Fund from the funders",
        "Remove Residents Trust from the funders",
        "Remove Pia Petitioner as co-organiser",
        "Remove Quim as co-organiser",
        "Withdraw the invitation to a@example.org",
        "Withdraw the invitation to b@example.org",
        "Update stance of Filipa Matos",
        "Update stance of Rui Mayor",
        "Detach Cap holiday lets in Alfama",
        "Detach Register every holiday let",
    ]:
        assert expected in names, expected
    # What is read beyond the visible word is hidden from sight only.
    assert '>Remove<span class="visually-hidden"> Tenants Fund from the funders</span>' in (
        olga.get(f"/campaigns/{campaign_id}/manage").text
    )


def test_organisers_attach_petitions_to_a_draft_from_the_manage_page(app):
    campaign_id = launch(app, publish=False)
    with app.app_context():
        petition_id = factories.make_petition(
            member_by_email(OWNER), title="Cap holiday lets in Alfama"
        ).id
    olga = log_in(app, OWNER)
    manage = olga.get(f"/campaigns/{campaign_id}/manage").text
    parsed = assert_ids_are_unique_and_labels_match(manage)
    action = f"/campaigns/{campaign_id}/manage/links"
    fields = parsed.form(action)["fields"]
    assert {"attach-kind", "attach-target_id"} <= set(fields)

    not_a_number = olga.post(action, data={**fields, "attach-target_id": "twelve"})
    assert not_a_number.status_code == 422
    assert "Please enter" in field_error(not_a_number.text, "attach-target_id")
    assert_ids_are_unique_and_labels_match(not_a_number.text)
    missing = olga.post(action, data={**fields, "attach-target_id": "99999"})
    assert missing.status_code == 422
    assert "There is no public petition with that number." in error_summary(missing.text)

    attached = olga.post(action, data={**fields, "attach-target_id": str(petition_id)})
    assert attached.status_code == 302
    assert attached.headers["Location"].endswith(f"/campaigns/{campaign_id}/manage")
    with app.app_context():
        assert db.session.scalars(select(LinkedWork.target_id)).all() == [petition_id]
    manage = olga.get(f"/campaigns/{campaign_id}/manage").text
    assert "Cap holiday lets in Alfama" in manage.split('id="attached-heading"', 1)[1]


def test_only_the_campaigns_organisers_attach_from_the_manage_page(app):
    campaign_id = launch(app)
    member(app, OTHER, "Rui Outsider")
    with app.app_context():
        petition_id = factories.make_petition(member_by_email(OTHER)).id
    rui = log_in(app, OTHER)
    data = {"attach-kind": "petition", "attach-target_id": str(petition_id)}
    response = post_with_token(rui, f"/campaigns/{campaign_id}/manage/links", data)
    assert response.status_code == 403
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(LinkedWork)) == 0


def test_a_refused_attach_on_a_drafts_own_page_is_shown_beside_its_field(app):
    campaign_id = launch(app, publish=False)
    olga = log_in(app, OWNER)
    url = f"/campaigns/{campaign_id}"
    assert 'id="attach-heading"' in olga.get(url).text
    refused = submit(olga, url, {"kind": "petition", "target_id": "twelve"}, action=f"{url}/links")
    assert refused.status_code == 422
    assert "Please enter" in field_error(refused.text, "target_id")
