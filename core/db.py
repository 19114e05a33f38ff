"""Database plumbing: the declarative base, timestamps, SQLite connection settings, and
the session that can send a request's reads to a read replica."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import current_app
from flask_sqlalchemy.session import Session as FlaskSession
from sqlalchemy import DateTime, MetaData, TypeDecorator, event, func, or_, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    SessionTransaction,
    mapped_column,
    registry,
)
from sqlalchemy.sql.expression import Executable

# The bind key of the optional read replica (DATABASE_REPLICA_URL).
REPLICA = "replica"

# Stable constraint names keep Alembic migrations identical on SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """The current time in UTC, timezone-aware."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """A timestamp kept in UTC and always handed back timezone-aware, whatever the database."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None:
            if value.tzinfo is None:
                value = value.replace(tzinfo=UTC)
            value = value.astimezone(UTC)
            if dialect.name == "sqlite":
                value = value.replace(tzinfo=None)
        return value

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    """Base for every model."""

    registry = registry(
        metadata=MetaData(naming_convention=NAMING_CONVENTION),
        type_annotation_map={datetime: UTCDateTime()},
    )


class Timestamped:
    """Adds created and updated times to a model."""

    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


@event.listens_for(Engine, "connect")
def _tune_sqlite(dbapi_connection, connection_record) -> None:
    """Give SQLite foreign keys, WAL and a busy timeout so web and worker can share it."""
    module = type(dbapi_connection).__module__
    if not module.startswith("sqlite3"):
        return
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def dialect_insert(model):
    """An INSERT for ``model`` that knows ON CONFLICT on both SQLite and PostgreSQL."""
    if _dialect_name() == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(model)


def _dialect_name() -> str:
    from core.extensions import db

    return db.session.get_bind().dialect.name


def built_once(build: Callable[[], Executable]) -> Callable[[], Executable]:
    """Keep the statement ``build`` returns, one per database dialect, for every later call.

    For a statement run on every request with its values as parameters: building it and
    its cache key costs more Python than sending it. Statements never change once built,
    so requests and threads can share them.
    """
    statements: dict[str, Executable] = {}

    @functools.wraps(build)
    def statement() -> Executable:
        dialect = _dialect_name()
        if dialect not in statements:
            statements[dialect] = build()
        return statements[dialect]

    return statement


def add_to_count(model, key: dict, delta: int, **on_insert) -> None:
    """Add ``delta`` to ``model.count`` for the row with ``key``, creating it if need be."""
    from core.extensions import db

    statement = dialect_insert(model).values(**key, **on_insert, count=delta)
    statement = statement.on_conflict_do_update(
        index_elements=list(key), set_={"count": model.count + delta}
    )
    db.session.execute(statement)


# The same form sent again this soon (a double click, a resent page) is one submission.
REPOST_WINDOW = timedelta(minutes=10)


def first_copy(model, *conditions):
    """The newest row of ``model`` meeting ``conditions`` made within REPOST_WINDOW: what a
    form sent twice made the first time, or None. Call it under a lock that serialises
    such rows, so that two copies at once cannot both find nothing."""
    from core.extensions import db

    return db.session.scalar(
        select(model)
        .where(*conditions, model.created_at > utcnow() - REPOST_WINDOW)
        .order_by(model.id.desc())
        .limit(1)
    )


def claim_unless_recent(stamp, row_id: int, pause: timedelta, *conditions) -> bool:
    """Set the ``stamp`` column of row ``row_id`` to now, unless it was set less than
    ``pause`` ago or ``conditions`` fail; commits, and returns whether this call claimed it.

    One conditional UPDATE, so that of two requests at once only one wins: for resending
    a confirmation email at most once in ``pause``, however often someone asks.
    """
    from core.extensions import db

    model, now = stamp.class_, utcnow()
    claimed = db.session.execute(
        update(model)
        .where(model.id == row_id, or_(stamp.is_(None), stamp < now - pause), *conditions)
        .values({stamp: now})
    ).rowcount
    db.session.commit()
    return bool(claimed)


