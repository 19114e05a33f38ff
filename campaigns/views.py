"""Campaign pages. Each view reads a form, calls a service and redirects or renders."""

from __future__ import annotations

from collections.abc import Callable

from flask import abort, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from campaigns import bp, services
from campaigns.forms import (
    AffiliationForm,
    AttachForm,
    CampaignForm,
    DecisionMakerForm,
    FollowForm,
    FunderForm,
    FundingForm,
    NewCampaignForm,
    OrganiserForm,
    StanceForm,
    StatusForm,
    UpdateForm,
)
from campaigns.models import (
    AMOUNT_BANDS,
    FUNDER_KIND_LABELS,
    Campaign,
    CampaignError,
    Funding,
    Stance,
    Status,
)
from core.forms import (
    INVALID_FORM_STATUS,
    ActionForm,
    form_page,
    refused_page,
    require_action_token,
)
from core.hooks import city_sections, home_sections
from core.topics import TOPICS, topic_label
from members.signals import profile_sections

CAMPAIGN_FIELDS = ("title", "summary", "change_wanted", "city", "topic")
MAKER_FIELDS = ("name", "role", "body")


def _viewer():
    return current_user if current_user.is_authenticated else None


def _campaign_or_404(campaign_id: int) -> Campaign:
    return services.visible_campaign(campaign_id, _viewer()) or abort(404)


def _organised_or_403(campaign_id: int) -> Campaign:
    campaign = _campaign_or_404(campaign_id)
    if not campaign.is_organised_by(_viewer()):
        abort(403)
    return campaign


def _back(campaign: Campaign, anchor: str = ""):
    return redirect(url_for("campaigns.show", campaign_id=campaign.id) + anchor)


@bp.get("/campaigns")
def index():
    args = request.args
    page = args.get("page", "1")
    result = services.find_campaigns(
        q=args.get("q", "")[:100],
        city=args.get("city", "")[:80],
        topic=args.get("topic", "") if args.get("topic") in dict(TOPICS) else "",
        status=args.get("status", ""),
        page=int(page) if page.isascii() and page.isdigit() and len(page) < 7 else 1,
    )
    return render_template(
        "campaigns/index.html",
        result=result,
        topics=TOPICS,
        statuses=list(Status),
        args=args,
        invitations=services.invitations_for(_viewer()),
    )


@bp.route("/campaigns/new", methods=["GET", "POST"])
@login_required
def new():
    form = NewCampaignForm()
    if form.validate_on_submit():
        campaign = services.create_campaign(
            current_user,
            decision_maker={name: form[name].data for name in MAKER_FIELDS},
            **{name: form[name].data for name in CAMPAIGN_FIELDS},
        )
        flash("Your campaign is saved. Declare who funds it, then publish it.", "success")
        return redirect(url_for("campaigns.manage", campaign_id=campaign.id))
    return form_page("campaigns/new.html", form)


def _disclosure_context(campaign: Campaign) -> dict:
    """What the "Who is behind this campaign" card needs."""
    return {
        "campaign": campaign,
        "history": services.disclosure_history(campaign),
        "funder_kinds": FUNDER_KIND_LABELS,
        "amount_bands": AMOUNT_BANDS,
    }


def _page_context(campaign: Campaign, **forms) -> dict:
    return {
        "follow_form": FollowForm(formdata=None),
        "attach_form": AttachForm(formdata=None),
        **forms,
        **_disclosure_context(campaign),
        "topic_label": topic_label(campaign.topic),
        "is_organiser": campaign.is_organised_by(_viewer()),
        "statuses": services.status_history(campaign),
        "updates": services.updates_for(campaign),
        "followers": services.follower_count(campaign),
        "following": services.is_following(campaign, _viewer()),
        "linked": services.linked_summaries(campaign),
        "action_form": ActionForm(formdata=None),
        "invitation": services.invitation_to(campaign, _viewer()),
    }


