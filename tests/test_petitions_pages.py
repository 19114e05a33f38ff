"""Petition pages: finding petitions, the petition page, delivery, CSV, home, profile, privacy.

Data is built through the services, as the views and jobs build it; tallies run as real RQ
jobs, and the pages are read through the test client (and once through Chromium).
"""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import datetime, timedelta
from html import unescape
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlsplit

from sqlalchemy import select

from core.db import utcnow
from core.extensions import db
from core.pagecache import PLACEHOLDER
from members.models import Member
from petitions import services
from petitions.models import Petition, Signature, SignatureState
from petitions.services import SignOutcome
from tests.factories import PASSWORD, add_signature, make_member, make_petition, member_by_email
from tests.helpers import csrf_token, submit

BASE = "http://localhost"  # BASE_URL in the test app


# --- building data through the services -------------------------------------------------


def backdate(signature: Signature, hours: float) -> None:
    """Move a confirmation into the past, before the tally job files it by hour."""
    signature.confirmed_at = utcnow() - timedelta(hours=hours)
    db.session.commit()


def signature_count(petition_id: int) -> int:
    db.session.rollback()  # end any snapshot so the jobs' commits are visible
    return db.session.get(Petition, petition_id).signature_count


# --- reading pages --------------------------------------------------------------------


