"""Signals through which features add to a member's profile, data export and deletion.

Members never import the features; features connect receivers here:
- ``profile_sections(member)``: return rendered HTML for the profile page, or None;
- ``data_export(member)``: return a dict merged into the member's data download;
- ``account_deleting(member)``: anonymise or remove the member's rows before deletion;
- ``email_confirmed(member)``: the member proved they read their address;
- ``password_changed(member)``: revoke what whoever knew the old password could keep using
  without it, such as a secret feed address (committed by the caller);
- ``account_mail_wanted(member, kind)``: send ``confirm_account``, ``reset_password`` or
  ``already_registered`` to the member (the notifications package does).
"""

from blinker import Namespace

signals = Namespace()

profile_sections = signals.signal("profile-sections")
data_export = signals.signal("data-export")
account_deleting = signals.signal("account-deleting")
email_confirmed = signals.signal("email-confirmed")
password_changed = signals.signal("password-changed")
account_mail_wanted = signals.signal("account-mail-wanted")
