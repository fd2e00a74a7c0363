"""Flask application factory.

For now the web offers the health endpoint only; the viewer, login and admin
pages are the next piece of work (they need users in ``app.db`` first).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from flask import Flask, jsonify

logger = logging.getLogger(__name__)

HealthProbe = Callable[[], dict[str, Any]]


def create_app(health: HealthProbe, test_config: dict[str, Any] | None = None) -> Flask:
    """Build the web application.

    Parameters
    ----------
    health : callable
        Returns the appliance's health as a JSON-able dict, without patient
        data.
    test_config : dict, optional
        Flask settings that tests override.

    Returns
    -------
    flask.Flask
    """
    app = Flask(__name__)
    app.config.update(test_config or {})

    @app.get("/healthz")
    def healthz() -> Any:
        """Report liveness, without login and without patient data."""
        status = health()
        code = 200 if status.get("ok") else 503
        return jsonify(status), code

    return app