@bp.get("/campaigns/<id:campaign_id>")
def show(campaign_id: int):
    campaign = _campaign_or_404(campaign_id)
    return render_template("campaigns/show.html", **_page_context(campaign))


# --- organisers' workshop ---------------------------------------------------------------

MANAGE_FORMS: dict[str, type] = {
    "details_form": CampaignForm,
    "funding_form": FundingForm,
    "funder_form": FunderForm,
    "affiliation_form": AffiliationForm,
    "organiser_form": OrganiserForm,
    "maker_form": DecisionMakerForm,
    "stance_form": StanceForm,
    "status_form": StatusForm,
    "update_form": UpdateForm,
    "attach_form": AttachForm,
}
# The manage page holds all these forms at once; a prefix per form keeps their field names
# and ids apart (two have a "name", two a "title"), so each label finds its own field.
# Stance forms are prefixed per decision-maker ("maker-3"); button forms have no fields.
FORM_PREFIXES = {
    "details_form": "details",
    "funding_form": "funding",
    "funder_form": "funder",
    "affiliation_form": "affiliation",
    "organiser_form": "organiser",
    "maker_form": "new-maker",
    "status_form": "status",
    "update_form": "update",
    "attach_form": "attach",
}


def _manage_form(name: str, prefix: str = "", **options):
    return MANAGE_FORMS[name](prefix=prefix or FORM_PREFIXES.get(name, ""), **options)


def _manage_page(campaign: Campaign, status: int = 200, **posted):
    me = campaign.organiser_for(_viewer())
    forms = {name: _manage_form(name, formdata=None) for name in MANAGE_FORMS}
    forms["details_form"] = _manage_form("details_form", formdata=None, obj=campaign)
    forms["funding_form"] = _manage_form("funding_form", formdata=None, funding=campaign.funding)
    forms["affiliation_form"] = _manage_form(
        "affiliation_form",
        formdata=None,
        company=me.affiliation_company,
        topic=me.affiliation_topic or "",
        details=me.affiliation_details,
    )
    forms["stance_forms"] = {
        m.id: StanceForm(formdata=None, prefix=f"maker-{m.id}") for m in campaign.decision_makers
    }
    forms["stance_forms"].update(posted.pop("stance_forms", {}))
    forms.update(posted)
    # The forms of this page, posted ones included, win over the page's defaults.
    context = {
        **_page_context(campaign),
        **forms,
        "me": me,
        "attached": services.attached_work(campaign),
        "invitations": services.pending_invitations(campaign) if me.is_owner else [],
    }
    if status != 200:
        return refused_page("campaigns/manage.html", status, **context)
    return render_template("campaigns/manage.html", **context)


@bp.get("/campaigns/<id:campaign_id>/manage")
@login_required
def manage(campaign_id: int):
    return _manage_page(_organised_or_403(campaign_id))


def _organiser_action(
    campaign_id: int,
    form_name: str,
    act: Callable[[Campaign, object], str],
    *,
    owner_only: bool = False,
    prefix: str = "",
    before_declaring: bool = False,
):
    """Validate the posted form, run ``act``, and redirect with its message or re-render.

    Only ``before_declaring`` actions are open to an organiser of a public campaign who
    has not declared their ties yet.
    """
    campaign = _organised_or_403(campaign_id)
    me = campaign.organiser_for(_viewer())
    if owner_only and not me.is_owner:
        abort(403)
    form = _manage_form(form_name, prefix)
    if form.validate():
        try:
            if not before_declaring:
                me.require_declared()
            flash(act(campaign, form), "success")
            return redirect(url_for("campaigns.manage", campaign_id=campaign.id))
        except services.InvitationRefused as refusal:
            form.form_errors.append(refusal.message)
            page = _manage_page(campaign, 429, **{form_name: form})
            return (*page, {"Retry-After": str(refusal.retry_after)})
        except CampaignError as error:
            form.form_errors.append(str(error))
    if form_name == "stance_form":
        maker_id = int(prefix.removeprefix("maker-"))
        return _manage_page(campaign, INVALID_FORM_STATUS, stance_forms={maker_id: form})
    return _manage_page(campaign, INVALID_FORM_STATUS, **{form_name: form})


