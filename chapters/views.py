"""Chapter, meetup and proposal pages. Thin: form in, service call, redirect or render."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from flask import (
    Response,
    abort,
    current_app,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import current_user, login_required
from markupsafe import Markup

from chapters import bp, portability, services
from chapters.forms import (
    ChapterForm,
    ImportForm,
    MeetupForm,
    ProposalForm,
    SettingsForm,
    VoteForm,
)
from chapters.models import (
    CHOICE_LABELS,
    OUTCOME_LABELS,
    Chapter,
    ChapterError,
    Choice,
    Meetup,
    Proposal,
    ProposalState,
    Role,
    RsvpStatus,
)
from core.db import reads_from_replica
from core.extensions import db
from core.forms import (
    INVALID_FORM_STATUS,
    ActionForm,
    form_page,
    refused_page,
    require_action_token,
)
from core.hooks import city_sections, collect, home_sections
from members.signals import profile_sections

MEETUP_PLACE_FIELDS = ("venue", "address", "online_link")
MEMBER_ID_DIGITS = 18  # every id fits a 64-bit column


def _viewer():
    return current_user if current_user.is_authenticated else None


def _chapter_or_404(slug: str) -> Chapter:
    return services.chapter_by_slug(slug) or abort(404)


def _organised_or_403(slug: str) -> Chapter:
    chapter = _chapter_or_404(slug)
    if not chapter.is_organised_by(_viewer()):
        abort(403)
    return chapter


def _meetup_or_404(meetup_id: int) -> Meetup:
    return db.session.get(Meetup, meetup_id) or abort(404)


def _proposal_or_404(proposal_id: int) -> Proposal:
    return db.session.get(Proposal, proposal_id) or abort(404)


def _refuse(form, error: ChapterError) -> None:
    """Show a service's refusal beside the field it is about, or above the form."""
    if error.field and error.field in form:
        form[error.field].errors = [*form[error.field].errors, str(error)]
    else:
        form.form_errors.append(str(error))


def _in_utc(field, chapter: Chapter, was: datetime | None = None) -> datetime:
    """A form's local time in UTC; a time the clocks skip is refused beside its field."""
    try:
        return services.local_to_utc(field.data, chapter.zone, was)
    except ChapterError as error:
        raise ChapterError(str(error), field=field.name) from None


def _page_number() -> int:
    page = request.args.get("page", "1")
    return int(page) if page.isascii() and page.isdigit() and len(page) < 7 else 1


@bp.app_template_filter("local")
def local_filter(moment: datetime | None, chapter: Chapter) -> str:
    """A stored UTC time in the chapter's time zone."""
    return services.local_time(moment, chapter.zone) if moment else ""


@bp.app_template_filter("local_date")
def local_date_filter(moment: datetime | None, chapter: Chapter) -> str:
    """The date of a stored UTC time, as it was in the chapter's time zone."""
    return f"{moment.astimezone(chapter.zone):%-d %B %Y}" if moment else ""


# --- chapters ----------------------------------------------------------------------------


@bp.get("/chapters")
def index():
    result = services.find_chapters(
        q=request.args.get("q", "")[:100],
        city=request.args.get("city", "")[:80],
        page=_page_number(),
    )
    counts = services.member_counts([c.id for c in result.items])
    return render_template(
        "chapters/index.html",
        result=result,
        counts=counts,
        args=request.args,
        invitations=services.invitations_for(_viewer()),
    )


@bp.route("/chapters/new", methods=["GET", "POST"])
@login_required
def new():
    form = ChapterForm()
    existing = services.chapters_in_city(form.city.data) if form.city.data else []
    second = request.form.get("second_chapter") == "yes"
    if form.validate_on_submit():
        details = {name: form[name].data for name in ("name", "city", "time_zone", "description")}
        resent = services.chapter_just_founded(current_user, **details)
        if existing and not second and resent is None:
            # Point the founder to the chapters already there before making another.
            return form_page("chapters/new.html", form, 409, existing=existing)
        try:
            chapter = services.create_chapter(current_user, **details)
        except ChapterError as error:
            _refuse(form, error)
        else:
            flash("Your chapter is founded. Invite people to join it.", "success")
            return redirect(url_for("chapters.show", slug=chapter.slug))
    return form_page("chapters/new.html", form, existing=existing)


