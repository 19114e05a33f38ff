"""The JSON API under ``/api/v1``, in the style of the Open Supporter Data Interface 1.x.

Features add their resources with :func:`api_route`, which registers the Flask route and
describes it for the OpenAPI document at ``/api/v1/openapi.json``. This module holds what
they share: HAL+JSON collections with OSDI paging, the ``modified_date`` filter, API
tokens (the ``OSDI-API-Token`` header), rate limits, and JSON errors.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, json, request, url_for
from sqlalchemy import ColumnElement, Select, func, select
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound

from core import ratelimit
from core.extensions import db
from core.routing import MAX_ID

PREFIX = "/api/v1"
HAL_JSON = "application/hal+json"
DEFAULT_PER_PAGE = 25
MAX_PER_PAGE = 100
TOKEN_HEADER = "OSDI-API-Token"
OSDI_DOCS = "https://opensupporter.github.io/osdi-docs/{rel}"


class ApiProblem(HTTPException):
    """An API error with a status, a message and, for bad input, the fields at fault."""

    def __init__(
        self,
        code: int,
        message: str,
        *,
        errors: dict[str, list[str]] | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(description=message)
        self.code, self.errors, self.retry_after = code, errors or {}, retry_after


def is_api_request() -> bool:
    return request.path == PREFIX or request.path.startswith(PREFIX + "/")


def problem_response(error: HTTPException) -> Response:
    """Every API error, ours or Flask's, as JSON with the right status."""
    if isinstance(error, MethodNotAllowed) and not _matches_any_route():
        error = NotFound()  # an impossible id: no such resource, whatever the method
    code = error.code or 500
    body: dict[str, Any] = {
        "status": code,
        "error": error.name,
        "message": error.description
        if isinstance(error, ApiProblem) or code != 500
        else "An error on our side stopped this request. It has been logged.",
    }
    if isinstance(error, ApiProblem) and error.errors:
        body["errors"] = error.errors
    response = current_app.response_class(
        json.dumps(body), status=code, mimetype="application/json"
    )
    for name, value in error.get_headers():
        if name.lower() not in ("content-type", "content-length"):
            response.headers[name] = value
    retry_after = getattr(error, "retry_after", None)
    if retry_after:
        response.headers["Retry-After"] = str(retry_after)
    return response


def _matches_any_route() -> bool:
    adapter = current_app.url_map.bind_to_environ(request.environ)
    try:
        adapter.match(method="GET")
    except HTTPException as found:
        return not isinstance(found, NotFound)
    return True


# --- who is asking -----------------------------------------------------------------------


def api_member():
    """The member whose token came with the request, or None without one; 401 for a bad one."""
    if "api_member" not in g:
        token = request.headers.get(TOKEN_HEADER, "").strip()
        member = None
        if token:
            from members.services import member_for_api_token

            member = member_for_api_token(token)
            if member is None:
                raise ApiProblem(401, f"The {TOKEN_HEADER} header holds no valid token.")
        g.api_member = member
    return g.api_member


def require_member():
    """The token's member; 401 when the request came without a token."""
    member = api_member()
    if member is None:
        raise ApiProblem(401, f"This needs an API token in the {TOKEN_HEADER} header.")
    return member


def _member_key(member) -> str:
    return f"api:member:{member.id}"


def _address_key() -> str:
    return f"api:address:{request.remote_addr}"


def _wrong_token_key() -> str:
    return f"api:wrong-token:{request.remote_addr}"


def _spend(key: str) -> None:
    """Count one request against ``key``; 429 with Retry-After once it is over the limit."""
    limit = current_app.config["API_RATE_LIMIT"]
    if not ratelimit.hit(limit, key, allow_when_down=True):
        _refuse_for(limit, key)


def _refuse_for(limit: str, key: str) -> None:
    raise ApiProblem(
        429,
        f"Too many requests: the limit is {limit}. Please wait before trying again.",
        retry_after=ratelimit.seconds_until_free(limit, key),
    )


def _wrong_tokens_exhausted() -> bool:
    limit = current_app.config["API_RATE_LIMIT"]
    return ratelimit.is_exhausted(limit, _wrong_token_key(), allow_when_down=True)


