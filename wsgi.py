"""Entry point for gunicorn, ``flask --app wsgi`` and the RQ worker."""

from core.app import create_app

app = create_app()
