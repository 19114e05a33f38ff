"""The notification centre, email preferences, and one-click unsubscribe."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from flask import abort, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from core.forms import ActionForm, form_page, require_action_token
from notifications import bp, services
from notifications.forms import PreferencesForm
from notifications.models import Category, Frequency


@bp.app_context_processor
def unread_notices():
    def count() -> int:
        return services.unread_count(current_user) if current_user.is_authenticated else 0

    return {"unread_notices": count}


@bp.get("/notifications")
@login_required
def index():
    return render_template(
        "notifications/index.html",
        notices=services.notices_for(current_user),
        form=ActionForm(formdata=None),
    )


@bp.post("/notifications/<id:notice_id>/read")
@login_required
def mark_read(notice_id: int):
    require_action_token()
    link = services.notice_link(current_user, notice_id)
    if request.form.get("open") and link:
        return redirect(link)
    return redirect(url_for("notifications.index"))


@bp.post("/notifications/read-all")
@login_required
def mark_all_read():
    require_action_token()
    services.mark_read(current_user)
    flash("All notifications are marked as read.", "info")
    return redirect(url_for("notifications.index"))


def _preferences_page(
    chosen: dict[str, Frequency], save: Callable[[dict[str, Frequency]], None], action: str
):
    form = PreferencesForm(data=chosen)
    if form.validate_on_submit():
        save({category: Frequency(form[category].data) for category in Category})
        flash("Your email preferences are saved.", "success")
        return redirect(action)
    return form_page("notifications/preferences.html", form, action=action)


@bp.route("/notifications/preferences", methods=["GET", "POST"])
@login_required
def preferences():
    return _preferences_page(
        services.member_preferences(current_user),
        partial(services.set_member_preferences, current_user),
        url_for("notifications.preferences"),
    )


@bp.route("/notifications/preferences/<token>", methods=["GET", "POST"])
def guest_preferences(token: str):
    subscriber = services.read_preferences_token(token) or abort(404)
    return _preferences_page(
        services.linked_preferences(subscriber),
        partial(services.save_linked_preferences, subscriber),
        url_for("notifications.guest_preferences", token=token),
    )


@bp.route("/notifications/unsubscribe/<token>", methods=["GET", "POST"])
def unsubscribe(token: str):
    # Mail clients post here with no session (RFC 8058): the signed token is the authority.
    found = services.read_unsubscribe_token(token)
    if found is None:
        return render_template("notifications/unsubscribe_invalid.html"), 404
    subscriber, category = found
    if request.method == "POST":
        services.unsubscribe(subscriber, category)
        return render_template(
            "notifications/unsubscribed.html",
            category=category,
            preferences_link=services.preferences_url(subscriber),
        )
    return render_template("notifications/unsubscribe.html", category=category)