def guard_api_request() -> None:
    """Before any API request: the rate limit, then the token, so a bad token is refused
    everywhere with 401.

    Without a token the limit is per address; with a valid one, per member, so that
    making more tokens does not buy more requests. Wrong tokens
    count against their address, and once it has sent too many, no token from there is
    looked up until the window frees, so made-up tokens cannot buy unlimited lookups.
    """
    if not is_api_request():
        return
    g.pop("api_member", None)  # known per request, even where requests share a context
    token = request.headers.get(TOKEN_HEADER, "").strip()
    if not token:
        _spend(_address_key())
        g.api_member = None
        return
    if _wrong_tokens_exhausted():
        _refuse_for(current_app.config["API_RATE_LIMIT"], _wrong_token_key())
    try:
        member = api_member()
    except ApiProblem:
        _spend(_wrong_token_key())
        raise
    _spend(_member_key(member))


# --- reading the query string -------------------------------------------------------------


def _positive(name: str, default: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_ID:
        raise ApiProblem(400, f"'{name}' must be a whole number from 1.")
    return int(raw)


def page_args() -> tuple[int, int]:
    """``page`` and ``per_page``; a ``per_page`` over the maximum gets the maximum."""
    return _positive("page", 1), min(_positive("per_page", DEFAULT_PER_PAGE), MAX_PER_PAGE)


_CLAUSE = re.compile(r"modified_date\s+(gt|ge|lt|le|eq)\s+'([^']{4,40})'", re.IGNORECASE)
_OPERATORS = {
    "gt": lambda column, value: column > value,
    "ge": lambda column, value: column >= value,
    "lt": lambda column, value: column < value,
    "le": lambda column, value: column <= value,
    "eq": lambda column, value: column == value,
}


def _moment(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        message = f"'{text}' is not a date like 2026-01-31 or 2026-01-31T12:00:00Z."
        raise ApiProblem(400, message) from None
    try:
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except OverflowError:
        # 9999-12-31T23:59:59-05:00 is a valid date whose UTC time is past year 9999.
        raise ApiProblem(400, f"'{text}' is outside the dates we can compare.") from None


def modified_filter(column: ColumnElement) -> list[ColumnElement]:
    """Conditions from ``filter=modified_date gt '2026-01-01'`` (clauses joined by ``and``)."""
    raw = request.args.get("filter", "").strip()
    if not raw:
        return []
    clauses = re.split(r"\s+and\s+", raw, flags=re.IGNORECASE)
    conditions = []
    for clause in clauses:
        match = _CLAUSE.fullmatch(clause.strip())
        if match is None:
            raise ApiProblem(
                400,
                "The filter must look like: modified_date gt '2026-01-01' "
                "(operators gt, ge, lt, le, eq; clauses joined by 'and').",
            )
        operator, value = match.groups()
        conditions.append(_OPERATORS[operator.lower()](column, _moment(value)))
    return conditions


# --- answering ---------------------------------------------------------------------------


def iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None


def hal(body: dict[str, Any], status: int = 200) -> Response:
    return current_app.response_class(json.dumps(body), status=status, mimetype=HAL_JSON)


def link(endpoint: str, **values: Any) -> dict[str, str]:
    return {"href": url_for(endpoint, _external=True, **values)}


CURIES = [{"name": "osdi", "href": OSDI_DOCS, "templated": True}]


def collection(
    query: Select,
    *,
    order_by: list,
    rel: str,
    represent: Callable[[Any], dict[str, Any]],
    endpoint: str,
    values: dict[str, Any] | None = None,
) -> Response:
    """One page of ``query`` as an OSDI collection, with next and previous links."""
    values = values or {}
    page, per_page = page_args()
    total = db.session.scalar(select(func.count()).select_from(query.order_by(None).subquery()))
    items = db.session.scalars(
        query.order_by(*order_by).limit(per_page).offset((page - 1) * per_page)
    ).all()
    total_pages = math.ceil((total or 0) / per_page)
    links: dict[str, Any] = {
        "self": link(endpoint, page=page, per_page=per_page, **values),
        "curies": CURIES,
        rel: [represent(item)["_links"]["self"] for item in items],
    }
    if page < total_pages:
        links["next"] = link(endpoint, page=page + 1, per_page=per_page, **values)
    if page > 1:
        links["prev"] = link(
            endpoint, page=min(page - 1, max(total_pages, 1)), per_page=per_page, **values
        )
    return hal(
        {
            "total_pages": total_pages,
            "per_page": per_page,
            "page": page,
            "total_records": total or 0,
            "_links": links,
            "_embedded": {rel: [represent(item) for item in items]},
        }
    )


def identifiers(kind: str, record_id: int) -> list[str]:
    return [f"groundswell:{kind}-{record_id}"]


def json_body() -> dict[str, Any]:
    """The request's JSON object; 400 when it is not one, 422 when some text in it is not
    valid Unicode (a lone surrogate such as "\\ud800", which no database can store)."""
    try:
        body = request.get_json(silent=True)
    except RecursionError:
        body = None  # nested deeper than the parser goes: not a body any field could use
    if not isinstance(body, dict):
        raise ApiProblem(400, "Send a JSON object with Content-Type: application/json.")
    if (path := _first_unencodable(body)) is not None:
        raise ApiProblem(
            422,
            "The request holds text that is not valid Unicode.",
            errors={path: ["Must be valid Unicode text."]},
        )
    return body


def _first_unencodable(body: dict[str, Any]) -> str | None:
    """The path (``person.email_addresses[0].address``) of a string, key or value,
    that cannot be written as UTF-8; None when there is none. Walked without recursion, as
    a parsed body may be nested nearly as deep as the parser allows."""
    pending: list[tuple[str, Any]] = [("", body)]
    while pending:
        path, value = pending.pop()
        if isinstance(value, str):
            if not _encodable(value):
                return path or "body"
        elif isinstance(value, dict):
            for key, item in value.items():
                named = f"{path}.{key}" if path else key
                if not _encodable(key):
                    return _printable(named)
                pending.append((named, item))
        elif isinstance(value, list):
            pending.extend((f"{path}[{index}]", item) for index, item in enumerate(value))
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _printable(text: str) -> str:
    """``text`` with each lone surrogate shown as the replacement character."""
    return re.sub("[\ud800-\udfff]", "\ufffd", text)


# --- describing the API ------------------------------------------------------------------


@dataclass(frozen=True)
class Operation:
    """One documented endpoint, for the OpenAPI document and the docs page."""

    rule: str
    method: str
    endpoint: str
    summary: str
    response: dict[str, Any]
    statuses: tuple[int, ...]
    body: dict[str, Any] | None = None
    paged: bool = False
    personal: bool = False
    entry: str | None = None  # the entry point's link name, for collections listed there
    parameters: list[dict[str, Any]] = field(default_factory=list)


OPERATIONS: list[Operation] = []
SCHEMAS: dict[str, dict[str, Any]] = {}


def schema(name: str, definition: dict[str, Any]) -> dict[str, str]:
    """Register a component schema; returns a reference to it."""
    SCHEMAS[name] = definition
    return {"$ref": f"#/components/schemas/{name}"}


LINKS_SCHEMA = {"type": "object", "additionalProperties": True}


def collection_schema(name: str, item: dict[str, Any]) -> dict[str, str]:
    """Register the schema of an OSDI collection whose ``_embedded`` lists ``item``."""
    return schema(
        name,
        {
            "type": "object",
            "required": ["page", "per_page", "total_pages", "total_records", "_links", "_embedded"],
            "properties": {
                "page": {"type": "integer"},
                "per_page": {"type": "integer"},
                "total_pages": {"type": "integer"},
                "total_records": {"type": "integer"},
                "_links": LINKS_SCHEMA,
                "_embedded": {
                    "type": "object",
                    "additionalProperties": {"type": "array", "items": item},
                },
            },
        },
    )


def person_schema() -> dict[str, Any]:
    """An OSDI person as the API shows it: names, email addresses and locality."""
    return {
        "type": "object",
        "properties": {
            "given_name": {"type": "string"},
            "family_name": {"type": "string"},
            "email_addresses": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "address": {"type": "string"},
                        "primary": {"type": "boolean"},
                    },
                },
            },
            "postal_addresses": {
                "type": "array",
                "items": {"type": "object", "properties": {"locality": {"type": "string"}}},
            },
        },
    }