@bp.post("/campaigns/<id:campaign_id>/details")
@login_required
def edit_details(campaign_id: int):
    def act(campaign, form):
        services.edit_campaign(campaign, **{name: form[name].data for name in CAMPAIGN_FIELDS})
        return "The campaign is saved."

    return _organiser_action(campaign_id, "details_form", act)


@bp.post("/campaigns/<id:campaign_id>/funding")
@login_required
def set_funding(campaign_id: int):
    def act(campaign, form):
        services.set_funding(campaign, Funding(form.funding.data))
        return "The funding declaration is saved."

    return _organiser_action(campaign_id, "funding_form", act)


@bp.post("/campaigns/<id:campaign_id>/funders")
@login_required
def add_funder(campaign_id: int):
    def act(campaign, form):
        services.add_funder(
            campaign, name=form.name.data, kind=form.kind.data, amount_band=form.amount_band.data
        )
        return f"{form.name.data} is listed as a funder."

    return _organiser_action(campaign_id, "funder_form", act)


@bp.post("/campaigns/<id:campaign_id>/funders/<id:funder_id>/remove")
@login_required
def remove_funder(campaign_id: int, funder_id: int):
    def act(campaign, form):
        services.remove_funder(campaign, funder_id)
        return "The funder is removed from the list; the change is kept in the history."

    return _organiser_action(campaign_id, "action_form", act)


@bp.post("/campaigns/<id:campaign_id>/affiliation")
@login_required
def declare_affiliation(campaign_id: int):
    def act(campaign, form):
        services.declare_affiliation(
            campaign.organiser_for(_viewer()),
            company=form.company.data,
            topic=form.topic.data,
            details=form.details.data,
        )
        return "Your declaration is saved."

    return _organiser_action(campaign_id, "affiliation_form", act, before_declaring=True)


@bp.post("/campaigns/<id:campaign_id>/organisers")
@login_required
def invite_organiser(campaign_id: int):
    def act(campaign, form):
        services.invite_organiser(campaign, current_user, form.email.data)
        # The same answer whoever the address belongs to: no page tells who has an account.
        return services.invitation_answer(form.email.data)

    return _organiser_action(campaign_id, "organiser_form", act, owner_only=True)


@bp.post("/campaigns/<id:campaign_id>/invitations/<id:invitation_id>/withdraw")
@login_required
def withdraw_invitation(campaign_id: int, invitation_id: int):
    def act(campaign, form):
        invitation = services.withdraw_invitation(campaign, invitation_id)
        return f"The invitation to {invitation.email} is withdrawn."

    return _organiser_action(campaign_id, "action_form", act, owner_only=True)


@bp.post("/campaigns/<id:campaign_id>/organisers/<id:organiser_id>/remove")
@login_required
def remove_organiser(campaign_id: int, organiser_id: int):
    def act(campaign, form):
        services.remove_organiser(campaign, organiser_id)
        return "The co-organiser is removed."

    return _organiser_action(campaign_id, "action_form", act, owner_only=True)


@bp.post("/campaigns/<id:campaign_id>/decision-makers")
@login_required
def add_decision_maker(campaign_id: int):
    def act(campaign, form):
        services.add_decision_maker(campaign, **{name: form[name].data for name in MAKER_FIELDS})
        return f"{form.name.data} is added to the tracker."

    return _organiser_action(campaign_id, "maker_form", act)


@bp.post("/campaigns/<id:campaign_id>/decision-makers/<id:maker_id>/stance")
@login_required
def record_stance(campaign_id: int, maker_id: int):
    campaign = _organised_or_403(campaign_id)
    if maker_id not in {maker.id for maker in campaign.decision_makers}:
        abort(404)

    def act(campaign, form):
        services.record_stance(
            campaign,
            maker_id,
            stance=Stance(form.stance.data),
            note=form.note.data,
            source_url=form.source_url.data,
        )
        return "The stance is updated."

    return _organiser_action(campaign_id, "stance_form", act, prefix=f"maker-{maker_id}")


