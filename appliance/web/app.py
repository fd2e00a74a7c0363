"""Flask application factory: blueprints by area, security in one place.

Areas: ``auth`` (login, logout, own password), ``studies`` (list and study
page), ``viewer`` (frames, thumbnails, reports), ``downloads``, ``admin``,
``identity`` (patients to review, merge, split, correct) and ``worklist``
(the procedures the modality finds in its worklist). Every route
but the login page, ``/healthz`` and static files needs a login and a
permission (see :mod:`appliance.web.access`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from flask import Flask, jsonify
from flask_wtf.csrf import CSRFProtect
from werkzeug.wrappers import Response

from appliance.restoring import RestoreWizard
from appliance.web import (
    admin,
    auth,
    downloads,
    errors,
    identity,
    identity_decide,
    studies,
    viewer,
    worklist,
)
from appliance.web.access import Permission, guard, may
from appliance.web.backup_banner import install_banner
from appliance.web.backup_words import register_backup_words
from appliance.web.formatting import register_filters
from appliance.web.forms import LogoutForm
from appliance.web.identity_decide import ActionsSource
from appliance.web.proxies import TrustedProxies
from appliance.web.render.cache import RenderCache
from appliance.web.render.renderer import Renderer
from appliance.web.runtime import Runtime, WebOptions, install
from appliance.web.secret import load_or_create_key
from appliance.web.switching import switching_gate
from backup.job import BackupJob

logger = logging.getLogger(__name__)

HealthProbe = Callable[[], dict[str, Any]]

# Nothing is ever loaded from another site; images may come from blob: URLs.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; "
    "script-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)


def create_app(
    health: HealthProbe,
    options: WebOptions,
    test_config: dict[str, Any] | None = None,
    identity_actions: ActionsSource | None = None,
    backups: BackupJob | None = None,
    restore: RestoreWizard | None = None,
) -> Flask:
    """Build the web application.

    Parameters
    ----------
    health : callable
        Returns the appliance's health as a JSON-able dict, without patient
        data.
    options : WebOptions
        Databases, storage, cache and security settings.
    test_config : dict, optional
        Flask settings that tests override.
    identity_actions : IdentityActions or callable returning one, optional
        Applies identity decisions to the live index through its writer;
        without it the identity pages show but refuse decisions.
    backups : BackupJob, optional
        The appliance's backups, for the backup page and the banner.
    restore : RestoreWizard, optional
        Verifies and restores snapshots, for the restore wizard's pages.

    Returns
    -------
    flask.Flask
    """
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=load_or_create_key(options.secret_file),
        SESSION_COOKIE_NAME="appliance_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=options.secure_cookies,
        PERMANENT_SESSION_LIFETIME=timedelta(minutes=options.idle_minutes),
        WTF_CSRF_TIME_LIMIT=None,
        MAX_CONTENT_LENGTH=64 * 1024,
    )
    app.config.update(test_config or {})

    renderer = Renderer(options.storage, RenderCache(options.cache_dir))
    install(app, Runtime(options, renderer, backups, restore))
    # First of all hooks: while a restore switches folders, nothing opens app.db.
    app.before_request(switching_gate)
    CSRFProtect(app)
    auth.init_login(app)
    register_filters(app)
    register_backup_words(app)
    install_banner(app, backups, options.clock)
    errors.register_error_handlers(app)
    identity_decide.install_identity(app, identity_actions)
    for blueprint in (
        auth.bp,
        studies.bp,
        viewer.bp,
        downloads.bp,
        admin.bp,
        identity.bp,
        worklist.bp,
    ):
        app.register_blueprint(blueprint)

    app.before_request(guard)
    app.after_request(_security_headers)
    app.context_processor(_template_globals)
    if options.trusted_proxies:
        app.wsgi_app = TrustedProxies(  # type: ignore[method-assign]
            app.wsgi_app, options.trusted_proxies
        )

    @app.get("/healthz")
    def healthz() -> Any:
        """Report liveness, without login and without patient data."""
        status = health()
        code = 200 if status.get("ok") else 503
        return jsonify(status), code

    return app


def _security_headers(response: Response) -> Response:
    headers = response.headers
    headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Referrer-Policy", "same-origin")
    # Pages may show patient data: never keep them in a shared cache.
    if response.mimetype == "text/html":
        headers["Cache-Control"] = "no-store"
    return response


def _template_globals() -> dict[str, Any]:
    return {"may": may, "Permission": Permission, "logout_form": LogoutForm}