def person(name: str, email: str | None = None, locality: str | None = None) -> dict[str, Any]:
    """An OSDI person from a display name, with the email only when it may be shown."""
    given, _, family = name.partition(" ")
    body: dict[str, Any] = {"given_name": given, "family_name": family}
    if email:
        body["email_addresses"] = [{"address": email, "primary": True}]
    if locality:
        body["postal_addresses"] = [{"locality": locality}]
    return body


def api_route(
    bp: Blueprint,
    rule: str,
    *,
    summary: str,
    response: dict[str, Any],
    methods: tuple[str, ...] = ("GET",),
    statuses: tuple[int, ...] = (),
    body: dict[str, Any] | None = None,
    paged: bool = False,
    personal: bool = False,
    entry: str | None = None,
):
    """Route ``PREFIX + rule`` on ``bp`` and document it."""

    def register(view: Callable[..., Any]) -> Callable[..., Any]:
        bp.add_url_rule(PREFIX + rule, view_func=view, methods=list(methods))
        for method in methods:
            OPERATIONS.append(
                Operation(
                    rule=rule,
                    method=method.lower(),
                    endpoint=f"{bp.name}.{view.__name__}",
                    summary=summary,
                    response=response,
                    statuses=statuses,
                    body=body,
                    paged=paged,
                    personal=personal,
                    entry=entry,
                )
            )
        return view

    return register


