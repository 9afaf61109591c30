"""WSGI entry point: `gunicorn wsgi:app` or `flask --app wsgi run`."""

from service import create_app
from service.serving import settle_process

app = create_app()
settle_process()  # each gunicorn worker imports this module once