@bp.post("/campaigns/<id:campaign_id>/status")
@login_required
def change_status(campaign_id: int):
    def act(campaign, form):
        services.change_status(campaign, Status(form.status.data), form.note.data)
        return f"The campaign is now {form.status.data}."

    return _organiser_action(campaign_id, "status_form", act)


@bp.post("/campaigns/<id:campaign_id>/updates")
@login_required
def post_update(campaign_id: int):
    def act(campaign, form):
        services.post_update(campaign, title=form.title.data, body=form.body.data)
        # Also the answer to a second send of the same update, which is not posted again.
        return "Your update is posted and on its way to followers."

    return _organiser_action(campaign_id, "update_form", act)


@bp.post("/campaigns/<id:campaign_id>/publish")
@login_required
def publish(campaign_id: int):
    def act(campaign, form):
        services.publish(campaign)
        return "Your campaign is public."

    return _organiser_action(campaign_id, "action_form", act)


@bp.post("/campaigns/<id:campaign_id>/links/<id:link_id>/detach")
@login_required
def detach(campaign_id: int, link_id: int):
    def act(campaign, form):
        link = services.detach_work(campaign, link_id)
        return f"The {link.kind} is no longer attached to the campaign."

    return _organiser_action(campaign_id, "action_form", act)


@bp.post("/campaigns/<id:campaign_id>/manage/links")
@login_required
def attach_organised(campaign_id: int):
    """Attach from the manage page, which works before publishing too; a refusal is shown
    there, beside the form's fields."""

    def act(campaign, form):
        services.attach_work(campaign, form.kind.data, form.target_id.data, current_user)
        return f"The {form.kind.data} is attached to the campaign."

    return _organiser_action(campaign_id, "attach_form", act)


@bp.route("/campaigns/<id:campaign_id>/step-down", methods=["GET", "POST"])
@login_required
def step_down(campaign_id: int):
    """A co-organiser confirms with the page's button that they step down."""
    campaign = _organised_or_403(campaign_id)
    if campaign.organiser_for(current_user).is_owner:
        abort(403)
    form = ActionForm()
    if form.validate_on_submit():
        try:
            services.step_down(campaign, current_user)
        except CampaignError as error:
            form.form_errors.append(str(error))
        else:
            flash(f"You no longer co-organise {campaign.title}.", "info")
            if campaign.is_published:
                return _back(campaign)
            return redirect(url_for("campaigns.index"))
    return form_page("campaigns/step_down.html", form, campaign=campaign)


MANAGE_FORMS["action_form"] = ActionForm


# --- invitations to co-organise -------------------------------------------------------------


def _invitation_or_404(invitation_id: int):
    """The invitation, only for the member it was made to; anyone else finds nothing."""
    return services.invitation_of(current_user, invitation_id) or abort(404)


@bp.get("/campaigns/invitations/<id:invitation_id>")
@login_required
def invitation(invitation_id: int):
    found = _invitation_or_404(invitation_id)
    campaign = found.campaign
    return render_template(
        "campaigns/invitation.html",
        invitation=found,
        organising=campaign.is_organised_by(current_user),
        **_disclosure_context(campaign),
    )


@bp.post("/campaigns/invitations/<id:invitation_id>/<any(accept, decline):answer>")
@login_required
def answer_invitation(invitation_id: int, answer: str):
    found = _invitation_or_404(invitation_id)
    require_action_token()
    campaign = found.campaign
    try:
        if answer == "decline":
            services.decline_invitation(found)
            flash(f"You have declined the invitation to co-organise {campaign.title}.", "info")
            return redirect(url_for("campaigns.invitation", invitation_id=invitation_id))
        services.accept_invitation(found, current_user)
    except CampaignError as error:
        flash(str(error), "error")
        return redirect(url_for("campaigns.invitation", invitation_id=invitation_id))
    flash(
        f"You are now a co-organiser of {campaign.title}. Please declare your ties to "
        "sharing-economy companies: until you do, the campaign shows yours as pending.",
        "success",
    )
    return redirect(url_for("campaigns.manage", campaign_id=campaign.id) + "#affiliation-heading")