def _path_of(rule: str) -> tuple[str, list[dict[str, Any]]]:
    parameters = []
    for converter, name in re.findall(r"<(?:(\w+):)?(\w+)>", rule):
        schema_ = (
            {"type": "integer", "minimum": 1, "maximum": MAX_ID}
            if converter == "id"
            else {"type": "string", "pattern": "^[a-z0-9-]{1,120}$"}
        )
        parameters.append({"name": name, "in": "path", "required": True, "schema": schema_})
    return re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule), parameters


PAGING_PARAMETERS = [
    {
        "name": "page",
        "in": "query",
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ID},
        "description": "Page number, from 1.",
    },
    {
        "name": "per_page",
        "in": "query",
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ID},
        "description": f"Records per page; at most {MAX_PER_PAGE} are returned.",
    },
    {
        "name": "filter",
        "in": "query",
        "schema": {
            "type": "string",
            "pattern": r"^modified_date (gt|ge|lt|le|eq) '\d{4}-\d{2}-\d{2}'$",
        },
        "description": "OData subset, e.g. modified_date gt '2026-01-01'.",
    },
]

ERROR_SCHEMA = {
    "type": "object",
    "required": ["status", "error", "message"],
    "properties": {
        "status": {"type": "integer"},
        "error": {"type": "string"},
        "message": {"type": "string"},
        "errors": {
            "type": "object",
            "additionalProperties": {"type": "array", "items": {"type": "string"}},
        },
    },
}

STATUS_TEXT = {
    200: "OK",
    201: "Created",
    400: "The request is malformed.",
    401: "The API token is missing or not valid.",
    403: "The token's member may not see or do this.",
    404: "No such resource.",
    409: "The resource's state does not allow this.",
    422: "The input did not validate; `errors` names the fields.",
    429: "Rate limited; see Retry-After.",
    503: "A backing service is unavailable.",
}


def _responses(operation: Operation) -> dict[str, Any]:
    success = 201 if operation.method == "post" else 200
    responses: dict[str, Any] = {
        str(success): {
            "description": STATUS_TEXT[success],
            "content": {HAL_JSON: {"schema": operation.response}},
        }
    }
    for status in sorted({400, 401, 404, 429, 503, *operation.statuses}):
        responses[str(status)] = {
            "description": STATUS_TEXT[status],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
    return responses


def openapi_document(app: Flask) -> dict[str, Any]:
    """The OpenAPI 3 description of every documented endpoint."""
    paths: dict[str, Any] = {}
    for operation in OPERATIONS:
        path, parameters = _path_of(operation.rule)
        entry: dict[str, Any] = {
            "operationId": operation.endpoint.replace(".", "_") + "_" + operation.method,
            "summary": operation.summary,
            "parameters": parameters + (PAGING_PARAMETERS if operation.paged else []),
            "responses": _responses(operation),
        }
        if operation.personal:
            entry["description"] = (
                "Personal data appears only with a token of the resource's organisers."
            )
            entry["security"] = [{}, {"token": []}]
        if operation.body is not None:
            entry["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": operation.body}},
            }
        paths.setdefault(path, {})[operation.method] = entry
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Groundswell API",
            "version": "1.0",
            "description": (
                "Read and write in the style of OSDI 1.x: HAL+JSON with _links and _embedded. "
                f"Rate limit: {app.config['API_RATE_LIMIT']} per member, whichever of their tokens "
                "they use, or per address without a token; requests with a wrong token count "
                "against their address."
            ),
        },
        "servers": [{"url": app.config["BASE_URL"].rstrip("/") + PREFIX}],
        "paths": paths,
        "components": {
            "schemas": {"Error": ERROR_SCHEMA, **SCHEMAS},
            "securitySchemes": {"token": {"type": "apiKey", "in": "header", "name": TOKEN_HEADER}},
        },
    }


def entry_links() -> dict[str, Any]:
    links: dict[str, Any] = {"self": link("core.api_entry"), "curies": CURIES}
    for operation in OPERATIONS:
        if operation.entry:
            links[operation.entry] = link(operation.endpoint)
    links["docs"] = link("core.api_docs")
    links["openapi"] = link("core.api_openapi")
    return links