class Tags(HTMLParser):
    """Every start tag with its attributes, and every link with its text."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.links: dict[str, str] = {}
        self._href: str | None = None
        self._text: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "a":
            self._href, self._text = dict(attrs).get("href"), []

    def handle_data(self, data):
        if self._href is not None:
            self._text.append(data)

    def handle_endtag(self, tag):
        if tag == "a" and self._href is not None:
            self.links["".join(self._text).strip()] = self._href
            self._href = None

    def meta(self) -> dict[str, str]:
        return {
            attrs.get("property") or attrs.get("name"): attrs.get("content")
            for tag, attrs in self.tags
            if tag == "meta" and (attrs.get("property") or attrs.get("name"))
        }


CARD_TITLE = re.compile(r'<h([23])><a href="/petitions/\d+">(.*?)</a></h\1>')


def listed(html: str) -> list[str]:
    """Titles of the petition cards on a page, in order."""
    return [unescape(title) for _, title in CARD_TITLE.findall(html)]


def section(html: str, heading_id: str) -> str:
    """The HTML of the <section> whose heading has this id ('' if there is none)."""
    if f'id="{heading_id}"' not in html:
        return ""
    return html.split(f'id="{heading_id}"', 1)[1].split("</section>", 1)[0]


def table_rows(html: str) -> list[list[str]]:
    body = html.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    return [
        [unescape(cell) for cell in re.findall(r"<td>(.*?)</td>", row, re.S)]
        for row in re.findall(r"<tr>(.*?)</tr>", body, re.S)
    ]


def login(auth, email: str) -> None:
    assert auth.login(email=email, password=PASSWORD).status_code == 302


# --- 1. the listing ---------------------------------------------------------------------


def test_listing_filters_by_city_whatever_the_spelling(app, client):
    with app.app_context():
        olga = make_member()
        make_petition(olga, title="Sao Paulo couriers need shade", city="São Paulo")
        make_petition(olga, title="Lisbon couriers need shade", city="Lisbon")
        make_petition(olga, title="Porto couriers need shade", city="Porto")

    for spelling in ("São Paulo", "sao paulo", "Sao Paulo", "SÃO PAULO"):
        response = client.get("/petitions", query_string={"city": spelling})
        assert response.status_code == 200
        assert listed(response.text) == ["Sao Paulo couriers need shade"], spelling
        assert "1 petition found." in response.text
    assert listed(client.get("/petitions?city=porto").text) == ["Porto couriers need shade"]
    assert listed(client.get("/petitions?city=Berlin").text) == []
    assert "No petitions match" in client.get("/petitions?city=Berlin").text
    assert len(listed(client.get("/petitions").text)) == 3


def test_listing_filters_by_topic(app, client):
    with app.app_context():
        olga = make_member()
        make_petition(olga, title="Courier rest stops", topic="delivery")
        make_petition(olga, title="Driver fare transparency", topic="ride-hailing")
        make_petition(olga, title="Holiday let cap", topic="short-term-rentals")

    assert listed(client.get("/petitions?topic=ride-hailing").text) == ["Driver fare transparency"]
    assert listed(client.get("/petitions?topic=delivery").text) == ["Courier rest stops"]
    page = client.get("/petitions?topic=delivery").text
    assert '<option value="delivery" selected>' in page
    # An unknown topic is ignored rather than matching nothing.
    assert len(listed(client.get("/petitions?topic=no-such-topic").text)) == 3


def test_listing_state_filter_defaults_to_open_and_never_shows_drafts_or_hidden(app, client):
    with app.app_context():
        olga = make_member()
        make_petition(olga, title="Open petition here")
        services.close(make_petition(olga, title="Closed petition here"))
        services.declare_victory(make_petition(olga, title="Won petition here"), "We won it all.")
        make_petition(olga, title="Draft petition here", publish=False)
        services.hide(make_petition(olga, title="Hidden petition here"), "Breaks the rules")
        # A closed petition that was won after closing is listed as won.
        closed_then_won = make_petition(olga, title="Closed then won here")
        services.close(closed_then_won)
        services.declare_victory(closed_then_won, "The council agreed in the end.")

    def titles(query: str) -> set[str]:
        response = client.get(f"/petitions{query}")
        assert response.status_code == 200
        return set(listed(response.text))

    assert titles("") == {"Open petition here"}
    assert titles("?state=open") == {"Open petition here"}
    assert titles("?state=closed") == {"Closed petition here"}
    assert titles("?state=won") == {"Won petition here", "Closed then won here"}
    everything = {
        "Open petition here",
        "Closed petition here",
        "Won petition here",
        "Closed then won here",
    }
    assert titles("?state=all") == everything
    # Asking for drafts or hidden petitions by name shows only the public ones.
    assert titles("?state=draft") == everything
    assert titles("?state=hidden") == everything
    assert titles("?state=all&q=here") == everything
    assert "badge" in client.get("/petitions?state=closed").text


def test_listing_searches_title_and_ask_case_insensitively(app, client):
    with app.app_context():
        olga = make_member()
        make_petition(
            olga,
            title="Couriers deserve rest stops",
            ask="Open public toilets and shelters along delivery routes.",
        )
        make_petition(
            olga,
            title="Protect bike lanes",
            ask="Keep cars out of the lanes that COURIERS ride every day.",
        )
        make_petition(
            olga, title="Cap holiday lets in Alfama", ask="Limit short lets to 90 nights a year."
        )

    def search(q: str) -> set[str]:
        return set(listed(client.get("/petitions", query_string={"q": q}).text))

    assert search("couriers") == {"Couriers deserve rest stops", "Protect bike lanes"}
    assert search("SHELTERS") == {"Couriers deserve rest stops"}  # only in the ask
    assert search("alfama") == {"Cap holiday lets in Alfama"}  # only in the title
    assert search("spaceships") == set()
    page = client.get("/petitions?q=alfama").text
    assert 'value="alfama"' in page  # the search box keeps the query
    # Search combines with the other filters.
    assert (
        listed(client.get("/petitions", query_string={"q": "couriers", "city": "Porto"}).text) == []
    )


def test_trending_counts_only_confirmed_signatures_of_the_last_24_hours(app, client, run_jobs):
    with app.app_context():
        olga = make_member()
        old = make_petition(olga, title="Old favourite")
        rising = make_petition(olga, title="Rising now")
        yesterday = make_petition(olga, title="Busy this morning")
        quiet = make_petition(olga, title="Quiet one")
        for n in range(3):
            backdate(add_signature(old, f"Old Signer {n}"), hours=26)
        add_signature(rising, "Fresh Signer")
        for n in range(2):
            backdate(add_signature(yesterday, f"Morning Signer {n}"), hours=22)
        # Pending signatures count nowhere, however recent.
        for n in range(4):
            add_signature(quiet, f"Pending Signer {n}", confirm=False)
        ids = (old.id, rising.id, yesterday.id, quiet.id)
    run_jobs()
    with app.app_context():
        assert [signature_count(i) for i in ids] == [3, 1, 2, 0]

    # Recent signatures (from petition_hourly_counts) first, then the total.
    trending = ["Busy this morning", "Rising now", "Old favourite", "Quiet one"]
    assert listed(client.get("/petitions").text) == trending
    assert listed(client.get("/petitions?sort=trending").text) == trending
    assert listed(client.get("/petitions?sort=most-signed").text) == [
        "Old favourite",
        "Busy this morning",
        "Rising now",
        "Quiet one",
    ]
    assert listed(client.get("/petitions?sort=nonsense").text) == trending


def test_newest_sorts_by_when_a_petition_opened(app, client):
    with app.app_context():
        olga = make_member()
        first, second, third = (
            make_petition(olga, title=title, publish=False)
            for title in ("Drafted first", "Drafted second", "Drafted third")
        )
        for petition in (second, third, first):
            services.publish(petition)

    assert listed(client.get("/petitions?sort=newest").text) == [
        "Drafted first",
        "Drafted third",
        "Drafted second",
    ]


def test_listing_pages_twenty_at_a_time_and_clamps_the_page(app, client):
    with app.app_context():
        olga = make_member()
        for n in range(1, 26):
            make_petition(olga, title=f"Petition number {n:02d}")
        make_petition(olga, title="Petition number 99", topic="other")

    first = client.get("/petitions?topic=delivery")
    assert "25 petitions found." in first.text
    assert listed(first.text) == [f"Petition number {n:02d}" for n in range(25, 5, -1)]
    assert "Page 1 of 2" in first.text
    next_link = Tags(first.text).links["Next"]
    assert parse_qs(urlsplit(next_link).query) == {"topic": ["delivery"], "page": ["2"]}
    assert "Previous" not in Tags(first.text).links

    second = client.get(next_link)
    assert listed(second.text) == [f"Petition number {n:02d}" for n in range(5, 0, -1)]
    assert "Page 2 of 2" in second.text
    assert "Next" not in Tags(second.text).links
    assert "page=1" in Tags(second.text).links["Previous"]

    beyond = client.get("/petitions?topic=delivery&page=99")
    assert beyond.status_code == 200
    assert "Page 2 of 2" in beyond.text
    assert listed(beyond.text) == listed(second.text)
    for junk in ("0", "-3", "abc", "9" * 12):
        response = client.get(f"/petitions?topic=delivery&page={junk}")
        assert response.status_code == 200, junk
        assert listed(response.text) == listed(first.text), junk
    # Names the link builder keeps for itself are not filters, and never reach the links.
    reserved = client.get("/petitions?topic=delivery&endpoint=x&_method=POST&_scheme=javascript")
    assert reserved.status_code == 200
    next_link = Tags(reserved.text).links["Next"]
    assert parse_qs(urlsplit(next_link).query) == {"topic": ["delivery"], "page": ["2"]}
    assert next_link.startswith("/petitions?")


def test_a_page_number_int_cannot_read_falls_back_to_page_one(app, client):
    with app.app_context():
        make_petition(make_member())
    response = client.get("/petitions", query_string={"page": "²"})
    assert response.status_code == 200
    assert listed(response.text) == ["Fair pay for couriers"]


def test_filter_form_in_a_browser(app, page):
    with app.app_context():
        olga = make_member()
        make_petition(olga, title="Sao Paulo courier shelters", city="São Paulo")
        make_petition(olga, title="Sao Paulo driver fares", city="Sao Paulo", topic="ride-hailing")
        make_petition(olga, title="Lisbon courier shelters")

    page.goto("/petitions")
    page.get_by_label("City").fill("sao paulo")
    page.get_by_label("Topic").select_option(label="Delivery and courier work")
    page.get_by_role("button", name="Show petitions").click()
    cards = page.locator(".petition-card").get_by_role("heading", level=2)  # right under h1
    assert cards.all_inner_texts() == ["Sao Paulo courier shelters"]
    assert page.get_by_role("status").inner_text() == "1 petition found."
    assert page.get_by_label("City").input_value() == "sao paulo"
    cards.first.get_by_role("link").click()
    assert page.get_by_role("heading", level=1).inner_text() == "Sao Paulo courier shelters"


# --- 2. the petition page -----------------------------------------------------------------


def test_petition_page_shows_the_petition_with_sanitised_markdown(app, client, run_jobs):
    title = 'Stop "surge" pricing <now> & forever?'
    ask = (
        "**Cap surge pricing** at twice the base fare.\n\n"
        "<script>alert('owned')</script>\n\n"
        "[Read more](javascript:alert(1)) or [the report](https://example.org/report)"
    )
    with app.app_context():
        olga = make_member(name="Olga Organiser")
        petition = make_petition(
            olga,
            title=title,
            ask=ask,
            decision_maker_name="Rui Costa",
            decision_maker_role="Minister of Transport",
            topic="ride-hailing",
            goal=10,
        )
        for n in range(3):
            add_signature(petition, f"Signer {n}")
        petition_id, olga_id = petition.id, olga.id
    run_jobs()

    response = client.get(f"/petitions/{petition_id}")
    assert response.status_code == 200
    html = response.text
    tags = Tags(html)
    assert unescape(html.split("<h1>", 1)[1].split("</h1>", 1)[0]) == title
    assert "<strong>Rui Costa</strong>, Minister of Transport" in html
    assert "Ride-hailing · Lisbon" in html
    assert '<span class="badge state-open">Open</span>' in html
    assert tags.links["Olga Organiser"] == f"/members/{olga_id}"

    ask_html = html.split('<div class="ask">', 1)[1].split("</div>", 1)[0]
    assert "<strong>Cap surge pricing</strong>" in ask_html
    assert "<script>" not in ask_html and "&lt;script&gt;" in ask_html
    assert "<script>alert" not in html
    assert 'href="javascript' not in ask_html.lower()
    assert 'href="https://example.org/report"' in ask_html
    assert 'rel="nofollow noopener ugc"' in ask_html

    # 3 of a goal of 10: 30%.
    assert "<strong>3</strong> signatures of a goal of 10" in html
    progress = next(a for t, a in tags.tags if a.get("role") == "progressbar")
    assert progress["aria-valuenow"] == "3" and progress["aria-valuemax"] == "10"
    assert '<span style="width: 30%">' in html
    assert "Sign this petition" in html


def test_progress_bar_stops_at_the_goal(app, client, run_jobs):
    with app.app_context():
        petition = make_petition(make_member(), goal=2)
        for n in range(3):
            add_signature(petition, f"Signer {n}")
        petition_id = petition.id
    run_jobs()
    html = client.get(f"/petitions/{petition_id}").text
    progress = next(a for t, a in Tags(html).tags if a.get("role") == "progressbar")
    assert progress["aria-valuenow"] == "2"
    assert '<span style="width: 100%">' in html
    assert "<strong>3</strong> signatures of a goal of 2" in html


def test_petition_page_has_open_graph_tags_and_url_encoded_share_links(app, client):
    title = "Fair pay & safe roads for couriers?"
    with app.app_context():
        petition = make_petition(
            make_member(), title=title, ask="Pay **at least** the minimum wage per hour."
        )
        petition_id = petition.id
    link = f"{BASE}/petitions/{petition_id}"
    tags = Tags(client.get(f"/petitions/{petition_id}").text)

    meta = tags.meta()
    assert meta["og:title"] == title
    assert meta["og:type"] == "website"
    assert meta["og:site_name"] == "Groundswell"
    assert meta["og:url"] == link
    assert meta["og:description"] == "To Carla Mendes: Pay **at least** the minimum wage per hour."
    assert meta["twitter:card"] == "summary"
    assert meta["description"] == "Pay **at least** the minimum wage per hour."
    assert "robots" not in meta
    assert ("link", {"rel": "canonical", "href": link}) in tags.tags

    text = f"Sign: {title}"

    def query(name: str) -> dict[str, list[str]]:
        return parse_qs(urlsplit(tags.links[name]).query)

    assert tags.links["Email"].startswith("mailto:?")
    assert query("Email") == {"subject": [text], "body": [f"{text}\n\n{link}"]}
    assert tags.links["WhatsApp"].startswith("https://wa.me/?")
    assert query("WhatsApp") == {"text": [f"{text} {link}"]}
    assert query("Telegram") == {"url": [link], "text": [text]}
    assert query("Bluesky") == {"text": [f"{text} {link}"]}
    assert query("X") == {"text": [text], "url": [link]}
    assert query("Facebook") == {"u": [link]}
    assert query("LinkedIn") == {"url": [link]}
    # The link is encoded, not pasted raw into the query.
    for name in ("Email", "WhatsApp", "Facebook"):
        assert f"{BASE}/" not in tags.links[name].split("?", 1)[1], name
    share_box = {"type": "text", "id": f"share-link-{petition_id}", "value": link, "readonly": None}
    assert ("input", share_box) in tags.tags
    assert tags.links["Printable version for delivery"] == f"/petitions/{petition_id}/deliver"


def test_recent_signers_show_only_confirmed_people_who_chose_to_be_named(app, client, run_jobs):
    with app.app_context():
        petition = make_petition(make_member())
        add_signature(petition, "Ana Lima", comment="I ride 60 km a day <b>unpaid</b>.")
        add_signature(petition, "Bruno Shy", comment="Please hurry up.", show_name=False)
        add_signature(petition, "Carla Pending", confirm=False)
        withdrawn = add_signature(petition, "Dora Gone", comment="Changed my mind")
        services.withdraw_signature(withdrawn)
        add_signature(petition, "Eva Later", city="Porto")
        petition_id = petition.id
    run_jobs()

    html = client.get(f"/petitions/{petition_id}").text
    signers = section(html, "signers-heading")
    names = re.findall(r"<li><strong>(.*?)</strong>, (.*?) <span", signers)
    assert names == [("Eva Later", "Porto"), ("Ana Lima", "Lisbon")]  # latest first
    assert "<blockquote>I ride 60 km a day &lt;b&gt;unpaid&lt;/b&gt;.</blockquote>" in signers
    for absent in ("Bruno Shy", "Please hurry up.", "Carla Pending", "Dora Gone", "Changed my"):
        assert absent not in html, absent
    assert "<strong>3</strong> signatures" in html


def test_signatures_by_city_group_spellings_of_one_city(app, client, run_jobs):
    with app.app_context():
        petition = make_petition(make_member())
        add_signature(petition, "Signer One", city="São Paulo")
        add_signature(petition, "Signer Two", city="sao paulo")
        add_signature(petition, "Signer Three", city="São  Paulo ")
        add_signature(petition, "Signer Four", city="Lisbon")
        add_signature(petition, "Signer Five", city="Porto", confirm=False)
        petition_id = petition.id

    assert section(client.get(f"/petitions/{petition_id}").text, "cities-heading") == ""
    run_jobs()
    rows = table_rows(section(client.get(f"/petitions/{petition_id}").text, "cities-heading"))
    assert len(rows) == 2
    (first_city, first_count), second = rows
    assert first_city in {"São Paulo", "sao paulo", "São  Paulo "} and first_count == "3"
    assert second == ["Lisbon", "1"]


def test_signature_chart_appears_once_signatures_are_counted(app, client, run_jobs):
    with app.app_context():
        petition = make_petition(make_member())
        petition_id = petition.id
    assert "<polyline" not in client.get(f"/petitions/{petition_id}").text

    with app.app_context():
        petition = db.session.get(Petition, petition_id)
        backdate(add_signature(petition, "Early Bird"), hours=48)
        add_signature(petition, "Today One")
        add_signature(petition, "Today Two")
    # Confirmed, but no tally has run yet: nothing to draw.
    assert "<polyline" not in client.get(f"/petitions/{petition_id}").text
    run_jobs()

    html = client.get(f"/petitions/{petition_id}").text
    chart = section(html, "chart-heading")
    assert '<svg viewBox="0 0 600 160"' in chart
    points = re.search(r'<polyline [^>]*points="([^"]*)"', chart).group(1)
    # One point a day, cumulative: 1 two days ago, still 1 yesterday, 3 today (the peak).
    assert points == "0.0,106.7 300.0,106.7 600.0,0.0"
    assert "rising to 3 signatures" in chart


# --- 3. drafts and hidden petitions ------------------------------------------------------


def test_only_the_organiser_sees_a_draft(app, client, auth):
    with app.app_context():
        olga = make_member()
        make_member(email="bo@example.org", name="Bo")
        petition_id = make_petition(olga, title="Still drafting this", publish=False).id
    url = f"/petitions/{petition_id}"

    assert client.get(url).status_code == 404
    assert client.get(f"{url}/deliver").status_code == 404
    login(auth, "bo@example.org")
    assert client.get(url).status_code == 404
    assert client.get(f"{url}/deliver").status_code == 404
    auth.logout()

    login(auth, "olga@example.org")
    page = client.get(url)
    assert page.status_code == 200
    assert "Still drafting this" in page.text
    assert "This is a draft. Only you can see it" in page.text
    assert Tags(page.text).meta()["robots"] == "noindex"
    assert "Publish" in page.text
    assert "Share" not in page.text  # nothing to share until it is public
    assert "Still drafting this" not in client.get("/petitions?state=all").text


def test_hidden_petitions_are_gone_for_the_public(app, client, auth):
    with app.app_context():
        olga = make_member()
        make_member(email="bo@example.org", name="Bo")
        moderator = make_member(email="mod@example.org", name="Mo Moderator")
        moderator.is_moderator = True
        db.session.commit()
        petition = make_petition(olga, title="Something against the rules")
        add_signature(petition, "Early Signer")
        services.hide(petition, "Targets a private person")
        petition_id = petition.id
    url = f"/petitions/{petition_id}"

    assert client.get(url).status_code == 404
    assert client.get(f"{url}/deliver").status_code == 404
    login(auth, "bo@example.org")
    assert client.get(url).status_code == 404
    auth.logout()
    login(auth, "mod@example.org")
    seen = client.get(url)
    assert seen.status_code == 200
    assert "hidden by a moderator: Targets a private person" in seen.text
    assert "Hide (moderator)" not in seen.text
    auth.logout()
    login(auth, "olga@example.org")
    assert "Targets a private person" in client.get(url).text


# --- 4. the delivery view ------------------------------------------------------------------


def test_delivery_view_lists_only_named_signers_and_counts_the_rest(app, client, run_jobs):
    with app.app_context():
        petition = make_petition(make_member(), title="Deliver me to the council")
        add_signature(petition, "Ana Lima", comment="For my kids.")
        add_signature(petition, "Bruno Costa", city="Porto")
        add_signature(petition, "Quiet One", show_name=False, comment="Secret reason")
        add_signature(petition, "Quiet Two", show_name=False)
        add_signature(petition, "Not Confirmed", confirm=False)
        petition_id = petition.id
    run_jobs()

    response = client.get(f"/petitions/{petition_id}/deliver")
    assert response.status_code == 200
    html = response.text
    assert "<h1>Deliver me to the council</h1>" in html
    assert "<strong>4</strong> people signed this petition" in html
    assert "2 of them chose not to have their name shown." in html
    rows = table_rows(html)
    assert [row[:2] for row in rows] == [["Ana Lima", "Lisbon"], ["Bruno Costa", "Porto"]]
    assert rows[0][3] == "For my kids." and rows[1][3] == ""
    for absent in ("Quiet One", "Quiet Two", "Secret reason", "Not Confirmed"):
        assert absent not in html


def test_delivery_view_says_nothing_about_unnamed_signers_when_there_are_none(
    app, client, run_jobs
):
    with app.app_context():
        petition = make_petition(make_member())
        add_signature(petition, "Ana Lima")
        petition_id = petition.id
    run_jobs()
    html = client.get(f"/petitions/{petition_id}/deliver").text
    assert "<strong>1</strong> people signed" in html
    assert "chose not to have their name shown" not in html


# --- 5. the CSV download -----------------------------------------------------------------


def read_csv(text: str) -> list[dict[str, str]]:
    reader = csv.reader(io.StringIO(text))
    header = next(reader)
    assert header == ["name", "city", "signed_at", "comment", "email"]
    return [dict(zip(header, row, strict=True)) for row in reader]


def test_signatures_csv_for_the_organiser(app, client, auth):
    with app.app_context():
        olga = make_member()
        petition = make_petition(olga)
        add_signature(
            petition,
            "Ana Lima",
            comment='=HYPERLINK("http://evil.example","click")',
            wants_updates=True,
        )
        add_signature(petition, "Bruno Shy", show_name=False, city="Porto")
        add_signature(petition, "Carla Quiet", comment="-2+3", wants_updates=False)
        add_signature(petition, "Dora Pending", wants_updates=True, confirm=False)
        gone = add_signature(petition, "Eva Gone", wants_updates=True)
        services.withdraw_signature(gone)
        petition_id = petition.id
    url = f"/petitions/{petition_id}/signatures.csv"

    login(auth, "olga@example.org")
    response = client.get(url)
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"] == (
        f'attachment; filename="petition-{petition_id}-signatures.csv"'
    )
    rows = read_csv(response.text)
    assert [(r["name"], r["city"], r["email"]) for r in rows] == [
        ("Ana Lima", "Lisbon", "ana.lima@example.org"),
        ("Anonymous", "Porto", ""),
        ("Carla Quiet", "Lisbon", ""),
    ]
    assert rows[0]["comment"] == '\'=HYPERLINK("http://evil.example","click")'
    assert rows[1]["comment"] == ""
    assert rows[2]["comment"] == "'-2+3"
    for row in rows:
        signed_at = datetime.fromisoformat(row["signed_at"])
        assert abs(utcnow() - signed_at) < timedelta(minutes=5)
    assert "Download signatures (CSV)" in client.get(f"/petitions/{petition_id}").text


def test_signatures_csv_is_for_the_organiser_only(app, client, auth):
    with app.app_context():
        olga = make_member()
        make_member(email="bo@example.org", name="Bo")
        petition = make_petition(olga)
        add_signature(petition, "Ana Lima", wants_updates=True)
        petition_id = petition.id
    url = f"/petitions/{petition_id}/signatures.csv"

    guest = client.get(url)
    assert guest.status_code == 302
    assert urlsplit(guest.headers["Location"]).path == "/login"
    assert parse_qs(urlsplit(guest.headers["Location"]).query)["next"] == [url]

    login(auth, "bo@example.org")
    forbidden = client.get(url)
    assert forbidden.status_code == 403
    assert "ana.lima@example.org" not in forbidden.text
    assert "Download signatures (CSV)" not in client.get(f"/petitions/{petition_id}").text


def test_signatures_csv_neutralises_formulas_in_the_email_column(app, client, auth):
    with app.app_context():
        petition = make_petition(make_member())
        add_signature(petition, "Formula Fan", email="=1+1@example.org", wants_updates=True)
        petition_id = petition.id
    login(auth, "olga@example.org")
    rows = read_csv(client.get(f"/petitions/{petition_id}/signatures.csv").text)
    assert rows[0]["email"][:1] not in ("=", "+", "-", "@")


# --- 6. home page and profile -------------------------------------------------------------


def home_data(app, run_jobs) -> None:
    with app.app_context():
        olga = make_member()
        busy = make_petition(olga, title="Busy Lisbon petition")
        make_petition(olga, title="Quiet Porto petition", city="Porto")
        make_petition(olga, title="Quiet Lisbon petition")
        services.close(make_petition(olga, title="Closed Porto petition", city="Porto"))
        make_petition(olga, title="Draft Porto petition", city="Porto", publish=False)
        add_signature(busy, "Ana Lima")
        add_signature(busy, "Bruno Costa")
    run_jobs()


def test_trending_near_puts_the_visitors_city_first(app, run_jobs):
    home_data(app, run_jobs)
    with app.app_context():
        assert [p.title for p in services.trending_near(None)] == [
            "Busy Lisbon petition",
            "Quiet Lisbon petition",
            "Quiet Porto petition",
        ]
        for spelling in ("porto", "Porto", " PORTO"):
            assert [p.title for p in services.trending_near(spelling)] == [
                "Quiet Porto petition",
                "Busy Lisbon petition",
                "Quiet Lisbon petition",
            ], spelling
        for n in range(8):
            make_petition(member_by_email("olga@example.org"), title=f"Extra petition {n}")
        assert len(services.trending_near("Porto")) == 6


def test_home_shows_trending_open_petitions_with_the_members_city_first(
    app, client, auth, run_jobs
):
    home_data(app, run_jobs)
    guest_home = section(client.get("/").text, "trending-heading")
    assert listed(guest_home) == [
        "Busy Lisbon petition",
        "Quiet Lisbon petition",
        "Quiet Porto petition",
    ]
    assert "<strong>2</strong> of 100 signatures" in guest_home

    auth.member(email="pia@example.org", name="Pia", city="porto")
    member_home = client.get("/").text
    assert "&lt;" not in member_home
    assert listed(section(member_home, "trending-heading")) == [
        "Quiet Porto petition",
        "Busy Lisbon petition",
        "Quiet Lisbon petition",
    ]
    assert "Closed Porto petition" not in member_home
    assert "Draft Porto petition" not in member_home


def test_home_has_no_petition_section_without_open_petitions(app, client):
    assert "trending-heading" not in client.get("/").text
    with app.app_context():
        olga = make_member()
        make_petition(olga, title="Only a draft", publish=False)
        services.close(make_petition(olga, title="Only closed"))
    home = client.get("/").text
    assert "trending-heading" not in home
    assert "Only a draft" not in home and "Only closed" not in home


def profile_data(app) -> tuple[int, int]:
    with app.app_context():
        olga = make_member()
        bo = make_member(email="bo@example.org", name="Bo")
        make_petition(olga, title="Olga's open petition")
        services.close(make_petition(olga, title="Olga's closed petition"))
        services.declare_victory(make_petition(olga, title="Olga's won petition"), "Done!")
        make_petition(olga, title="Olga's draft petition", publish=False)
        services.hide(make_petition(olga, title="Olga's hidden petition"), "Rules")
        make_petition(bo, title="Bo's petition")
        return olga.id, bo.id


def test_started_by_lists_the_public_petitions_a_member_started(app):
    olga_id, bo_id = profile_data(app)
    with app.app_context():
        olga, bo = db.session.get(Member, olga_id), db.session.get(Member, bo_id)
        assert [p.title for p in services.started_by(olga)] == [
            "Olga's won petition",
            "Olga's closed petition",
            "Olga's open petition",
        ]
        assert [p.title for p in services.started_by(bo)] == ["Bo's petition"]


def test_profile_page_lists_the_public_petitions_a_member_started(app, client):
    olga_id, bo_id = profile_data(app)
    page = client.get(f"/members/{olga_id}").text
    assert "&lt;" not in page
    assert listed(section(page, "started-heading")) == [
        "Olga's won petition",
        "Olga's closed petition",
        "Olga's open petition",
    ]
    assert "draft petition" not in page and "hidden petition" not in page
    assert listed(section(client.get(f"/members/{bo_id}").text, "started-heading")) == [
        "Bo's petition"
    ]


def test_profile_of_a_member_who_started_nothing(app, client):
    profile_data(app)
    with app.app_context():
        nobody_id = make_member(email="nobody@example.org", name="Nobody Yet").id
    page = client.get(f"/members/{nobody_id}").text
    assert "started-heading" not in page
    assert "Nobody Yet has not started or joined anything yet" in page


# --- 7. data export and account deletion --------------------------------------------------


def test_data_export_then_deletion_keeps_signatures_counted_but_anonymous(
    app, client, auth, run_jobs
):
    with app.app_context():
        olga = make_member()
        petition = make_petition(olga, title="Olga's petition")
        other = make_petition(olga, title="Olga's other petition")
        add_signature(petition, "Bruno Costa")
        petition_id, other_id = petition.id, other.id

    auth.member(email="ana@example.org", name="Ana Lima", city="Porto")
    with app.app_context():
        ana = member_by_email("ana@example.org")
        petition = db.session.get(Petition, petition_id)
        outcome = services.sign_as_member(
            petition,
            ana,
            comment="Couriers need this.",
            show_name=True,
            wants_updates=True,
            address="203.0.113.1",
        )
        assert outcome == SignOutcome.COUNTED
        # Signed as a guest with the same address in other spelling, before or after joining.
        add_signature(
            db.session.get(Petition, other_id),
            "Ana L.",
            email="Ana@Example.org",
            comment="Me again",
            show_name=True,
        )
        own_id = make_petition(ana, title="Ana's own petition", city="Porto").id
        draft_id = make_petition(ana, title="Ana's unfinished draft", publish=False).id
        ana_id = ana.id
    run_jobs()
    with app.app_context():
        assert signature_count(petition_id) == 2 and signature_count(other_id) == 1

    export = client.get("/account/data.json")
    assert export.status_code == 200
    data = json.loads(export.text)
    assert data["petitions_started"] == [
        {"id": own_id, "title": "Ana's own petition", "state": "open", "signatures": 0},
        {"id": draft_id, "title": "Ana's unfinished draft", "state": "draft", "signatures": 0},
    ]
    signed = {s["petition_id"]: s for s in data["signatures"]}
    assert set(signed) == {petition_id, other_id}
    assert signed[petition_id]["name"] == "Ana Lima"
    assert signed[petition_id]["comment"] == "Couriers need this."
    assert signed[petition_id]["state"] == "confirmed"
    assert signed[petition_id]["wants_updates"] is True
    assert signed[other_id]["email"] == "Ana@Example.org"
    assert signed[other_id]["comment"] == "Me again"
    assert "Bruno Costa" not in export.text
    assert "Ana Lima" in client.get(f"/petitions/{petition_id}").text

    token = csrf_token(client.get("/account").text)
    deleted = client.post(
        "/account/delete",
        data={"csrf_token": token, "current_password": PASSWORD, "understood": "y"},
    )
    assert deleted.status_code == 302

    with app.app_context():
        assert db.session.get(Member, ana_id) is None
        assert signature_count(petition_id) == 2
        assert services.reconcile(petition_id) == 0 and services.reconcile(other_id) == 0
        assert signature_count(petition_id) == 2 and signature_count(other_id) == 1
        rows = db.session.scalars(
            select(Signature).where(Signature.petition_id.in_([petition_id, other_id]))
        ).all()
        anonymised = [s for s in rows if s.name == "Former member"]
        assert len(anonymised) == 2
        for signature in anonymised:
            assert signature.state == SignatureState.CONFIRMED and signature.counted
            assert signature.member_id is None and signature.comment is None
            assert not signature.show_name and not signature.wants_updates
            assert signature.email == signature.email_key == f"deleted-{signature.id}@invalid"
        assert not any("ana" in s.email.lower() for s in rows)
        own = db.session.get(Petition, own_id)
        assert own.organiser_id is None and own.state == "open"
        assert db.session.get(Petition, draft_id) is None

    page = client.get(f"/petitions/{petition_id}").text
    assert "Ana Lima" not in page and "Couriers need this." not in page
    assert "<strong>2</strong> signatures" in page
    assert "Bruno Costa" in page
    deliver = client.get(f"/petitions/{petition_id}/deliver").text
    assert "1 of them chose not to have their name shown." in deliver
    assert "Ana Lima" not in deliver
    assert "Me again" not in client.get(f"/petitions/{other_id}").text
    assert "a former member" in client.get(f"/petitions/{own_id}").text
    assert client.get(f"/members/{ana_id}").status_code == 404


def test_an_unconfirmed_account_does_not_export_guest_signatures_of_its_address(app, client, auth):
    with app.app_context():
        petition = make_petition(make_member())
        add_signature(
            petition,
            "Vera Victim",
            email="vera@example.org",
            comment="I work for this platform",
            show_name=False,
        )
    # Someone else registers with Vera's address and never confirms it.
    auth.register(email="vera@example.org", name="Not Vera")
    assert auth.login(email="vera@example.org").status_code == 302
    data = json.loads(client.get("/account/data.json").text)
    assert data["signatures"] == []


def test_fields_without_help_or_errors_carry_no_empty_aria_attributes(app, client):
    with app.app_context():
        petition_id = make_petition(make_member()).id
    page = client.get(f"/petitions/{petition_id}").text
    assert '<input aria-describedby="email-help"' in page  # help text is tied to its field
    assert '="None"' not in page
    assert 'aria-invalid="' not in page  # nothing is invalid before the form is sent


def test_anonymous_views_share_one_cached_page_each_with_its_own_csrf_token(app, client, redis):
    with app.app_context():
        petition_id = make_petition(make_member()).id
    url = f"/petitions/{petition_id}"
    app.config["PAGE_CACHE_SECONDS"] = 60
    try:
        first = client.get(url).text  # rendered, then stored for everyone
        with app.app_context():
            db.session.get(Petition, petition_id).title = "A newer title for the petition"
            db.session.commit()
        visitor = app.test_client()
        cached = visitor.get(url).text
        assert "Fair pay for couriers" in cached and "A newer title" not in cached
        assert PLACEHOLDER not in cached
        assert csrf_token(cached) != csrf_token(first)
        signed = visitor.post(
            f"{url}/sign",
            data={
                "csrf_token": csrf_token(cached),
                "name": "Rui Costa",
                "email": "rui@example.org",
                "city": "Porto",
            },
        )
        assert signed.status_code == 302  # the token filled into the cached page is valid

        # Members, and anyone with a query string or a message to see, get the page as it is.
        assert "A newer title" in client.get(f"{url}?ref=share").text
        submit(client, "/login", {"email": "olga@example.org", "password": PASSWORD})
        assert "A newer title" in client.get(url).text
        redis.delete(f"page:petition:{petition_id}")  # the entry expires
        assert "A newer title" in visitor.get(url).text
    finally:
        app.config["PAGE_CACHE_SECONDS"] = 0


def test_text_that_looks_like_the_token_placeholder_is_shown_as_written(app, client):
    with app.app_context():
        petition_id = make_petition(make_member(), title="Say <csrf> and __csrf_token__").id
    app.config["PAGE_CACHE_SECONDS"] = 60
    try:
        pages = [app.test_client().get(f"/petitions/{petition_id}").text for _ in range(2)]
    finally:
        app.config["PAGE_CACHE_SECONDS"] = 0
    for page in pages:  # rendered, then served from the cache
        assert "Say &lt;csrf&gt; and __csrf_token__" in page
        assert csrf_token(page) not in page.replace(f'value="{csrf_token(page)}"', "")


def with_page_cache(app):
    """Share anonymous views for a minute, as production does for a couple of seconds."""
    app.config["PAGE_CACHE_SECONDS"] = 60


def test_a_flashed_message_reaches_its_reader_and_never_the_shared_page(app, client):
    with app.app_context():
        petition = make_petition(make_member())
        token = services.confirmation_token(add_signature(petition, "Rui Costa", confirm=False))
        petition_id = petition.id
    with_page_cache(app)
    try:
        confirm = f"/petitions/signatures/{token}/confirm"
        done = client.post(confirm, data={"csrf_token": csrf_token(client.get(confirm).text)})
        assert done.headers["Location"] == f"/petitions/{petition_id}"
        mine = client.get(done.headers["Location"]).text
        assert "your signature is confirmed and counted" in mine
        assert "your signature is confirmed" not in client.get(f"/petitions/{petition_id}").text
        anyone = app.test_client().get(f"/petitions/{petition_id}").text
        assert "Fair pay for couriers" in anyone
        assert "your signature is confirmed" not in anyone
    finally:
        app.config["PAGE_CACHE_SECONDS"] = 0


def test_hiding_closing_or_editing_a_petition_shows_at_once_despite_the_page_cache(
    app, client, auth
):
    with app.app_context():
        olga = make_member()
        petition_id = make_petition(olga).id
    url = f"/petitions/{petition_id}"
    visitor = app.test_client()
    with_page_cache(app)
    try:
        assert "Fair pay for couriers" in visitor.get(url).text  # now shared from Redis

        login(auth, "olga@example.org")
        edited = submit(
            client,
            f"{url}/edit",
            {
                "title": "Fair pay for every courier",
                "ask": "Set a minimum rate per delivery for every platform in the city.",
                "decision_maker_name": "Carla Mendes",
                "decision_maker_role": "Mayor of Lisbon",
                "city": "Lisbon",
                "topic": "delivery",
                "goal": "100",
                "closes_on": (utcnow() + timedelta(days=30)).date().isoformat(),
            },
        )
        assert edited.status_code == 302
        assert "Fair pay for every courier" in visitor.get(url).text

        page = client.get(url).text
        client.post(f"{url}/close", data={"csrf_token": csrf_token(page)})
        assert "Not taking signatures" in visitor.get(url).text

        with app.app_context():
            services.hide(db.session.get(Petition, petition_id), "Breaks the rules")
        assert visitor.get(url).status_code == 404
    finally:
        app.config["PAGE_CACHE_SECONDS"] = 0


def test_the_sign_forms_let_browsers_fill_in_the_signers_own_details(app, client):
    with app.app_context():
        petition_id = make_petition(make_member()).id
    for url in (f"/petitions/{petition_id}", f"/petitions/{petition_id}/embed"):
        inputs = re.findall(r"<input [^>]*>", client.get(url).text)
        for name, token in (("name", "name"), ("email", "email"), ("city", "address-level2")):
            [tag] = [tag for tag in inputs if f' name="{name}"' in tag]
            assert f'autocomplete="{token}"' in tag, (url, tag)


# --- the embed ---------------------------------------------------------------------------


def _embed_sign(app, petition_id: int, email: str, **changes):
    form = {"name": "Rui Costa", "email": email, "city": "Porto", "show_name": "y", **changes}
    return app.test_client().post(f"/petitions/{petition_id}/embed", data=form)


def test_the_embed_answers_the_same_whether_or_not_the_address_signed(app, outbox, run_jobs):
    with app.app_context():
        petition = make_petition(make_member("olga@example.org", "Olga"))
        add_signature(petition, email="signed@example.org")
        petition_id = petition.id
    run_jobs()
    outbox.clear()
    new = _embed_sign(app, petition_id, "new@example.org")
    signed = _embed_sign(app, petition_id, "signed@example.org")
    assert new.status_code == signed.status_code == 200
    assert new.text.replace("new@example.org", "signed@example.org") == signed.text
    assert "If signed@example.org has not signed yet, we have sent it a link" in signed.text
    run_jobs()
    assert outbox.last_to("new@example.org")["Subject"].startswith("Confirm your signature")
    assert outbox.last_to("signed@example.org")["Subject"].startswith("You have already signed")


def _title(page: str) -> str:
    return page.split("<title>", 1)[1].split("</title>", 1)[0]


def test_a_refused_embed_signature_says_error_first_in_the_title(app):
    with app.app_context():
        petition_id = make_petition(make_member("olga@example.org", "Olga")).id
    shown = app.test_client().get(f"/petitions/{petition_id}/embed")
    assert _title(shown.text) == "Sign: Fair pay for couriers · Groundswell"
    refused = _embed_sign(app, petition_id, "not an address")
    assert refused.status_code == 422
    assert _title(refused.text) == "Error: Sign: Fair pay for couriers · Groundswell"
    signed = _embed_sign(app, petition_id, "rui@example.org")
    assert signed.status_code == 200 and not _title(signed.text).startswith("Error")
