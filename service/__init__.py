"""The second-opinion referral service: a Flask application."""

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask

from service import errors
from service.config import DEFAULTS, ENV_PREFIX


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Build the application; with no argument, configure from SECOND_OPINION_* variables."""
    app = Flask(__name__, instance_relative_config=True)
    app.config.from_mapping(DEFAULTS)
    app.config.from_prefixed_env(ENV_PREFIX)
    if test_config is not None:
        app.config.update(test_config)
    Path(app.instance_path).mkdir(parents=True, exist_ok=True)
    logging.getLogger("service").setLevel(app.config["LOG_LEVEL"])

    from service import auth
    from service.api import cds_hooks, health, launch, referrals, token
    from service.ehr import connection
    from service.store import repository
    from service import queue, render, web, writeback

    connection.init_app(app)
    repository.init_app(app)
    auth.init_app(app)
    errors.register_error_handlers(app)
    app.register_blueprint(health.bp)
    app.register_blueprint(referrals.bp)
    app.register_blueprint(launch.bp)
    app.register_blueprint(token.bp)  # access tokens for server-to-server API callers (API_AUTH=token)
    cds_hooks.init_app(app)  # CDS Hooks services and GET /openapi.json (issue 8)
    writeback.init_app(app)
    queue.init_app(app)  # the durable write-back queue (issue 6); consumers are started by serve, demo, worker
    web.init_app(app)  # the clinician and consultant pages (issue 7)
    render.init_app(app)  # the HTML/PDF renditions' stylesheet at /render/static/ (issue 7)
    return app