# --- supporters and linked work ---------------------------------------------------------------


@bp.post("/campaigns/<id:campaign_id>/follow")
def follow(campaign_id: int):
    campaign = _campaign_or_404(campaign_id)
    if not campaign.is_published:
        abort(404)
    if current_user.is_authenticated:
        form = require_action_token()
        if current_user.is_confirmed:
            services.follow_as_member(campaign, current_user)
            flash("You follow this campaign. Its updates will reach you.", "success")
            return _back(campaign)
        # An unconfirmed account has not shown it owns its address: confirm by email.
        name, email = current_user.display_name, current_user.email
    else:
        form = FollowForm()
        if not form.validate():
            return refused_page("campaigns/show.html", **_page_context(campaign, follow_form=form))
        name, email = form.name.data, form.email.data
    try:
        services.follow_as_guest(
            campaign, name=name, email=email, address=request.remote_addr or ""
        )
    except services.FollowRefused as refusal:
        form.form_errors.append(refusal.message)
        context = _page_context(campaign, follow_form=form)
        headers = {"Retry-After": str(refusal.retry_after)}
        return *refused_page("campaigns/show.html", 429, **context), headers
    flash("Check your email: follow the link we sent to confirm.", "info")
    return _back(campaign)


@bp.post("/campaigns/<id:campaign_id>/unfollow")
@login_required
def unfollow(campaign_id: int):
    campaign = _campaign_or_404(campaign_id)
    require_action_token()
    services.unfollow(campaign, current_user)
    flash("You no longer follow this campaign.", "info")
    return _back(campaign)


@bp.route("/campaigns/follows/<token>/confirm", methods=["GET", "POST"])
def confirm_follow(token: str):
    # As with every emailed link, only the POST from the page's button changes anything.
    follower = services.follower_for_token(token) or abort(404)
    form = ActionForm()
    if form.validate_on_submit():
        services.confirm_follow(follower)
        flash("You follow this campaign. Thank you!", "success")
        return redirect(url_for("campaigns.show", campaign_id=follower.campaign_id))
    return form_page("campaigns/confirm_follow.html", form, follower=follower)


@bp.post("/campaigns/<id:campaign_id>/links")
@login_required
def attach(campaign_id: int):
    campaign = _campaign_or_404(campaign_id)
    form = AttachForm()
    if form.validate():
        try:
            services.attach_work(campaign, form.kind.data, form.target_id.data, current_user)
        except CampaignError as error:
            form.form_errors.append(str(error))
        else:
            flash(f"The {form.kind.data} is attached to the campaign.", "success")
            return _back(campaign, "#linked-heading")
    return refused_page("campaigns/show.html", **_page_context(campaign, attach_form=form))


# --- campaigns on shared pages -------------------------------------------------------------


def _campaign_list(campaigns: list[Campaign], heading: str):
    if not campaigns:
        return None
    return render_template("campaigns/_list.html", campaigns=campaigns, heading=heading)


@home_sections.connect
def campaigns_on_home(sender, member=None, **extra):
    city = member.city if member else ""
    campaigns = services.find_campaigns(city=city, status=Status.ACTIVE).items[:4]
    if not campaigns:
        campaigns = services.find_campaigns(status=Status.ACTIVE).items[:4]
    return _campaign_list(campaigns, "Campaigns")


@city_sections.connect
def campaigns_in_city(sender, city_slug, **extra):
    return _campaign_list(services.find_campaigns(city=city_slug).items, "Campaigns")


@profile_sections.connect
def campaigns_on_profile(sender, member, **extra):
    return _campaign_list(services.organised_by(member), "Campaigns organised")
