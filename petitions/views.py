"""Petition pages. Each view reads a form, calls a service and redirects or renders."""

from __future__ import annotations

from datetime import UTC, datetime, time

from flask import Response, abort, flash, make_response, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from core import pagecache
from core.db import reads_from_replica
from core.forms import INVALID_FORM_STATUS, ActionForm, form_page, require_action_token
from core.headers import content_security_policy
from core.hooks import city_sections, home_sections
from core.topics import TOPICS, topic_label
from members.signals import profile_sections
from petitions import bp, services
from petitions.forms import (
    EmbedSignForm,
    HideForm,
    MemberSignForm,
    PetitionForm,
    SignForm,
    UpdateForm,
    VictoryForm,
)
from petitions.models import (
    PENDING_SIGNATURE_DAYS,
    Petition,
    PetitionError,
    PetitionState,
    Signature,
    SignatureState,
)

PETITION_FIELDS = (
    "title",
    "ask",
    "decision_maker_name",
    "decision_maker_role",
    "city",
    "topic",
    "goal",
)
SIGN_FIELDS = ("name", "email", "city", "comment", "show_name", "wants_updates")
MEMBER_SIGN_FIELDS = ("comment", "show_name", "wants_updates")
WITHDRAWN_MESSAGE = (
    "You withdrew this signature, so it does not count. "
    "To sign again, fill in the form on the petition page."
)


def _viewer():
    return current_user if current_user.is_authenticated else None


def _petition_or_404(petition_id: int) -> Petition:
    return services.visible_petition(petition_id, _viewer()) or abort(404)


def _organised_or_403(petition_id: int) -> Petition:
    petition = _petition_or_404(petition_id)
    if not petition.is_organised_by(_viewer()):
        abort(403)
    return petition


def _can_sign_in_one_click() -> bool:
    return current_user.is_authenticated and current_user.is_confirmed


def _sign_form():
    return MemberSignForm() if _can_sign_in_one_click() else SignForm()


@bp.get("/petitions")
def index():
    args = request.args
    page = args.get("page", "1")
    result = services.find_petitions(
        q=args.get("q", "")[:100],
        city=args.get("city", "")[:80],
        topic=args.get("topic", "") if args.get("topic") in dict(TOPICS) else "",
        state=args.get("state", PetitionState.OPEN),
        sort=args.get("sort", services.Sort.TRENDING),
        page=int(page) if page.isascii() and page.isdigit() and len(page) < 7 else 1,
    )
    return render_template(
        "petitions/index.html", result=result, topics=TOPICS, sorts=services.Sort, args=args
    )


def _petition_fields(form: PetitionForm) -> dict:
    fields = {name: form[name].data for name in PETITION_FIELDS if name in form}
    fields["closes_at"] = datetime.combine(form.closes_on.data, time.max, tzinfo=UTC)
    return fields


@bp.route("/petitions/new", methods=["GET", "POST"])
@login_required
def new():
    form = PetitionForm()
    if form.validate_on_submit():
        petition = services.create_petition(current_user, **_petition_fields(form))
        flash(
            "Your draft is saved. Check it, then publish it to start collecting signatures.",
            "success",
        )
        return redirect(url_for("petitions.show", petition_id=petition.id))
    return form_page("petitions/form.html", form, petition=None)


@bp.get("/petitions/<id:petition_id>")
def show(petition_id: int):
    cache_key = services.page_cache_key(petition_id)
    if (page := pagecache.cached_page(cache_key)) is not None:
        return page
    petition = _petition_or_404(petition_id)
    page, status, headers = _show_page(petition, _sign_form())
    if petition.is_public:
        pagecache.store_page(cache_key, page)
    return page, status, headers


def _show_page(petition: Petition, form, status: int = 200, headers: dict | None = None):
    if form.is_submitted() and form.errors and status == 200:
        status = INVALID_FORM_STATUS
    context = {
        "petition": petition,
        "form": form,
        "one_click": _can_sign_in_one_click(),
        "sign_fields": MEMBER_SIGN_FIELDS if _can_sign_in_one_click() else SIGN_FIELDS,
        "signers": services.recent_signers(petition),
        "cities": services.city_breakdown(petition),
        "chart": services.signature_chart(petition),
        "updates": services.updates_for(petition),
        "topic_label": topic_label(petition.topic),
        "is_organiser": petition.is_organised_by(_viewer()),
        "action_form": ActionForm(formdata=None),
    }
    return render_template("petitions/show.html", **context), status, headers or {}