def _chapter_context(chapter: Chapter) -> dict:
    upcoming = services.upcoming_meetups([chapter.id])
    past = services.past_meetups(chapter)
    return {
        "chapter": chapter,
        "membership": chapter.membership_of(_viewer()),
        "is_organiser": chapter.is_organised_by(_viewer()),
        "members": services.members_of(chapter),
        "member_count": services.member_count(chapter),
        "threshold": _threshold(),
        "upcoming": upcoming,
        "past": past,
        "counts": services.rsvp_counts([m.id for m in upcoming + past]),
        "open_proposals": services.proposals_of(chapter, ProposalState.OPEN),
        "closed_proposals": services.proposals_of(chapter, ProposalState.CLOSED),
        "outcomes": OUTCOME_LABELS,
        "city_work": [
            Markup(html)
            for html in collect(city_sections, city_slug=chapter.city_slug, within="chapter")
        ],
        "action_form": ActionForm(formdata=None),
        "invitation": services.invitation_to(chapter, _viewer()),
    }


def _threshold() -> int:
    return current_app.config["CHAPTER_ACTIVE_AT"]


@bp.get("/chapters/<slug>")
def show(slug: str):
    chapter = _chapter_or_404(slug)
    return render_template("chapters/show.html", **_chapter_context(chapter))


def _act(action: Callable[[], str], back: str):
    """Run a button's action after checking its CSRF token; flash its message or error."""
    require_action_token()
    try:
        flash(action(), "success")
    except ChapterError as error:
        flash(str(error), "error")
    return redirect(back)


@bp.post("/chapters/<slug>/join")
@login_required
def join(slug: str):
    chapter = _chapter_or_404(slug)

    def action() -> str:
        was_active = chapter.is_active
        if not services.join(chapter, current_user):
            return "You are already a member."
        return _welcome(chapter, was_active)

    return _act(action, url_for("chapters.show", slug=slug))


def _welcome(chapter: Chapter, was_active: bool) -> str:
    if chapter.is_active and not was_active:
        return f"Welcome! With you, {chapter.name} is now an active chapter."
    return f"Welcome to {chapter.name}."


@bp.post("/chapters/invitations/<id:invitation_id>/<any(accept, decline):answer>")
@login_required
def answer_invitation(invitation_id: int, answer: str):
    invitation = services.invitation_of(current_user, invitation_id) or abort(404)
    chapter = invitation.chapter

    def action() -> str:
        if answer == "decline":
            services.decline_invitation(invitation)
            return f"You have declined the invitation to {chapter.name}."
        was_active = chapter.is_active
        if not services.accept_invitation(invitation, current_user):
            return "You are already a member; your role is unchanged."
        role = chapter.membership_of(current_user).role
        title = "an organiser" if role == Role.ORGANISER else "a member"
        return f"{_welcome(chapter, was_active)} You are {title}."

    return _act(action, url_for("chapters.show", slug=chapter.slug))


@bp.post("/chapters/<slug>/leave")
@login_required
def leave(slug: str):
    chapter = _chapter_or_404(slug)

    def action() -> str:
        services.leave(chapter, current_user)
        return f"You have left {chapter.name}."

    return _act(action, url_for("chapters.show", slug=slug))


