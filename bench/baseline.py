"""The bare stack the benchmark measures Groundswell against.

Flask and Flask-SQLAlchemy on the same database, served by the same gunicorn settings:
``POST /rows`` inserts one row and commits; ``GET /page`` reads one row and renders a
small page; ``POST /rows/<id>/confirm`` marks one row confirmed. Nothing else: no
sessions, forms, templates, Redis, mail or jobs. The three together are the bare shape
of the signing flow (page, signature, confirmation), which the benchmark also measures.

    gunicorn -c gunicorn.conf.py bench.baseline:app
"""

from __future__ import annotations

import os

from flask import Flask, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import String, update
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


class Row(db.Model):
    __tablename__ = "bench_rows"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254))
    confirmed: Mapped[bool] = mapped_column(default=False)


app = Flask(__name__)
app.config["SQLALCHEMY_DATABASE_URI"] = os.environ["DATABASE_URL"]
db.init_app(app)


@app.post("/rows")
def insert_row():
    row = Row(email=request.form.get("email", ""))
    db.session.add(row)
    db.session.flush()  # the id the INSERT returned; read after the commit, it costs a SELECT
    row_id = row.id
    db.session.commit()
    return str(row_id), 201


@app.post("/rows/<int:row_id>/confirm")
def confirm_row(row_id: int):
    changed = db.session.execute(
        update(Row).where(Row.id == row_id, Row.confirmed.is_(False)).values(confirmed=True)
    ).rowcount
    db.session.commit()
    return ("", 204) if changed else ("", 404)


@app.get("/page")
def page():
    row = db.session.get(Row, 1)
    return f"<!doctype html><title>bare</title><p>{row.email if row else ''}</p>"


def prepare() -> None:
    """Create the table afresh, with one row for the GET to read."""
    with app.app_context():
        Row.__table__.drop(db.engine, checkfirst=True)
        Row.__table__.create(db.engine)
        db.session.add(Row(email="first@example.org"))  # id 1 on a new table
        db.session.commit()


if __name__ == "__main__":
    prepare()
