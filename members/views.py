"""Account pages. Each view reads a form, calls a service and redirects or renders."""

from __future__ import annotations

import json

from flask import (
    Response,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_login import current_user, login_required, login_user, logout_user

from core.extensions import db, login_manager
from core.forms import (
    INVALID_FORM_STATUS,
    ActionForm,
    form_page,
    refused_page,
    require_action_token,
    safe_next,
)
from members import bp, services
from members.forms import (
    ApiTokenForm,
    ChangeEmailForm,
    ChangePasswordForm,
    DeleteAccountForm,
    LoginForm,
    ProfileForm,
    RegisterForm,
    ResetPasswordForm,
    ResetRequestForm,
)
from members.models import Member

login_manager.login_view = "members.login"
login_manager.login_message = "Please log in to continue."
login_manager.login_message_category = "info"

# Where the session keeps the address just registered, for the check-email page.
REGISTERED_EMAIL = "registered_email"


@login_manager.user_loader
def load_member(session_id: str) -> Member | None:
    return services.load_session_member(session_id)


@bp.route("/register", methods=["GET", "POST"])
def register():
    form = RegisterForm()
    if form.validate_on_submit():
        services.register(
            display_name=form.display_name.data,
            email=form.email.data,
            password=form.password.data,
            city=form.city.data,
        )
        # Kept in the signed session, not the URL: a link must not make our page say
        # that mail went to whatever text it carries.
        session[REGISTERED_EMAIL] = form.email.data
        return redirect(url_for("members.check_email"))
    return form_page("members/register.html", form)


@bp.get("/register/check-email")
def check_email():
    return render_template("members/check_email.html", email=session.get(REGISTERED_EMAIL))


@bp.route("/confirm/<token>", methods=["GET", "POST"])
def confirm(token: str):
    # Mail scanners open links; only a POST from the page's button confirms.
    form = ActionForm()
    found = services.member_for_confirmation(token)
    if found is None:
        return render_template("members/confirm_invalid.html"), 404
    member, email = found
    # Whoever holds the link must also know the password: a link to a mistyped new address
    # must not hand over the account, nor may someone who registered another person's
    # address keep the account once its owner confirms it. The owner who never chose
    # that password resets it instead, which confirms the address and ends other sessions.
    if not _logged_in_as(member):
        flash(
            "Please log in to confirm this email address. If you did not create this "
            "account, or forgot its password, choose “Forgot your password?”: the link we "
            "send confirms the address too.",
            "info",
        )
        return redirect(url_for("members.login", next=request.path))
    if form.validate_on_submit():
        member = services.confirm_email(token)
        if member is None:
            return render_template("members/confirm_invalid.html"), 404
        login_user(member)
        flash("Thank you: your email address is confirmed.", "success")
        return redirect(url_for("members.account"))
    return form_page("members/confirm.html", form, email=email)


def _logged_in_as(member: Member) -> bool:
    return current_user.is_authenticated and current_user.id == member.id


@bp.route("/login", methods=["GET", "POST"])
def login():
    form = LoginForm()
    if form.validate_on_submit():
        result = services.authenticate(
            form.email.data, form.password.data, request.remote_addr or ""
        )
        if result.retry_after is not None:
            form.form_errors.append(
                "Too many attempts to log in. Please wait a few minutes, or reset your password."
            )
            response = form_page("members/login.html", form, status=429)
            return response[0], 429, {"Retry-After": str(result.retry_after)}
        if result.member is not None:
            login_user(result.member, remember=form.remember.data)
            flash(f"Welcome back, {result.member.display_name}.", "success")
            return redirect(safe_next(request.args.get("next"), url_for("core.home")))
        form.form_errors.append("That email and password do not match an account.")
    return form_page("members/login.html", form)


@bp.route("/logout", methods=["GET", "POST"])
def logout():
    form = ActionForm()
    if form.validate_on_submit():
        logout_user()
        flash("You are logged out.", "info")
        return redirect(url_for("core.home"))
    return form_page("members/logout.html", form)


@bp.route("/reset", methods=["GET", "POST"])
def request_reset():
    form = ResetRequestForm()
    if form.validate_on_submit():
        services.request_password_reset(form.email.data, request.remote_addr or "")
        return render_template("members/reset_sent.html", email=form.email.data)
    return form_page("members/reset_request.html", form)


@bp.route("/reset/<token>", methods=["GET", "POST"])
def reset_password(token: str):
    if services.member_for_reset(token) is None:
        return render_template("members/reset_invalid.html"), 404
    form = ResetPasswordForm()
    if form.validate_on_submit():
        member = services.reset_password(token, form.password.data)
        if member is None:
            return render_template("members/reset_invalid.html"), 404
        login_user(member)
        flash("Your password is changed and you are logged in.", "success")
        return redirect(url_for("members.account"))
    return form_page("members/reset_password.html", form)


@bp.get("/members/<id:member_id>")
def profile(member_id: int):
    member = db.session.get(Member, member_id) or abort(404)
    return render_template(
        "members/profile.html", member=member, sections=services.profile_html(member)
    )


def _account_forms() -> dict[str, object]:
    member = current_user
    return {
        "profile_form": ProfileForm(formdata=None, obj=member),
        "email_form": ChangeEmailForm(formdata=None),
        "password_form": ChangePasswordForm(formdata=None),
        "delete_form": DeleteAccountForm(formdata=None),
        "resend_form": ActionForm(formdata=None),
        "token_form": ApiTokenForm(formdata=None),
        "api_tokens": services.api_tokens_of(member),
    }


def _account_page(status: int = 200, **forms: object):
    context = {**_account_forms(), **forms}
    if status == INVALID_FORM_STATUS:
        return refused_page("members/account.html", **context)
    return render_template("members/account.html", **context), status


@bp.get("/account")
@login_required
def account():
    return _account_page()


@bp.post("/account/profile")
@login_required
def update_profile():
    form = ProfileForm()
    if not form.validate():
        return _account_page(INVALID_FORM_STATUS, profile_form=form)
    services.update_profile(current_user, display_name=form.display_name.data, city=form.city.data)
    flash("Your profile is saved.", "success")
    return redirect(url_for("members.account"))


@bp.post("/account/email")
@login_required
def change_email():
    form = ChangeEmailForm()
    if form.validate() and not current_user.check_password(form.current_password.data):
        form.current_password.errors.append("That is not your current password.")
    if form.errors:
        return _account_page(INVALID_FORM_STATUS, email_form=form)
    outcome = services.change_email(current_user, form.email.data)
    flash(_email_change_message(outcome, form.email.data), "info")
    return redirect(url_for("members.account"))


def _email_change_message(outcome: services.EmailChange, email: str) -> str:
    # Said the same whether or not another account has the address.
    if outcome is services.EmailChange.CANCELLED:
        return f"Your email change was cancelled. We keep using {current_user.email}."
    if outcome is services.EmailChange.UNCHANGED:
        return f"{email} is already your email address."
    return (
        f"We sent a confirmation link to {email}. "
        "Until you follow it, we keep using your current address."
    )


def _remembered_here() -> bool:
    """Whether this browser holds a "keep me logged in" cookie."""
    return current_app.config.get("REMEMBER_COOKIE_NAME", "remember_token") in request.cookies


@bp.post("/account/password")
@login_required
def change_password():
    form = ChangePasswordForm()
    if form.validate() and not current_user.check_password(form.current_password.data):
        form.current_password.errors.append("That is not your current password.")
    if form.errors:
        return _account_page(INVALID_FORM_STATUS, password_form=form)
    services.change_password(current_user, form.password.data)
    # The session id changed with the password; a browser asked to keep the member logged
    # in gets a remember cookie with the new id, or it would forget them on restart.
    login_user(current_user, remember=_remembered_here())
    flash(
        "Your password is changed. Other devices have been logged out and your API tokens revoked.",
        "success",
    )
    return redirect(url_for("members.account"))


@bp.post("/account/resend-confirmation")
@login_required
def resend_confirmation():
    require_action_token()
    if current_user.email_awaiting_confirmation:
        services.send_confirmation(current_user)
        flash("We sent a new confirmation link.", "info")
    return redirect(url_for("members.account"))


@bp.post("/account/delete")
@login_required
def delete_account():
    form = DeleteAccountForm()
    if form.validate() and not current_user.check_password(form.current_password.data):
        form.current_password.errors.append("That is not your current password.")
    if form.errors:
        return _account_page(INVALID_FORM_STATUS, delete_form=form)
    member = current_user._get_current_object()
    logout_user()
    services.delete_account(member)
    flash("Your account is deleted. Thank you for taking part.", "info")
    return redirect(url_for("core.home"))


@bp.post("/account/api-tokens")
@login_required
def create_api_token():
    form = ApiTokenForm()
    if not form.validate():
        return _account_page(INVALID_FORM_STATUS, token_form=form)
    try:
        token = services.create_api_token(current_user, form.name.data)
    except ValueError as error:
        form.form_errors.append(str(error))
        return _account_page(INVALID_FORM_STATUS, token_form=form)
    # Shown once, on this response only; never stored in the session or a cookie.
    return _account_page(new_token=token)


@bp.post("/account/api-tokens/<id:token_id>/revoke")
@login_required
def revoke_api_token(token_id: int):
    require_action_token()
    if not services.revoke_api_token(current_user, token_id):
        abort(404)
    flash("The token is revoked; programs using it no longer get in.", "success")
    return redirect(url_for("members.account") + "#api-tokens")


@bp.get("/account/data.json")
@login_required
def export_data():
    body = json.dumps(services.export_data(current_user), indent=2, ensure_ascii=False)
    return Response(
        body,
        mimetype="application/json",
        headers={"Content-Disposition": 'attachment; filename="groundswell-my-data.json"'},
    )