def _manage_page(chapter: Chapter, refused: SettingsForm | None = None):
    """The organisers' page; with ``refused`` settings, a 422 whose title says so."""
    if refused is not None:
        context = _chapter_context(chapter)
        return refused_page("chapters/manage.html", settings_form=refused, **context)
    settings_form = SettingsForm(formdata=None, obj=chapter)
    return render_template(
        "chapters/manage.html", settings_form=settings_form, **_chapter_context(chapter)
    )


@bp.get("/chapters/<slug>/manage")
@login_required
def manage(slug: str):
    return _manage_page(_organised_or_403(slug))


@bp.post("/chapters/<slug>/settings")
@login_required
def settings(slug: str):
    chapter = _organised_or_403(slug)
    form = SettingsForm()
    if form.validate():
        try:
            services.update_settings(
                chapter,
                description=form.description.data,
                time_zone=form.time_zone.data,
                members_can_schedule=form.members_can_schedule.data,
                quorum_percent=form.quorum_percent.data,
                quorum_minimum=form.quorum_minimum.data,
            )
        except ChapterError as error:
            _refuse(form, error)
        else:
            flash("The chapter's settings are saved.", "success")
            return redirect(url_for("chapters.manage", slug=slug))
    return _manage_page(chapter, refused=form)


@bp.post("/chapters/<slug>/members/<id:member_id>/<any(organiser, member):role>")
@login_required
def set_role(slug: str, member_id: int, role: str):
    chapter = _organised_or_403(slug)

    def action() -> str:
        membership = services.set_role(chapter, member_id, Role(role))
        title = "an organiser" if role == Role.ORGANISER else "a member"
        return f"{membership.member.display_name} is now {title}."

    return _act(action, url_for("chapters.manage", slug=slug))


@bp.post("/chapters/<slug>/sharing/<any(on, off):choice>")
@login_required
def sharing(slug: str, choice: str):
    chapter = _chapter_or_404(slug)

    def action() -> str:
        services.set_contact_sharing(chapter, current_user, choice == "on")
        if choice == "on":
            return "Organisers may now include your name and email in the chapter's export."
        return "Your name and email are left out of the chapter's export."

    return _act(action, url_for("chapters.show", slug=slug))


@bp.get("/chapters/<slug>/export.json")
@login_required
def export(slug: str):
    chapter = _organised_or_403(slug)
    response = jsonify(portability.export_chapter(chapter))
    response.headers["Content-Disposition"] = f'attachment; filename="{chapter.slug}.json"'
    return response


@bp.route("/chapters/import", methods=["GET", "POST"])
@login_required
def import_chapter():
    form = ImportForm()
    if form.validate_on_submit():
        try:
            data = portability.read_export(form.export.data.read())
            imported = portability.import_chapter(current_user, data)
        except portability.ChapterImportError as error:  # what is wrong with the file
            db.session.rollback()
            form.export.errors.append(str(error))
        except ChapterError as error:
            db.session.rollback()
            form.form_errors.append(str(error))
        else:
            flash(_imported_message(imported), "success")
            return redirect(url_for("chapters.show", slug=imported.chapter.slug))
    return form_page("chapters/import.html", form)


def _imported_message(imported: portability.ImportedChapter) -> str:
    done = f"{imported.chapter.name} is imported, with you as its organiser."
    count = imported.invitations
    if count == 0:
        return f"{done} The file lists no one else to invite."
    recorded = "1 invitation is" if count == 1 else f"{count:,} invitations are"
    return (
        f"{done} {recorded} recorded: the people in the file can join when they sign in "
        "here with the same email address, confirmed. No email is sent to them, so let "
        "them know."
    )


# --- meetups -----------------------------------------------------------------------------


def _meetup_details(
    form: MeetupForm, chapter: Chapter, meetup: Meetup | None = None
) -> services.MeetupDetails:
    was = (meetup.starts_at, meetup.ends_at) if meetup else (None, None)
    return services.MeetupDetails(
        title=form.title.data,
        description=form.description.data,
        starts_at=_in_utc(form.starts, chapter, was[0]),
        ends_at=_in_utc(form.ends, chapter, was[1]),
        venue=form.venue.data or None,
        address=form.address.data or None,
        online_link=form.online_link.data or None,
        capacity=form.capacity.data,
    )