@bp.post("/petitions/<id:petition_id>/sign")
def sign(petition_id: int):
    petition = _petition_or_404(petition_id)
    form = _sign_form()
    if not form.validate():
        return _show_page(petition, form)
    if form.website.data:
        # A bot filled the hidden field: answer as usual, keep nothing.
        return redirect(url_for("petitions.thanks", petition_id=petition.id, outcome="check-email"))
    try:
        if isinstance(form, MemberSignForm):
            outcome = services.sign_as_member(
                petition,
                current_user,
                comment=form.comment.data,
                show_name=form.show_name.data,
                wants_updates=form.wants_updates.data,
                address=request.remote_addr or "",
            )
        else:
            details = services.SignerDetails(**{name: form[name].data for name in SIGN_FIELDS})
            services.sign(petition, details, request.remote_addr or "")
            # Whatever happened, a guest is told the same: the page must not tell anyone
            # whether this address signed. The email to the address tells the rest.
            outcome = services.SignOutcome.CHECK_EMAIL
    except services.SigningRefused as refusal:
        form.form_errors.append(refusal.message)
        if refusal.retry_after is None:
            return _show_page(petition, form, status=409)
        return _show_page(petition, form, 429, {"Retry-After": str(refusal.retry_after)})
    return redirect(url_for("petitions.thanks", petition_id=petition_id, outcome=outcome))


@bp.route("/petitions/<id:petition_id>/embed", methods=["GET", "POST"])
def embed(petition_id: int):
    """A compact signature form for other sites to show in an iframe."""
    petition = _petition_or_404(petition_id)
    form = EmbedSignForm()
    status, headers, signed = 200, {}, False
    if form.validate_on_submit():
        signed = True
        if not form.website.data:  # a bot filled the hidden field: keep nothing
            try:
                details = services.SignerDetails(**{n: form[n].data for n in SIGN_FIELDS})
                services.sign(petition, details, request.remote_addr or "")
            except services.SigningRefused as refusal:
                signed = False
                form.form_errors.append(refusal.message)
                status = 409 if refusal.retry_after is None else 429
                if refusal.retry_after:
                    headers["Retry-After"] = str(refusal.retry_after)
    elif form.is_submitted():
        status = INVALID_FORM_STATUS
    response = make_response(
        render_template("petitions/embed.html", petition=petition, form=form, signed=signed),
        status,
        headers,
    )
    response.headers["Content-Security-Policy"] = content_security_policy(frame_ancestors="*")
    return response


@bp.get("/petitions/<id:petition_id>/thanks/<outcome>")
def thanks(petition_id: int, outcome: str):
    petition = _petition_or_404(petition_id)
    if outcome not in set(services.SignOutcome):
        abort(404)
    return render_template("petitions/thanks.html", petition=petition, outcome=outcome)


@bp.route("/petitions/signatures/<token>/confirm", methods=["GET", "POST"])
def confirm(token: str):
    # Mail scanners fetch links: a GET only shows the button; the POST confirms.
    signature = services.signature_for_confirmation(token) or abort(404)
    form = ActionForm()
    if form.validate_on_submit():
        petition, petition_id = signature.petition, signature.petition_id
        try:
            confirmed = services.confirm_signature(signature)
        except services.SignatureGone:
            page = render_template(
                "petitions/confirm_gone.html", petition=petition, days=PENDING_SIGNATURE_DAYS
            )
            return page, 410
        flash(_confirmation_message(signature, confirmed), "success" if confirmed else "info")
        # The id read before the commit: reading it from the petition now would reload it.
        return redirect(url_for("petitions.show", petition_id=petition_id))
    return form_page(
        "petitions/confirm.html", form, signature=signature, petition=signature.petition
    )


def _confirmation_message(signature: Signature, confirmed: bool) -> str:
    if confirmed:
        return "Thank you: your signature is confirmed and counted."
    if signature.state == SignatureState.CONFIRMED:
        return "Your signature was already confirmed. Thank you!"
    if signature.state == SignatureState.WITHDRAWN and signature.petition.takes_signatures:
        return WITHDRAWN_MESSAGE
    return "This petition is not taking signatures any more."


@bp.route("/petitions/signatures/<token>/withdraw", methods=["GET", "POST"])
def withdraw(token: str):
    signature = services.signature_for_withdrawal(token) or abort(404)
    form = ActionForm()
    if form.validate_on_submit():
        petition_id = signature.petition_id  # read now: the purge may delete a pending row
        services.withdraw_signature(signature)
        flash("Your signature is withdrawn and no longer counts.", "info")
        return redirect(url_for("petitions.show", petition_id=petition_id))
    return form_page(
        "petitions/withdraw.html",
        form,
        signature=signature,
        petition=signature.petition,
        days=PENDING_SIGNATURE_DAYS,
    )


