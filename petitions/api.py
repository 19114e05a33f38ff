"""Petitions and signatures in the API, as OSDI petitions and signatures, and the hourly
signature counts as open data.

The names of signers who chose not to be shown go only to the petition's organiser,
through their API token; so do the emails of signers who asked for the organiser's
updates, as in the organiser's CSV export. No one else's email leaves Groundswell.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from email_validator import EmailNotValidError, validate_email
from flask import Response, abort, jsonify, request
from sqlalchemy import func, select

from core.api import (
    LINKS_SCHEMA,
    ApiProblem,
    api_member,
    api_route,
    collection,
    collection_schema,
    hal,
    identifiers,
    iso,
    json_body,
    link,
    modified_filter,
    person,
    person_schema,
    schema,
)
from core.db import reads_from_replica, utcnow
from core.extensions import db
from core.forms import unusual_characters
from core.templating import render_markdown
from petitions import bp, services
from petitions.models import HourlyCount, Petition, PetitionState, Signature, SignatureState

PUBLIC_STATES = (PetitionState.OPEN, PetitionState.CLOSED, PetitionState.WON)

PETITION = schema(
    "Petition",
    {
        "type": "object",
        "required": ["identifiers", "title", "petition_text", "target", "total_signatures"],
        "properties": {
            "identifiers": {"type": "array", "items": {"type": "string"}},
            "origin_system": {"type": "string"},
            "created_date": {"type": "string", "format": "date-time"},
            "modified_date": {"type": "string", "format": "date-time"},
            "title": {"type": "string"},
            "description": {"type": "string"},
            "petition_text": {"type": "string"},
            "target": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}, "title": {"type": "string"}},
                },
            },
            "browser_url": {"type": "string"},
            "total_signatures": {"type": "integer", "minimum": 0},
            "goal": {"type": "integer"},
            "status": {"type": "string", "enum": [s.value for s in PUBLIC_STATES]},
            "locality": {"type": "string"},
            "end_date": {"type": "string", "format": "date-time"},
            "_links": LINKS_SCHEMA,
        },
    },
)
PERSON = person_schema()
SIGNATURE = schema(
    "Signature",
    {
        "type": "object",
        "required": ["identifiers", "created_date", "status"],
        "properties": {
            "identifiers": {"type": "array", "items": {"type": "string"}},
            "created_date": {"type": "string", "format": "date-time"},
            "modified_date": {"type": "string", "format": "date-time"},
            "status": {"type": "string"},
            "comments": {"type": "string"},
            "person": PERSON,
            "_links": LINKS_SCHEMA,
        },
    },
)
SIGNATURE_REQUEST = schema(
    "SignatureRequest",
    {
        "type": "object",
        "required": ["person"],
        "properties": {
            "person": {
                **PERSON,
                "required": ["email_addresses"],
            },
            "comments": {"type": "string", "maxLength": 500},
        },
    },
)
PENDING = schema(
    "PendingSignature",
    {
        "type": "object",
        "required": ["status", "message"],
        "properties": {
            "status": {"type": "string", "enum": ["pending"]},
            "message": {"type": "string"},
            "_links": LINKS_SCHEMA,
        },
    },
)


PETITIONS = collection_schema("Petitions", PETITION)
SIGNATURES = collection_schema("Signatures", SIGNATURE)


def represent_petition(petition: Petition) -> dict[str, Any]:
    return {
        "identifiers": identifiers("petition", petition.id),
        "origin_system": "Groundswell",
        "created_date": iso(petition.created_at),
        "modified_date": iso(petition.updated_at),
        "title": petition.title,
        "description": str(render_markdown(petition.ask)),
        "petition_text": petition.ask,
        "target": [{"name": petition.decision_maker_name, "title": petition.decision_maker_role}],
        "browser_url": link("petitions.show", petition_id=petition.id)["href"],
        "total_signatures": petition.signature_count,
        "goal": petition.goal,
        "status": petition.status,
        "locality": petition.city,
        "end_date": iso(petition.ended_at or petition.closes_at),
        "_links": {
            "self": link("petitions.api_petition", petition_id=petition.id),
            "osdi:signatures": link("petitions.api_signatures", petition_id=petition.id),
            "osdi:record_signature_helper": link(
                "petitions.api_signatures", petition_id=petition.id
            ),
        },
    }


def _person(signature: Signature, personal: bool) -> dict[str, Any] | None:
    if not (personal or signature.show_name) or not signature.name:
        return None
    # The organiser gets an email only where the signer asked for their updates.
    email = signature.email if personal and signature.wants_updates else None
    return person(signature.name, email, signature.city)


def represent_signature(signature: Signature, personal: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "identifiers": identifiers("signature", signature.id),
        "created_date": iso(signature.created_at),
        "modified_date": iso(signature.confirmed_at or signature.created_at),
        "status": signature.state,
        "_links": {
            "self": link(
                "petitions.api_signature",
                petition_id=signature.petition_id,
                signature_id=signature.id,
            ),
            "osdi:petition": link("petitions.api_petition", petition_id=signature.petition_id),
        },
    }
    signer = _person(signature, personal)
    if signer is not None:
        body["person"] = signer
        if signature.comment:
            body["comments"] = signature.comment
    return body


def _public_petition(petition_id: int) -> Petition:
    petition = db.session.get(Petition, petition_id)
    if petition is None or petition.state not in PUBLIC_STATES:
        raise ApiProblem(404, "There is no public petition with that id.")
    return petition


def _is_organiser(petition: Petition) -> bool:
    member = api_member()
    return member is not None and petition.organiser_id == member.id


@api_route(
    bp,
    "/petitions",
    summary="Public petitions, newest first.",
    response=PETITIONS,
    paged=True,
    entry="osdi:petitions",
)
def api_petitions():
    query = select(Petition).where(
        Petition.state.in_(PUBLIC_STATES), *modified_filter(Petition.updated_at)
    )
    return collection(
        query,
        order_by=[Petition.id.desc()],
        rel="osdi:petitions",
        represent=represent_petition,
        endpoint="petitions.api_petitions",
    )


@api_route(bp, "/petitions/<id:petition_id>", summary="One public petition.", response=PETITION)
def api_petition(petition_id: int):
    return hal(represent_petition(_public_petition(petition_id)))


@api_route(
    bp,
    "/petitions/<id:petition_id>/signatures",
    summary=(
        "Confirmed signatures of a petition, newest first. The organiser's token also sees "
        "hidden names, and the emails of signers who asked for the organiser's updates."
    ),
    response=SIGNATURES,
    paged=True,
    personal=True,
)
def api_signatures(petition_id: int):
    petition = _public_petition(petition_id)
    personal = _is_organiser(petition)
    confirmed_or_created = func.coalesce(Signature.confirmed_at, Signature.created_at)
    query = select(Signature).where(
        Signature.petition_id == petition.id,
        Signature.state == SignatureState.CONFIRMED,
        *modified_filter(confirmed_or_created),
    )
    return collection(
        query,
        order_by=[Signature.id.desc()],
        rel="osdi:signatures",
        represent=lambda s: represent_signature(s, personal),
        endpoint="petitions.api_signatures",
        values={"petition_id": petition.id},
    )


@api_route(
    bp,
    "/petitions/<id:petition_id>/signatures/<id:signature_id>",
    summary="One confirmed signature.",
    response=SIGNATURE,
    personal=True,
)
def api_signature(petition_id: int, signature_id: int):
    petition = _public_petition(petition_id)
    signature = db.session.get(Signature, signature_id)
    if (
        signature is None
        or signature.petition_id != petition.id
        or signature.state != SignatureState.CONFIRMED
    ):
        raise ApiProblem(404, "There is no confirmed signature with that id on this petition.")
    return hal(represent_signature(signature, _is_organiser(petition)))


def _signer_from(body: dict[str, Any]) -> services.SignerDetails:
    """The OSDI person of a record-signature request, checked like the signature form."""
    errors: dict[str, list[str]] = {}
    person = body.get("person")
    if not isinstance(person, dict):
        raise ApiProblem(422, "A signature needs a person.", errors={"person": ["Required."]})

    def text(
        value: Any,
        name: str,
        maximum: int,
        *,
        minimum: int = 1,
        required: bool = True,
        one_line: bool = True,
    ) -> str:
        if value is not None and not isinstance(value, str):
            errors.setdefault(name, []).append(f"Must be text of at most {maximum} characters.")
            return ""
        value = (value or "").strip()  # only spaces is no name, as on the form
        if not value:
            if required:
                errors.setdefault(name, []).append("Required.")
            return ""
        if len(value) > maximum:
            errors.setdefault(name, []).append(f"Must be text of at most {maximum} characters.")
            return ""
        if len(value) < minimum:
            errors.setdefault(name, []).append(f"Must be at least {minimum} characters.")
            return ""
        if unusual_characters(one_line).intersection(value):
            refused = "line breaks or control characters" if one_line else "control characters"
            errors.setdefault(name, []).append(f"Must not hold {refused}.")
            return ""
        return value

    def first(items: Any, key: str) -> Any:
        if isinstance(items, list) and items and isinstance(items[0], dict):
            return items[0].get(key)
        return None

    name = " ".join(
        part
        for part in (
            text(person.get("given_name"), "person.given_name", 50),
            text(person.get("family_name"), "person.family_name", 49, required=False),
        )
        if part
    )
    if len(name) == 1:  # the form's name is at least two characters long
        errors.setdefault("person.given_name", []).append("Must be at least 2 characters.")
    email = text(first(person.get("email_addresses"), "address"), "person.email_addresses", 254)
    if email:
        try:
            email = validate_email(email, check_deliverability=False).normalized
        except EmailNotValidError:
            errors.setdefault("person.email_addresses", []).append("Not a valid email address.")
    city = text(
        first(person.get("postal_addresses"), "locality"), "person.postal_addresses", 80, minimum=2
    )
    comment = text(body.get("comments"), "comments", 500, required=False, one_line=False)
    if errors:
        raise ApiProblem(422, "The signature did not validate.", errors=errors)
    return services.SignerDetails(
        name=name,
        email=email,
        city=city,
        comment=comment or None,
        show_name=False,
        wants_updates=False,
    )


@api_route(
    bp,
    "/petitions/<id:petition_id>/signatures",
    methods=("POST",),
    summary=(
        "Record a signature (OSDI record signature helper). It stays pending until the "
        "signer confirms it from the email we send; rate limits apply as on the form."
    ),
    response=PENDING,
    body=SIGNATURE_REQUEST,
    statuses=(409, 422),
)
def record_signature(petition_id: int):
    petition = _public_petition(petition_id)
    details = _signer_from(json_body())
    try:
        services.sign(petition, details, request.remote_addr or "unknown")
    except services.SigningRefused as refusal:
        raise ApiProblem(
            429 if refusal.retry_after else 409, refusal.message, retry_after=refusal.retry_after
        ) from None
    # The same answer whether or not this address signed before, so it reveals nothing.
    return hal(
        {
            "status": "pending",
            "message": "We have emailed the signer a link; the signature counts once confirmed.",
            "_links": {"osdi:petition": link("petitions.api_petition", petition_id=petition.id)},
        },
        status=201,
    )


# --- open data ---------------------------------------------------------------------------


def _hourly_rows(petition: Petition) -> list[tuple[str, int]]:
    rows = db.session.execute(
        select(HourlyCount.hour, HourlyCount.count)
        .where(HourlyCount.petition_id == petition.id)
        .order_by(HourlyCount.hour)
    )
    return [(iso(hour), count) for hour, count in rows]


def _open_petition_or_404(petition_id: int) -> Petition:
    petition = db.session.get(Petition, petition_id)
    if petition is None or petition.state not in PUBLIC_STATES:
        abort(404)
    return petition


@bp.get("/petitions/<id:petition_id>/signatures-by-hour.json")
def hourly_json(petition_id: int):
    """Confirmed signatures per hour: open data, with no personal data."""
    petition = _open_petition_or_404(petition_id)
    body = {
        "petition": link("petitions.api_petition", petition_id=petition.id)["href"],
        "title": petition.title,
        "generated_at": iso(utcnow()),
        "total_signatures": petition.signature_count,
        "hours": [{"hour": hour, "signatures": count} for hour, count in _hourly_rows(petition)],
    }
    return jsonify(body)


@bp.get("/petitions/<id:petition_id>/signatures-by-hour.csv")
@reads_from_replica
def hourly_csv(petition_id: int):
    petition = _open_petition_or_404(petition_id)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["hour_utc", "confirmed_signatures"])
    writer.writerows(_hourly_rows(petition))
    response = Response(out.getvalue(), mimetype="text/csv")
    response.headers["Content-Disposition"] = (
        f'attachment; filename="petition-{petition.id}-signatures-by-hour.csv"'
    )
    return response