def _save_meetup(
    form: MeetupForm, chapter: Chapter, save: Callable, meetup: Meetup | None = None
) -> Meetup | None:
    """Validate, convert the local times and save; errors land on the form."""
    if not form.validate_on_submit():
        return None
    try:
        return save(_meetup_details(form, chapter, meetup))
    except ChapterError as error:
        _refuse(form, error)
        return None


@bp.route("/chapters/<slug>/meetups/new", methods=["GET", "POST"])
@login_required
def new_meetup(slug: str):
    chapter = _chapter_or_404(slug)
    if not chapter.may_schedule(current_user):
        abort(403)
    form = MeetupForm()
    meetup = _save_meetup(
        form, chapter, lambda details: services.schedule_meetup(chapter, current_user, details)
    )
    if meetup is not None:
        flash("The meetup is scheduled and the chapter has been told.", "success")
        return redirect(url_for("chapters.meetup", meetup_id=meetup.id))
    return form_page("chapters/meetup_form.html", form, chapter=chapter, meetup=None)


@bp.get("/meetups/<id:meetup_id>")
def meetup(meetup_id: int):
    meetup = _meetup_or_404(meetup_id)
    chapter = meetup.chapter
    rsvp = services.rsvp_of(meetup, _viewer())
    waitlist = services.attendees(meetup, RsvpStatus.WAITLISTED)
    return render_template(
        "chapters/meetup.html",
        meetup=meetup,
        chapter=chapter,
        when=services.when_text(meetup),
        rsvp=rsvp,
        waitlist_place=services.waitlist_place(waitlist, rsvp),
        membership=chapter.membership_of(_viewer()),
        is_organiser=chapter.is_organised_by(_viewer()),
        runs_it=meetup.is_run_by(_viewer()),
        going=services.attendees(meetup, RsvpStatus.GOING),
        waitlist=waitlist,
        action_form=ActionForm(formdata=None),
    )


def _local_form_values(meetup: Meetup) -> dict:
    zone = meetup.chapter.zone
    return {
        "starts": meetup.starts_at.astimezone(zone).replace(tzinfo=None),
        "ends": meetup.ends_at.astimezone(zone).replace(tzinfo=None),
    }


@bp.route("/meetups/<id:meetup_id>/edit", methods=["GET", "POST"])
@login_required
def edit_meetup(meetup_id: int):
    meetup = _meetup_or_404(meetup_id)
    chapter = meetup.chapter
    if not meetup.is_run_by(current_user):
        abort(403)
    form = MeetupForm(obj=meetup, **_local_form_values(meetup))
    if request.method == "POST":
        if not meetup.can_be_changed:
            form.form_errors.append("A cancelled or finished meetup cannot be changed.")
            return form_page("chapters/meetup_form.html", form, 409, chapter=chapter, meetup=meetup)
        saved = _save_meetup(
            form, chapter, lambda details: services.edit_meetup(meetup, details), meetup
        )
        if saved is not None:
            flash(
                "Saved. Everyone going or waitlisted has been told of the new time or place."
                if saved
                else "Saved.",
                "success",
            )
            return redirect(url_for("chapters.meetup", meetup_id=meetup.id))
    return form_page("chapters/meetup_form.html", form, chapter=chapter, meetup=meetup)


@bp.post("/meetups/<id:meetup_id>/cancel")
@login_required
def cancel_meetup(meetup_id: int):
    meetup = _meetup_or_404(meetup_id)
    if not meetup.is_run_by(current_user):
        abort(403)

    def action() -> str:
        services.cancel_meetup(meetup)
        return "The meetup is cancelled and everyone who planned to come has been told."

    return _act(action, url_for("chapters.meetup", meetup_id=meetup_id))