ON_COMMIT = "core.on_commit"


def on_commit(action: Callable[[], None]) -> None:
    """Run ``action`` once the current transaction commits, and never if it rolls back.

    For what must not happen before the data it refers to is saved, such as queueing a
    job about rows this transaction adds. Inside a savepoint, rolling the savepoint back
    forgets the action. An action that fails is logged, not raised: the data is saved by
    then, and what reads it later (a sweep) must make up for the action.
    """
    from core.extensions import db

    session = db.session()
    if not session.in_transaction():
        session.begin()  # so that a rollback before any statement still forgets the action
    transaction = session.get_nested_transaction() or session.get_transaction()
    session.info.setdefault(ON_COMMIT, []).append((transaction, action))


@event.listens_for(Session, "after_commit")
def _run_on_commit(session: Session) -> None:
    from core.queue import JobTimeout

    if session.in_nested_transaction():
        return  # a savepoint: nothing is saved until the transaction is
    for _, action in session.info.pop(ON_COMMIT, []):
        try:
            action()
        except JobTimeout:
            raise  # the worker's time limit, not the action's failure
        except Exception:
            current_app.logger.exception("an action after a commit failed")


@event.listens_for(Session, "after_soft_rollback")
def _forget_rolled_back(session: Session, previous_transaction: SessionTransaction) -> None:
    pending = session.info.get(ON_COMMIT)
    if pending:
        pending[:] = [
            (transaction, action)
            for transaction, action in pending
            if not _inside(transaction, previous_transaction)
        ]


@event.listens_for(Session, "after_transaction_end")
def _forget_when_closed(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:  # a commit ran its actions by now
        session.info.pop(ON_COMMIT, None)


def _inside(transaction: SessionTransaction | None, outer: SessionTransaction) -> bool:
    while transaction is not None:
        if transaction is outer:
            return True
        transaction = transaction.parent
    return False


@dataclass(frozen=True)
class Page:
    """One page of a listing."""

    items: list
    page: int
    pages: int
    total: int


def paginate(query, order_by: list, page: int, per_page: int = 20) -> Page:
    """Run ``query`` for one page, clamping ``page`` to the pages there are."""
    from core.extensions import db

    counting = select(func.count()).select_from(query.order_by(None).subquery())
    total = db.session.scalar(counting) or 0
    pages = max(1, math.ceil(total / per_page))
    page = min(max(page, 1), pages)
    items = db.session.scalars(
        query.order_by(*order_by).limit(per_page).offset((page - 1) * per_page)
    ).all()
    return Page(list(items), page, pages, total)


class RoutingSession(FlaskSession):
    """Sends the SELECTs of a request marked with ``reads_from_replica`` to the replica.

    Flushes and every other statement still go to the primary, and without a replica
    configured nothing changes.
    """

    def get_bind(
        self,
        mapper: Any = None,
        clause: Any = None,
        bind: Engine | Connection | None = None,
        **kwargs: Any,
    ) -> Engine | Connection:
        if bind is None and self.info.get(REPLICA) and not self._flushing:
            replica = self._db.engines.get(REPLICA)
            if replica is not None and getattr(clause, "is_select", False):
                return replica
        return super().get_bind(mapper=mapper, clause=clause, bind=bind, **kwargs)


def reads_from_replica(view: Callable) -> Callable:
    """Serve ``view``'s reads from the replica: only for reads that may lag a moment.

    Fit for feeds and exports polled again and again; never for a page showing a count,
    which must not step back, nor for one that reads what the same member just wrote.
    """

    @functools.wraps(view)
    def on_replica(*args, **kwargs):
        current_app.extensions["sqlalchemy"].session.info[REPLICA] = True
        return view(*args, **kwargs)

    return on_replica
