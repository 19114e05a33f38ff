"""The application factory."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from core.config import load_config
from core.headers import add_default_headers
from core.routing import IdConverter

ROOT = Path(__file__).resolve().parent.parent


def create_app(overrides: dict[str, Any] | None = None) -> Flask:
    """Build the Groundswell app; ``overrides`` replace settings read from the environment."""
    app = Flask(
        __name__,
        template_folder=str(ROOT / "templates"),
        static_folder=str(ROOT / "static"),
        instance_path=os.environ.get("INSTANCE_PATH", str(ROOT / "instance")),
    )
    app.config.from_mapping(load_config(app.instance_path))
    if overrides:
        app.config.update(overrides)
    app.url_map.converters["id"] = IdConverter
    register_extensions(app)
    register_blueprints(app)
    register_errorhandlers(app)
    register_template_helpers(app)
    register_commands(app)
    app.after_request(add_default_headers)
    trust_proxies(app)
    return app


def trust_proxies(app: Flask) -> None:
    """Behind PROXY_HOPS reverse proxies, take the client's address, scheme and host from them.

    Rate limits count per client address; without this every client would share the
    proxy's.
    """
    hops = app.config["PROXY_HOPS"]
    if hops > 0:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)


def register_extensions(app: Flask) -> None:
    from core.extensions import db, login_manager, migrate, redis_store

    db.init_app(app)
    migrate.init_app(app, db, directory=str(ROOT / "migrations"))
    login_manager.init_app(app)
    redis_store.init_app(app)


def register_blueprints(app: Flask) -> None:
    from campaigns import bp as campaigns_bp
    from chapters import bp as chapters_bp
    from core.views import bp as core_bp
    from core.views import dev_bp
    from members import bp as members_bp
    from notifications import bp as notifications_bp
    from petitions import bp as petitions_bp

    for blueprint in (
        core_bp,
        members_bp,
        petitions_bp,
        campaigns_bp,
        chapters_bp,
        notifications_bp,
        dev_bp,
    ):
        app.register_blueprint(blueprint)


def register_errorhandlers(app: Flask) -> None:
    from core.errors import register

    register(app)


def register_template_helpers(app: Flask) -> None:
    from core.templating import register

    register(app)


def register_commands(app: Flask) -> None:
    from core.cli import register

    register(app)