RSVP_MESSAGES = {
    RsvpStatus.GOING: "You are going. See you there!",
    RsvpStatus.WAITLISTED: "The meetup is full, so you are on the waitlist. "
    "We will email you if a place opens.",
    RsvpStatus.NOT_GOING: "You are not going.",
}


@bp.post('/meetups/<id:meetup_id>/<any(going, "not-going"):answer>')
@login_required
def rsvp(meetup_id: int, answer: str):
    meetup = _meetup_or_404(meetup_id)

    def action() -> str:
        return RSVP_MESSAGES[services.respond(meetup, current_user, answer == "going")]

    return _act(action, url_for("chapters.meetup", meetup_id=meetup_id))


def _member_id(value: str) -> int | None:
    """A member id from a checkbox; anything else (such as a huge number) is no one."""
    if value.isascii() and value.isdigit() and len(value) <= MEMBER_ID_DIGITS:
        return int(value)
    return None


@bp.route("/meetups/<id:meetup_id>/attendance", methods=["GET", "POST"])
@login_required
def attendance(meetup_id: int):
    meetup = _meetup_or_404(meetup_id)
    if not meetup.chapter.is_organised_by(current_user):
        abort(403)
    form = ActionForm()
    if form.validate_on_submit():
        attended = {i for i in map(_member_id, request.form.getlist("attended")) if i is not None}
        try:
            count = services.mark_attendance(meetup, attended)
        except ChapterError as problem:
            form.form_errors.append(str(problem))
        else:
            flash(f"Attendance saved: {count} came.", "success")
            return redirect(url_for("chapters.meetup", meetup_id=meetup_id))
    elif form.is_submitted():
        form.form_errors.append("This form expired. Please send it again.")
    return form_page(
        "chapters/attendance.html",
        form,
        meetup=meetup,
        going=services.attendees(meetup, RsvpStatus.GOING),
    )


# --- calendars ---------------------------------------------------------------------------


def _ics(body: bytes, filename: str) -> Response:
    response = Response(body, mimetype="text/calendar")
    response.headers["Content-Disposition"] = f'inline; filename="{filename}"'
    response.headers["Cache-Control"] = "private, max-age=300"
    return response


@bp.get("/meetups/<id:meetup_id>.ics")
def meetup_ics(meetup_id: int):
    meetup = _meetup_or_404(meetup_id)
    is_member = meetup.chapter.membership_of(_viewer()) is not None
    body = services.calendar_for([meetup], meetup.title, with_links=is_member)
    return _ics(body, f"meetup-{meetup.id}.ics")


@bp.get("/chapters/<slug>/calendar.ics")
@reads_from_replica
def chapter_ics(slug: str):
    chapter = _chapter_or_404(slug)
    body = services.calendar_for(services.calendar_meetups(chapter), chapter.name)
    return _ics(body, f"{chapter.slug}.ics")


@bp.get("/calendar/<secret>.ics")
@reads_from_replica
def member_ics(secret: str):
    member = services.member_for_calendar(secret) or abort(404)
    return _ics(services.member_calendar(member), "my-meetups.ics")


@bp.get("/calendar")
@login_required
def calendar():
    secret = services.calendar_secret(current_user)
    return render_template(
        "chapters/calendar.html",
        feed=url_for("chapters.member_ics", secret=secret, _external=True),
        meetups=services.member_meetups(current_user),
        action_form=ActionForm(formdata=None),
    )


@bp.post("/calendar/reset")
@login_required
def reset_calendar():
    def action() -> str:
        services.reset_calendar_secret(current_user)
        return "Your calendar has a new address; the old one no longer works."

    return _act(action, url_for("chapters.calendar"))


# --- decisions ---------------------------------------------------------------------------