@bp.route("/petitions/<id:petition_id>/edit", methods=["GET", "POST"])
@login_required
def edit(petition_id: int):
    petition = _organised_or_403(petition_id)
    frozen = services.has_signatures(petition)
    form = PetitionForm(obj=petition)
    if request.method == "GET":
        form.closes_on.data = petition.closes_at.date()
    if frozen:
        # Signers signed this text: the form leaves it out, so it is neither asked for nor
        # changed. A form opened before the first signature still sends it, and a change
        # to it is refused, not dropped.
        for name in Petition.FROZEN_ONCE_SIGNED:
            if name not in request.form:
                del form[name]
    if form.validate_on_submit():
        try:
            services.edit_petition(petition, **_petition_fields(form))
        except PetitionError as error:
            form.form_errors.append(str(error))
        else:
            flash("Your changes are saved.", "success")
            return redirect(url_for("petitions.show", petition_id=petition.id))
    return form_page("petitions/form.html", form, petition=petition, frozen=frozen)


def _state_change(petition_id: int, change, message: str):
    petition = _organised_or_403(petition_id)
    require_action_token()
    try:
        change(petition)
    except PetitionError as error:
        # A browser shows the body of a 4xx, not where it points: so show the page itself.
        flash(str(error), "error")
        return _show_page(petition, _sign_form(), status=409)
    flash(message, "success")
    return redirect(url_for("petitions.show", petition_id=petition.id))


@bp.post("/petitions/<id:petition_id>/publish")
@login_required
def publish(petition_id: int):
    return _state_change(petition_id, services.publish, "Your petition is open for signatures.")


@bp.post("/petitions/<id:petition_id>/close")
@login_required
def close(petition_id: int):
    return _state_change(petition_id, services.close, "The petition is closed.")


@bp.route("/petitions/<id:petition_id>/win", methods=["GET", "POST"])
@login_required
def declare_victory(petition_id: int):
    petition = _organised_or_403(petition_id)
    form = VictoryForm()
    if form.validate_on_submit():
        try:
            services.declare_victory(petition, form.note.data)
        except PetitionError as error:
            form.form_errors.append(str(error))
        else:
            flash("Congratulations! The petition is marked as won.", "success")
            return redirect(url_for("petitions.show", petition_id=petition.id))
    return form_page("petitions/victory.html", form, petition=petition)


@bp.route("/petitions/<id:petition_id>/updates/new", methods=["GET", "POST"])
@login_required
def post_update(petition_id: int):
    petition = _organised_or_403(petition_id)
    form = UpdateForm()
    if form.validate_on_submit():
        try:
            services.post_update(petition, title=form.title.data, body=form.body.data)
        except PetitionError as error:
            form.form_errors.append(str(error))
        else:
            flash(
                "Your update is posted and on its way to signers who asked for updates.", "success"
            )
            return redirect(url_for("petitions.show", petition_id=petition.id))
    return form_page("petitions/update_form.html", form, petition=petition)


@bp.route("/petitions/<id:petition_id>/hide", methods=["GET", "POST"])
@login_required
def hide(petition_id: int):
    if not current_user.is_moderator:
        abort(403)
    petition = _petition_or_404(petition_id)
    form = HideForm()
    if form.validate_on_submit():
        try:
            services.hide(petition, form.reason.data)
        except PetitionError as error:
            form.form_errors.append(str(error))
        else:
            flash("The petition is hidden.", "info")
            return redirect(url_for("petitions.index"))
    return form_page("petitions/hide.html", form, petition=petition)


@bp.get("/petitions/<id:petition_id>/signatures.csv")
@login_required
@reads_from_replica
def signatures_csv(petition_id: int):
    petition = _organised_or_403(petition_id)
    return Response(
        services.signatures_csv(petition),
        mimetype="text/csv",
        headers={
            "Content-Disposition": f'attachment; filename="petition-{petition.id}-signatures.csv"'
        },
    )


@bp.get("/petitions/<id:petition_id>/deliver")
def deliver(petition_id: int):
    petition = _petition_or_404(petition_id)
    signers = services.public_signers(petition)
    return render_template("petitions/deliver.html", petition=petition, signers=signers)


@home_sections.connect
def trending_on_home(sender, member=None, **extra):
    petitions = services.trending_near(member.city if member else None)
    return render_template("petitions/_home.html", petitions=petitions) if petitions else None


@profile_sections.connect
def started_on_profile(sender, member, **extra):
    petitions = services.started_by(member)
    return render_template("petitions/_profile.html", petitions=petitions) if petitions else None


@city_sections.connect
def open_petitions_in_city(sender, city_slug, **extra):
    petitions = services.find_petitions(city=city_slug).items
    return render_template("petitions/_city.html", petitions=petitions) if petitions else None