@bp.route("/chapters/<slug>/proposals/new", methods=["GET", "POST"])
@login_required
def new_proposal(slug: str):
    chapter = _chapter_or_404(slug)
    if chapter.membership_of(current_user) is None:
        abort(403)
    form = ProposalForm()
    if form.validate_on_submit():
        try:
            proposal = services.open_proposal(
                chapter,
                current_user,
                title=form.title.data,
                details=form.details.data,
                closes_at=_in_utc(form.closes, chapter),
            )
        except ChapterError as error:
            _refuse(form, error)
        else:
            flash("Your proposal is open and the chapter's members have been told.", "success")
            return redirect(url_for("chapters.proposal", proposal_id=proposal.id))
    return form_page("chapters/proposal_form.html", form, chapter=chapter)


def _proposal_page(proposal: Proposal, form: VoteForm | None = None, status: int = 200):
    vote = services.vote_of(proposal, _viewer())
    if form is None:
        form = VoteForm(
            formdata=None,
            choice=vote.choice if vote else None,
            reason=vote.reason if vote else None,
        )
    chapter = proposal.chapter
    is_member = chapter.membership_of(_viewer()) is not None
    return (
        render_template(
            "chapters/proposal.html",
            proposal=proposal,
            chapter=chapter,
            form=form,
            vote=vote,
            may_vote=proposal.is_open and is_member,
            tally=services.tally(proposal),
            # Who voted what, and why, stays among members, as who is going to a meetup
            # does: a courier's vote should not reach the platform they work for.
            votes=services.votes_on(proposal) if is_member else None,
            needed=proposal.quorum_for(services.member_count(chapter)),
            choices=CHOICE_LABELS,
            outcomes=OUTCOME_LABELS,
        ),
        status,
    )


@bp.get("/proposals/<id:proposal_id>")
def proposal(proposal_id: int):
    return _proposal_page(_proposal_or_404(proposal_id))


@bp.post("/proposals/<id:proposal_id>/vote")
@login_required
def vote(proposal_id: int):
    proposal = _proposal_or_404(proposal_id)
    if proposal.chapter.membership_of(current_user) is None:
        abort(403)
    form = VoteForm()
    if not form.validate():
        if not proposal.is_open:  # the page no longer holds the form: say why first
            form.form_errors.append(services.VOTING_CLOSED)
        return _proposal_page(proposal, form, INVALID_FORM_STATUS)
    try:
        services.cast_vote(proposal, current_user, Choice(form.choice.data), form.reason.data)
    except ChapterError as error:
        form.form_errors.append(str(error))
        return _proposal_page(proposal, form, 409)
    flash("Your vote is recorded. You can change it until voting closes.", "success")
    return redirect(url_for("chapters.proposal", proposal_id=proposal_id))


# --- chapters on shared pages ------------------------------------------------------------


@city_sections.connect
def chapters_in_city(sender, city_slug: str, within: str = "", **extra):
    """Chapters and upcoming meetups on a city's page (a chapter's page shows its own)."""
    if within == "chapter":
        return None
    chapters = services.find_chapters(city=city_slug).items
    meetups = services.meetups_in_city(city_slug)
    if not chapters and not meetups:
        return None
    return render_template(
        "chapters/_city.html",
        chapters=chapters,
        counts=services.member_counts([c.id for c in chapters]),
        meetups=meetups,
    )


@home_sections.connect
def meetups_on_home(sender, member=None, **extra):
    """Upcoming meetups: of the member's chapters when they have any, else everywhere."""
    chapter_ids = [c.id for c in services.chapters_of(member)] if member else []
    meetups = services.upcoming_meetups(chapter_ids or None, limit=5)
    if not meetups:
        return None
    return render_template("chapters/_home.html", meetups=meetups, mine=bool(chapter_ids))


@profile_sections.connect
def chapters_on_profile(sender, member, **extra):
    chapters = services.chapters_of(member)
    return render_template("chapters/_profile.html", chapters=chapters) if chapters else None
